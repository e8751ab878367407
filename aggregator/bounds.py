"""Bounds on one party's influence: what a device that lies about its sample count, or
sends a huge delta, can do to the global model (docs/security.md, "One liar").

FedAvg weighs each update by the sample count its sender claims and adds its delta as
it is, so one device claiming 10⁶ samples with a big delta controls the model. Each
round therefore bounds, from what the round itself saw:

* **the credible count**: a claim above ``--max-num-samples`` counts as that bound (an
  honest big site is clipped, not rejected: its training is not wasted);
* **the weight**: an update weighs at most ``weight_factor`` × the (lower) median of the
  (credible) sample counts the round's accepted updates claim;
* **the delta**: an update's delta is clipped (scaled down, not rejected) to
  ``norm_factor`` × the (lower) median L2 norm of the round's accepted deltas.

An honest round, with every count and norm within those factors of the median, is plain
FedAvg, exactly. The lower median keeps one liar among two from moving the bound. Both
bounds come from the stored updates alone, so a restarted round computes the same ones.
Pure functions; the round applies them when it aggregates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_client.errors import ConfigError


@dataclass(frozen=True)
class InfluenceBounds:
    """The factors of the median (0 switches a bound off)."""

    weight_factor: float = 3.0  # a site may weigh up to 3× the median site of its round
    norm_factor: float = 3.0  # a delta may be up to 3× longer than the round's median delta

    def __post_init__(self) -> None:
        for name in ("weight_factor", "norm_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value == 0 or value >= 1)):
                raise ConfigError(f"{name} must be 0 (off) or >= 1, got {value}")


@dataclass(frozen=True)
class Plan:
    """Each counted update's weight and delta scale, and what the bounds changed."""

    weights: Mapping[str, int]
    scales: Mapping[str, float]
    weight_cap: float | None = None
    clip_norm: float | None = None
    capped: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # claimed, weight
    clipped: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # norm, scale
    max_claim: int | None = None  # --max-num-samples: a larger claim counts as this

    def over_max(self) -> dict[str, int]:
        """The clients whose claim exceeded :attr:`max_claim`, with what they claimed."""
        limit = self.max_claim
        return {c: a for c, (a, _) in sorted(self.capped.items())
                if limit is not None and a > limit}

    def report(self) -> dict[str, Any]:
        """What a history line records of the bounds (a ``capped`` entry over
        ``--max-num-samples`` also names that bound)."""
        over = self.over_max()
        return {
            "weight_cap": self.weight_cap, "clip_norm": _round(self.clip_norm),
            "capped": {c: {"claimed": a, "weight": w,
                           **({"max_num_samples": self.max_claim} if c in over else {})}
                       for c, (a, w) in sorted(self.capped.items())},
            "clipped": {c: {"norm": _round(n), "scale": _round(s)}
                        for c, (n, s) in sorted(self.clipped.items())},
        }


def plan(bounds: InfluenceBounds, claimed: Mapping[str, int],
         norms: Mapping[str, float], max_claim: int | None = None) -> Plan:
    """Weights and scales for the counted updates (``claimed``: each one's ``num_samples``;
    ``norms``: each one's delta L2 norm; ``max_claim``: the largest credible count, a
    larger claim weighs as that before the median cap)."""
    credible = {c: n if max_claim is None else min(n, max_claim) for c, n in claimed.items()}
    cap = bounds.weight_factor * statistics.median_low(credible.values()) if (
        bounds.weight_factor and credible) else None
    weights, capped = {}, {}
    for client, count in credible.items():
        weights[client] = max(1, int(count if cap is None else min(cap, count)))
        if weights[client] < claimed[client]:
            capped[client] = (claimed[client], weights[client])
    clip = bounds.norm_factor * statistics.median_low(norms.values()) if (
        bounds.norm_factor and norms) else None
    scales, clipped = {}, {}
    for client, norm in norms.items():
        scales[client] = 1.0 if clip is None or norm <= clip or norm == 0 else clip / norm
        if scales[client] < 1.0:
            clipped[client] = (norm, scales[client])
    return Plan(weights, scales, cap, clip, capped, clipped, max_claim)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
