"""Normalisation statistics computed on the device: means and deviations, never rows."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import DataError

Features = npt.NDArray[np.float32]
STD_FLOOR = 1e-6
_STATS_FORMAT = "fedge-norm-stats/1"


@dataclass(frozen=True)
class NormStats:
    """Per-feature (or per-channel) normalisation statistics; never the rows themselves.

    Attributes:
        mean: mean of each feature or channel.
        std: standard deviation of each, floored so that no division blows up.
        count: number of samples the statistics were computed on.
        features: names of the features (or channels) in order, when known (a file written
            before they were kept has none); a reader checks its data's names against them.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int
    features: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Serialise to a small JSON object."""
        return json.dumps({"format": _STATS_FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "normalisation stats") -> NormStats:
        """Parse :meth:`to_json` output strictly.

        Raises:
            DataError: not JSON, wrong format tag, inconsistent or non-finite values, or
                feature names that are not strings, one per feature.
        """
        try:
            obj = json.loads(text)
        except ValueError as error:
            raise DataError(f"{source}: not {_STATS_FORMAT} JSON ({error})") from None
        if not isinstance(obj, dict) or obj.get("format") != _STATS_FORMAT:
            raise DataError(f"{source}: not {_STATS_FORMAT} JSON (no \"format\": "
                            f"\"{_STATS_FORMAT}\" object)")
        try:
            mean = tuple(float(v) for v in obj["mean"])
            std = tuple(float(v) for v in obj["std"])
            count = obj["count"]
            features = tuple(obj.get("features", []))
        except (ValueError, TypeError, KeyError) as error:
            raise DataError(f"{source}: not {_STATS_FORMAT} JSON ({error!r})") from None
        if (len(mean) != len(std) or not mean or type(count) is not int or count < 0
                or not all(map(math.isfinite, mean + std)) or min(std) <= 0):
            raise DataError(f"{source}: inconsistent statistics")
        if features and (len(features) != len(mean)
                         or not all(isinstance(f, str) for f in features)):
            raise DataError(f"{source}: \"features\" must name each of the {len(mean)} "
                            "features once, as strings")
        return cls(mean, std, count, features)


def compute_norm_stats(x: npt.NDArray[np.floating[Any]], *, std_floor: float = STD_FLOOR,
                       features: Sequence[str] = ()) -> NormStats:
    """Compute mean and std per feature of (n, features) or per channel of (n, channels, time).

    Args:
        x: the local samples.
        std_floor: smallest standard deviation kept (constant features would divide by 0).
        features: the names along axis 1 of ``x``, kept with the statistics (or none).

    Raises:
        DataError: ``x`` is empty or not 2-D/3-D, or ``features`` does not name axis 1.
    """
    if x.ndim not in (2, 3) or len(x) == 0:
        raise DataError(f"normalisation needs non-empty 2-D or 3-D samples, got {x.shape}")
    if features and len(features) != x.shape[1]:
        raise DataError(f"{len(features)} feature names for {x.shape[1]} features")
    axes = (0,) if x.ndim == 2 else (0, 2)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = np.maximum(x.std(axis=axes, dtype=np.float64), std_floor)
    return NormStats(tuple(map(float, mean)), tuple(map(float, std)), len(x), tuple(features))


def normalise(x: npt.NDArray[np.floating[Any]], stats: NormStats) -> Features:
    """Return ``(x - mean) / std`` as float32, broadcasting over samples (and time).

    Raises:
        DataError: ``x`` does not have as many features or channels as ``stats``.
    """
    if x.ndim not in (2, 3) or x.shape[1] != len(stats.mean):
        raise DataError(f"samples {x.shape} do not fit statistics of {len(stats.mean)} features")
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1)
    mean = np.asarray(stats.mean).reshape(shape)
    std = np.asarray(stats.std).reshape(shape)
    scaled: Features = ((x - mean) / std).astype(np.float32)
    return scaled
