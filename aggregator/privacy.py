"""Client-level DP-FedAvg maths (McMahan et al., 2018, "Learning differentially private
recurrent language models"): pure functions on numpy arrays, no I/O, randomness by seed.

With differential privacy on (``--dp-clip C``), a round's aggregate is:

1. every update's delta clipped to L2 norm ≤ C (scaled down, never rejected):
   :func:`dp_plan`;
2. every update weighs **1** (uniform): a device's whole contribution to the sum is then
   at most C, whatever number of samples it claims. Sample-count weights would let one
   device's share grow with its (self-reported) ``num_samples``, so the sensitivity
   could not be bounded; the influence bounds of :mod:`aggregator.bounds` (median-based
   caps and clips) are **not** used either, since a median couples every device's
   contribution to the others' and breaks the sensitivity argument;
3. the sum gets Gaussian noise N(0, (Z·C)²) per coordinate and is divided by the
   **fixed** denominator ``expected_clients`` = q × (clients online when the round was
   announced), not by the number that answered: :func:`add_noise`. So the noise on the
   mean is N(0, (Z·C / expected_clients)²), and adding or removing one device changes
   the sum by at most C (the sensitivity the accountant assumes).

Effect versus sample-count FedAvg: a site with 10× the data moves the model as much as
any other site; with non-IID data of very unequal sizes the model is an average over
people, not over records, which is what client-level (one device = one person) privacy
protects. The fixed denominator makes the mean shrink toward 0 when fewer devices answer
than expected (a smaller step, unbiased over the sampling).

**Adaptive clipping** (Andrew et al., 2021, "Differentially private learning with
adaptive clipping"; ``--dp-adaptive-clip``): C follows the γ-quantile of the update norms.
Each round also releases the noised share of updates that needed no clipping,
b̃ = (Σ (1[‖Δᵢ‖ ≤ C] − ½) + N(0, σ_b²)) / expected_clients + ½, and the next round clips
to C·exp(−η_C (b̃ − γ)) (:func:`next_clip`). The two releases together are one Gaussian
mechanism of multiplier Z when the sum's noise multiplier is
z_Δ = (Z⁻² − (2σ_b)⁻²)^(−½) (:func:`sum_noise_multiplier`; the centred bits have
sensitivity ½): the accountant keeps charging Z, the sum gets a little more noise.

The noise is drawn from ``numpy``'s PCG64 seeded by the ledger's per-round seed, so a
round aggregated again after a crash yields the same bytes (and costs the budget once).
PCG64 is not a cryptographic generator and floating-point noise has known weaknesses
(Mironov, 2012); docs/privacy.md says what this means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.bounds import Plan
from edge_client.errors import ConfigError

ACCOUNTANTS = ("rdp", "pld")
Float64s = dict[str, npt.NDArray[np.float64]]


@dataclass(frozen=True)
class DpSettings:
    """Client-level DP of a run (``--dp-*`` flags).

    Attributes:
        clip: C, the L2 norm every delta is clipped to.
        sampling_rate: q, the probability each online client is picked in a round
            (Poisson sampling, :func:`aggregator.schedule.poisson_sample`).
        delta: δ of the (ε, δ) guarantee reported.
        accountant: ``rdp`` or ``pld`` (:mod:`aggregator.accounting`).
        noise_multiplier: Z (noise standard deviation / C); None: computed from
            ``target_epsilon`` for the planned rounds.
        target_epsilon: the budget: the run finishes (``privacy budget``) before a round
            that would take ε above it; None: no budget, ε is only reported.
        adaptive: adaptive clipping; ``clip`` is then the first round's C.
        clip_quantile: γ, the share of updates adaptive clipping aims to leave unclipped.
        clip_lr: η_C, the geometric step of C per round.
        count_noise: σ_b, the noise std on the count of unclipped updates (None: Z, which
            makes z_Δ = Z / √0.75 ≈ 1.155·Z).
    """

    clip: float
    sampling_rate: float
    delta: float
    accountant: str = "rdp"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    adaptive: bool = False
    clip_quantile: float = 0.5  # the median norm, as Andrew et al. recommend
    clip_lr: float = 0.2  # Andrew et al.'s η_C
    count_noise: float | None = None

    def __post_init__(self) -> None:
        _positive("--dp-clip", self.clip)
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ConfigError(f"--dp-sampling-rate must be in (0, 1], got {self.sampling_rate}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"--dp-delta must be in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"--dp-accountant {self.accountant!r} is not one of "
                              f"{', '.join(ACCOUNTANTS)}")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ConfigError("differential privacy (--dp-clip) needs --dp-noise-multiplier Z "
                              "or --dp-epsilon E (then Z is computed for --rounds)")
        if self.noise_multiplier is not None:
            _positive("--dp-noise-multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            _positive("--dp-epsilon", self.target_epsilon)
        if not 0.0 < self.clip_quantile < 1.0:
            raise ConfigError(f"--dp-clip-quantile must be in (0, 1), got {self.clip_quantile}")
        _positive("--dp-clip-lr", self.clip_lr)
        if self.count_noise is not None:
            _positive("--dp-clip-count-noise", self.count_noise)

    def sum_noise(self, noise_multiplier: float) -> float:
        """The sum's noise multiplier z_Δ for an accounted Z (Z itself without adaptive
        clipping)."""
        if not self.adaptive:
            return noise_multiplier
        return sum_noise_multiplier(noise_multiplier, self.count_noise or noise_multiplier)


@dataclass(frozen=True)
class Noise:
    """The noise of one round: what the ledger recorded before it was drawn."""

    seed: int  # 128 random bits, kept in the ledger: the same round noised again is identical
    noise_multiplier: float  # of the sum: z_Δ with adaptive clipping, else Z
    clip: float
    expected_clients: float


def clip_scale(norm: float, clip: float) -> float:
    """The factor that brings a delta of L2 ``norm`` within ``clip`` (1 when it is)."""
    return 1.0 if norm <= clip or norm == 0 else clip / norm


def dp_plan(clip: float, norms: Mapping[str, float]) -> Plan:
    """Weight 1 and scale ``clip_scale(norm, clip)`` for every counted update."""
    scales = {c: clip_scale(n, clip) for c, n in norms.items()}
    clipped = {c: (n, s) for c, n in norms.items() if (s := scales[c]) < 1.0}
    return Plan({c: 1 for c in norms}, scales, None, clip, {}, clipped)


def expected_clients(sampling_rate: float, population: int) -> float:
    """The fixed denominator: q × the clients the round was sampled from (at least 1)."""
    return max(1.0, sampling_rate * population)


def add_noise(mean: Mapping[str, npt.NDArray[np.float64]], count: int,
              noise: Noise) -> Float64s:
    """(sum of the ``count`` clipped deltas + N(0, (Z·C)²)) / expected_clients, given
    their uniform ``mean``; tensors are noised in name order (reproducible)."""
    rng = np.random.Generator(np.random.PCG64(noise.seed))
    sigma = noise.noise_multiplier * noise.clip
    out: Float64s = {}
    for name in sorted(mean):
        total = np.asarray(mean[name], np.float64) * count
        out[name] = (total + rng.normal(0.0, sigma, total.shape)) / noise.expected_clients
    return out


def sum_noise_multiplier(z: float, count_noise: float) -> float:
    """z_Δ = (Z⁻² − (2σ_b)⁻²)^(−½): the sum's multiplier that, with the count's σ_b, makes
    one Gaussian mechanism of multiplier Z (Andrew et al., 2021, Theorem 1).

    Raises:
        ConfigError: 2σ_b ≤ Z (the count alone would cost more than the budget of both).
    """
    if 2 * count_noise <= z:
        raise ConfigError(f"--dp-clip-count-noise {count_noise} must exceed half the noise "
                          f"multiplier ({z / 2:.4g}) for adaptive clipping")
    return float((z ** -2 - (2 * count_noise) ** -2) ** -0.5)


def next_clip(clip: float, unclipped: int, count: int, settings: DpSettings,
              noise_multiplier: float, expected: float, seed: int) -> tuple[float, float]:
    """(noised share of the ``count`` updates that were within ``clip``, next round's C);
    the count's noise comes from its own stream of the round's seed."""
    sigma_b = settings.count_noise or noise_multiplier
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    share = (unclipped - 0.5 * count + rng.normal(0.0, sigma_b)) / expected + 0.5
    return float(share), float(clip * math.exp(-settings.clip_lr * (share -
                                                                     settings.clip_quantile)))


def report(settings: DpSettings, noise_multiplier: float, epsilon: float,
           rounds_spent: int) -> dict[str, Any]:
    """The ``dp`` field of a history line (every parameter an independent accountant needs)."""
    return {"epsilon": epsilon, "delta": settings.delta, "noise_multiplier": noise_multiplier,
            "clip": settings.clip, "sampling_rate": settings.sampling_rate,
            "accountant": settings.accountant, "rounds_spent": rounds_spent,
            "target_epsilon": settings.target_epsilon}


def _positive(flag: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag} must be a positive number, got {value}")
