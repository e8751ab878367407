"""Checks on the content of an update: who it is for, its sample count, its tensors.

Everything from the network is untrusted. :func:`check_identity` (federation, model
hash) and :func:`check_content` (sample count, then the tensors: names, dtypes, shapes,
NaN/Inf, L2 norm) look at one decoded, dequantized :class:`ReceivedUpdate` and return a
:class:`~aggregator.reasons.Rejection` naming the field or tensor, or None. Admission
to the round (its id, base version, selection, duplicates) is the round's own check
(:func:`aggregator.schedule.admission`); :class:`aggregator.round.Round` runs them all,
cheapest first, once per update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.reasons import Reason, Rejection
from edge_client.errors import ConfigError
from edge_client.protocol import TensorSpec
from edge_client.score_counts import ConfusionCounts, ThresholdCounts

Counts = ThresholdCounts | ConfusionCounts


@dataclass(frozen=True)
class ReceivedUpdate:
    """One client's update as the service hands it to the core (decoded, dequantized)."""

    federation: str
    round_id: int
    client_id: str
    base_version: int
    model_sha256: str
    nonce: str
    num_samples: int
    delta: Mapping[str, npt.NDArray[Any]]
    metrics: Mapping[str, float]
    bytes_received: int
    payload: bytes = b""  # the wire bytes, as stored in the state dir when accepted
    run_id: str = ""
    evaluation: Counts | None = None  # the base model scored on the site's test data


@dataclass(frozen=True)
class UpdateLimits:
    """Bounds an update must respect.

    Attributes:
        max_norm: largest accepted L2 norm of the whole delta (all tensors together).
        max_num_samples: largest credible sample count; a larger claim is accepted but
            weighs as this count (:func:`aggregator.bounds.plan`), so an honest big site's
            training is not wasted and a liar gains nothing by claiming more.
    """

    max_norm: float
    max_num_samples: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ConfigError(f"max_norm must be a positive finite number, got {self.max_norm}")
        if self.max_num_samples < 1:
            raise ConfigError(f"max_num_samples must be >= 1, got {self.max_num_samples}")


def check_identity(update: ReceivedUpdate, federation: str, model_sha256: str,
                   run_id: str = "") -> Rejection | None:
    """Whether ``update`` is for this federation, run and model file; None when it is."""
    if update.federation != federation:
        return Rejection(
            Reason.FEDERATION,
            f"federation {update.federation!r} is not this federation {federation!r}",
        )
    if update.run_id != run_id:
        return Rejection(Reason.RUN, f"update belongs to run {update.run_id!r}, this is run "
                         f"{run_id!r} (a round of an earlier run?)")
    if update.model_sha256 != model_sha256:
        return Rejection(
            Reason.MODEL_HASH,
            f"model_sha256 {update.model_sha256[:16]!r}... does not match the round's model "
            f"{model_sha256[:16]!r}...",
        )
    return None


def check_content(update: ReceivedUpdate, spec: tuple[TensorSpec, ...],
                  limits: UpdateLimits, norm: float | None = None) -> Rejection | None:
    """The sample count, then every tensor (names, dtypes, shapes, NaN/Inf, L2 norm);
    ``norm``: the delta's :func:`delta_norm` when the caller has it already."""
    return _num_samples(update.num_samples, limits) or _tensors(update.delta, spec, limits,
                                                                norm)


def _num_samples(num_samples: int, limits: UpdateLimits) -> Rejection | None:
    if num_samples > 0:  # above limits.max_num_samples it is clipped when weighed
        return None
    return Rejection(Reason.NUM_SAMPLES, f"num_samples {num_samples} is not positive")


def _tensors(
    delta: Mapping[str, npt.NDArray[Any]], spec: tuple[TensorSpec, ...], limits: UpdateLimits,
    norm: float | None,
) -> Rejection | None:
    expected = {t.name for t in spec}
    missing, unexpected = sorted(expected - delta.keys()), sorted(delta.keys() - expected)
    if missing or unexpected:
        return Rejection(Reason.NAME, f"tensors missing {missing}, unexpected {unexpected}")
    for t in spec:
        found = _tensor(t, delta[t.name])
        if found is not None:
            return found
    norm = delta_norm(delta) if norm is None else norm
    if norm > limits.max_norm:
        return Rejection(Reason.NORM, f"L2 norm of the delta {norm:.4g} exceeds {limits.max_norm}")
    return None


def _tensor(spec: TensorSpec, arr: npt.NDArray[Any]) -> Rejection | None:
    if str(arr.dtype) != spec.dtype:
        return Rejection(Reason.DTYPE, f"tensor {spec.name!r} has dtype {arr.dtype}, "
                       f"expected {spec.dtype}")
    if tuple(arr.shape) != spec.shape:
        return Rejection(Reason.SHAPE, f"tensor {spec.name!r} has shape {tuple(arr.shape)}, "
                       f"expected {spec.shape}")
    if not np.issubdtype(arr.dtype, np.inexact):
        return None
    nans = int(np.count_nonzero(np.isnan(arr)))
    if nans:
        return Rejection(Reason.NAN, f"tensor {spec.name!r} holds {nans} NaN value(s)")
    infs = int(np.count_nonzero(np.isinf(arr)))
    if infs:
        return Rejection(Reason.INF, f"tensor {spec.name!r} holds {infs} infinite value(s)")
    return None


def delta_norm(delta: Mapping[str, npt.NDArray[Any]]) -> float:
    """L2 norm of all tensors together, in float64 so large float32 values cannot overflow."""
    total = 0.0
    for arr in delta.values():
        flat = arr.ravel().astype(np.float64)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)
