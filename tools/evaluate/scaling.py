"""Which feature scaling a model's inputs get, and where it comes from: no silent mismatch.

A ``fedge-client`` standardises each feature with statistics computed on its own data and
keeps them in its state dir (``normalisation.json``, see :mod:`edge_client.state`). A model
trained that way must see inputs scaled the same way. ``fedge evaluate`` and ``fedge
predict`` apply a device's statistics only when told (``--client-state DIR``), else none,
and always say which; :func:`unscaled_warning` says when raw inputs look like trouble.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, DataError
from edge_client.normalise import NormStats, compute_norm_stats, normalise
from edge_client.state import NORMALISATION_FILE

Array = npt.NDArray[Any]
# raw features further than this from standardised (|mean|, or std) are worth a warning
_FAR_FROM_STANDARD = 3.0


@dataclass(frozen=True)
class Scaling:
    """How samples are scaled before the model sees them.

    Attributes:
        stats: the statistics applied, or None for raw values.
        kind: ``"none"``, ``"client-state"`` (a device's kept statistics) or ``"fitted"``
            (computed on data at hand, as the demo does for its baselines).
        source: the state dir or data the statistics come from.
    """

    stats: NormStats | None
    kind: str = "none"
    source: str | None = None

    @classmethod
    def fit(cls, x: Array, enabled: bool, source: str = "the data") -> Scaling:
        """Statistics of ``x`` when scaling is enabled and ``x`` is 2-D or 3-D."""
        if not enabled or x.ndim not in (2, 3):
            return cls(None)
        return cls(compute_norm_stats(x), "fitted", source)

    @classmethod
    def of_client_state(cls, state_dir: Path, flag: str = "--client-state") -> Scaling:
        """The statistics a device standardised with, from its state dir.

        Raises:
            ConfigError: no such dir, or it keeps no statistics (the device trains on raw
                values), or the file is not valid statistics.
        """
        path = Path(state_dir) / NORMALISATION_FILE
        if not Path(state_dir).is_dir():
            raise ConfigError(f"{flag} {state_dir}: no such directory (a fedge-client "
                              "--state-dir)")
        try:
            text = path.read_text()
        except OSError:
            raise ConfigError(
                f"{flag} {state_dir}: no {NORMALISATION_FILE}: that device trains on raw "
                "values (--no-normalise, or image data) or has not loaded its data yet; "
                f"leave out {flag} to use raw values") from None
        try:
            stats = NormStats.from_json(text, source=str(path))
        except DataError as e:
            raise ConfigError(f"{flag}: {e}") from None
        return cls(stats, "client-state", str(state_dir))

    def __call__(self, x: Array, names: tuple[str, ...] | None = None) -> Array:
        """``x`` scaled, as float32; ``names`` (axis 1 of ``x``) are checked against the
        statistics' feature names when both are known.

        Raises:
            DataError: the features differ in number, or by name or order, from those the
                statistics were computed on.
        """
        if self.stats is None:
            return x.astype(np.float32)
        kept = self.stats.features
        if names is not None and kept and tuple(names) != kept:
            raise DataError(f"the data's features ({', '.join(names)}) are not those the "
                            f"statistics of {self.source} were computed on "
                            f"({', '.join(kept)}); give the same columns in the same order "
                            "(--features)")
        return normalise(x, self.stats)

    def describe(self) -> dict[str, Any]:
        """The ``scaling`` entry of a JSON report."""
        if self.stats is None:
            return {"kind": "none"}
        return {"kind": self.kind, "source": self.source, "features": len(self.stats.mean),
                "count": self.stats.count, "mean": list(self.stats.mean),
                "std": list(self.stats.std)}

    def sentence(self) -> str:
        """One line for a report: which scaling was applied."""
        if self.stats is None:
            return ("none: the model sees raw feature values (pass --client-state DIR to "
                    "apply the standardisation a device trained with)")
        size = f"{len(self.stats.mean)} features, computed on {self.stats.count} samples"
        if self.kind == "client-state":
            return f"standardised as the device of state dir {self.source} trained ({size})"
        return f"standardised with statistics fitted on {self.source} ({size})"


def unscaled_warning(x: Array, names: tuple[str, ...], scaling: Scaling) -> str | None:
    """A warning when no scaling is applied but the features are far from standardised, as
    they are when the devices standardised theirs (fedge-client's default); else None."""
    if scaling.stats is not None or x.ndim not in (2, 3) or len(x) < 2:
        return None
    stats = compute_norm_stats(x)
    mean, std = np.abs(stats.mean), np.asarray(stats.std)
    far = np.flatnonzero((mean > _FAR_FROM_STANDARD) | (std > _FAR_FROM_STANDARD))
    if not far.size:
        return None
    i = int(far[np.argmax(np.maximum(mean, std)[far])])
    return (f"no scaling is applied, but feature {names[i]!r} has mean {stats.mean[i]:.4g} "
            f"and std {stats.std[i]:.4g} ({far.size} of {len(names)} features are far from "
            "standardised): if the devices standardised their features (fedge-client does "
            "unless --no-normalise), pass --client-state DIR of one of them")
