"""Aggregation maths: streaming weighted FedAvg, robust means, server optimizers.

The service configures one :class:`Strategy` by name and, for each round:

1. ``acc = strategy.accumulator()``; then ``acc.add(delta, num_samples)`` for every
   accepted update, as it arrives;
2. ``weights, state = strategy.apply(weights, acc.result(), state)`` when the round closes.

Aggregators (what ``acc.result()`` computes):

* :class:`WeightedMean` (``fedavg``, ``fedavgm``, ``fedadam``): a float64 running sum,
  memory O(P) whatever the number of clients. Each update weighs
  ``min(num_samples, sample_cap)`` (McMahan et al., 2017), or 1 with
  ``weighting="uniform"`` (the plain average of the seed article).
* :class:`CoordinateWise` (``median``, ``trimmed-mean``): coordinate-wise median, or mean
  after cutting ``int(trim_fraction·N)`` values at each end (Yin et al., 2018; as scipy's
  ``trim_mean``). They must hold every update, so memory is O(N·P), and they ignore
  sample counts.

Neither is checkpointed: after a restart the round re-folds its stored updates
(:meth:`aggregator.round.Round.restore`). Re-folding in the same order gives
bit-identical sums; in another order, equal to float64 rounding.

Server optimizers (:meth:`Strategy.apply`), with Δ the aggregated delta and η ``server_lr``:

* ``fedavg``: x ← x + η·Δ.
* ``fedavgm`` (Hsu et al., 2019): u ← β·u + Δ; x ← x + η·u.
* ``fedadam`` (Reddi et al., 2021, Algorithm 2): m ← β₁·m + (1−β₁)·Δ;
  v ← β₂·v + (1−β₂)·Δ²; x ← x + η·m / (√v + τ); m starts at 0 and v at τ², no bias
  correction, as in the paper.
* ``median`` and ``trimmed-mean`` step like ``fedavg``.

Optimizer state is a frozen :class:`ServerState` the service persists between rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, ValidationError

Arrays = Mapping[str, npt.NDArray[Any]]
Float64s = dict[str, npt.NDArray[np.float64]]

STRATEGIES = ("fedavg", "fedavgm", "fedadam", "median", "trimmed-mean")
_DEFAULT_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.1, "median": 1.0, "trimmed-mean": 1.0}
_STATE_PARTS = ("momentum", "m", "v")
_CHUNK = 1 << 16  # elements folded at a time: bounds the float64 scratch buffer


class Accumulator(Protocol):
    """Folds updates of one round and yields their aggregate."""

    @property
    def num_updates(self) -> int:
        """Updates folded in so far."""

    def add(self, delta: Arrays, num_samples: int) -> None:
        """Fold one validated update in."""

    def result(self) -> Float64s:
        """The aggregated delta (float64)."""



class WeightedMean:
    """Streaming weighted mean: one float64 sum per tensor, updated in place.

    In place on purpose: a new P-sized array per update would double peak memory.
    """

    def __init__(self, sample_cap: int | None = None, uniform: bool = False) -> None:
        """Create an empty mean.

        Args:
            sample_cap: an update weighs at most this many samples (None: no cap).
            uniform: every update weighs 1 (the plain mean).
        """
        self._cap, self._uniform = sample_cap, uniform
        self._sums: Float64s = {}
        self._total_weight = 0.0
        self._num_updates = 0

    @property
    def num_updates(self) -> int:
        """Updates folded in so far."""
        return self._num_updates

    def weight(self, num_samples: int) -> float:
        """The weight an update with ``num_samples`` samples gets."""
        if self._uniform:
            return 1.0
        return float(num_samples if self._cap is None else min(num_samples, self._cap))

    def add(self, delta: Arrays, num_samples: int) -> None:
        """Fold ``delta`` in with weight :meth:`weight` (``num_samples``)."""
        if num_samples <= 0:
            raise ValidationError(f"num_samples must be positive, got {num_samples}")
        if not self._sums:
            self._sums = {k: np.zeros(v.shape, np.float64) for k, v in delta.items()}
        _check_same_tensors(self._sums, delta)
        w = self.weight(num_samples)
        for name, total in self._sums.items():
            _fold(total, delta[name], w)
        self._total_weight += w
        self._num_updates += 1

    def result(self) -> Float64s:
        """The weighted mean of the deltas folded in."""
        _require_updates(self._num_updates)
        return {k: s / self._total_weight for k, s in self._sums.items()}



class CoordinateWise:
    """Coordinate-wise median or trimmed mean; holds every update (memory O(N·P))."""

    def __init__(self, trim_fraction: float | None) -> None:
        """Create an empty aggregate.

        Args:
            trim_fraction: share of values cut at each end, in [0, 0.5); None for the median.
        """
        self._trim = trim_fraction
        self._deltas: list[dict[str, npt.NDArray[Any]]] = []

    @property
    def num_updates(self) -> int:
        """Updates held so far."""
        return len(self._deltas)

    def add(self, delta: Arrays, num_samples: int) -> None:
        """Keep a copy of ``delta``; ``num_samples`` does not matter here."""
        if self._deltas:
            _check_same_tensors(self._deltas[0], delta)
        self._deltas.append({k: np.array(v) for k, v in delta.items()})

    def result(self) -> Float64s:
        """Coordinate-wise median or trimmed mean of the deltas held."""
        _require_updates(self.num_updates)
        return {name: self._reduce(self._stack(name)) for name in self._deltas[0]}

    def _stack(self, name: str) -> npt.NDArray[Any]:
        return np.stack([d[name] for d in self._deltas])

    def _reduce(self, stacked: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        values = stacked.astype(np.float64)
        if self._trim is None:
            return np.asarray(np.median(values, axis=0), np.float64)
        n = values.shape[0]
        cut = int(self._trim * n)
        values = np.partition(values, (cut, n - cut - 1), axis=0) if cut else values
        return np.asarray(values[cut : n - cut].mean(axis=0), np.float64)


@dataclass(frozen=True)
class ServerState:
    """Server optimizer state between rounds (empty mappings until first needed).

    Attributes:
        rounds: aggregations applied so far.
        momentum: FedAvgM velocity u.
        m: FedAdam first moment.
        v: FedAdam second moment.
    """

    rounds: int = 0
    momentum: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    m: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    v: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Flat ``{"rounds": ..., "m/<tensor>": ...}``, e.g. for ``np.savez``."""
        flat: dict[str, npt.NDArray[Any]] = {"rounds": np.array(self.rounds)}
        for part in _STATE_PARTS:
            flat.update({f"{part}/{k}": a for k, a in getattr(self, part).items()})
        return flat

    @classmethod
    def from_arrays(cls, flat: Arrays) -> ServerState:
        """Inverse of :meth:`to_arrays`; an unknown key is a :class:`ValidationError`."""
        parts: dict[str, Float64s] = {part: {} for part in _STATE_PARTS}
        for key, arr in flat.items():
            part, _, name = key.partition("/")
            if key != "rounds" and (part not in parts or not name):
                raise ValidationError(f"server state holds an unknown array {key!r}")
            if key != "rounds":
                parts[part][name] = np.array(arr, np.float64)
        return cls(int(flat["rounds"]), **parts)


@dataclass(frozen=True)
class Strategy:
    """How a round's updates become new global weights, configured by name.

    Attributes:
        name: one of :data:`STRATEGIES`.
        weighting: ``"samples"`` (weight = min(num_samples, sample_cap)) or ``"uniform"``.
        sample_cap: largest weight one update can get (None: no cap).
        server_lr: η; None picks 1.0, or 0.1 for ``fedadam``.
        momentum: β of ``fedavgm``.
        beta1: β₁ of ``fedadam``.
        beta2: β₂ of ``fedadam``.
        tau: τ of ``fedadam`` (adaptivity; Reddi et al. found 1e-3 a good default).
        trim_fraction: share cut at each end by ``trimmed-mean``.
    """

    name: str = "fedavg"
    weighting: Literal["samples", "uniform"] = "samples"
    sample_cap: int | None = None
    server_lr: float | None = None
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy {self.name!r} is not one of {', '.join(STRATEGIES)}")
        if self.weighting not in ("samples", "uniform"):
            raise ConfigError(f"weighting {self.weighting!r} is not 'samples' or 'uniform'")
        if self.sample_cap is not None and self.sample_cap < 1:
            raise ConfigError(f"sample_cap must be >= 1, got {self.sample_cap}")
        _check_range("server_lr", self.lr, 0.0, math.inf, low_open=True)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("beta1", self.beta1, 0.0, 1.0)
        _check_range("beta2", self.beta2, 0.0, 1.0)
        _check_range("tau", self.tau, 0.0, math.inf, low_open=True)
        _check_range("trim_fraction", self.trim_fraction, 0.0, 0.5)

    @property
    def lr(self) -> float:
        """The server learning rate η in effect."""
        return _DEFAULT_LR[self.name] if self.server_lr is None else self.server_lr

    def accumulator(self) -> Accumulator:
        """A fresh, empty accumulator for one round."""
        if self.name == "median":
            return CoordinateWise(None)
        if self.name == "trimmed-mean":
            return CoordinateWise(self.trim_fraction)
        return WeightedMean(self.sample_cap, uniform=self.weighting == "uniform")

    def apply(
        self, weights: Arrays, delta: Mapping[str, npt.NDArray[np.float64]], state: ServerState
    ) -> tuple[dict[str, npt.NDArray[Any]], ServerState]:
        """New global weights (each in its old dtype) and optimizer state after one round."""
        _check_same_tensors(weights, delta)
        if self.name == "fedavgm":
            step, state = _momentum_step(delta, state, self.momentum)
        elif self.name == "fedadam":
            step, state = _adam_step(delta, state, self.beta1, self.beta2, self.tau)
        else:
            step, state = dict(delta), ServerState(state.rounds + 1)
        new = {k: (w + self.lr * step[k]).astype(w.dtype) for k, w in weights.items()}
        return new, state


def _momentum_step(delta: Mapping[str, npt.NDArray[np.float64]], state: ServerState,
                   beta: float) -> tuple[Float64s, ServerState]:
    u = {k: beta * state.momentum[k] + d if k in state.momentum else d.copy()
         for k, d in delta.items()}
    return u, ServerState(state.rounds + 1, momentum=u)


def _adam_step(delta: Mapping[str, npt.NDArray[np.float64]], state: ServerState,
               beta1: float, beta2: float, tau: float) -> tuple[Float64s, ServerState]:
    m = {k: beta1 * state.m.get(k, 0.0) + (1 - beta1) * d for k, d in delta.items()}
    v = {k: beta2 * state.v.get(k, tau * tau) + (1 - beta2) * d * d for k, d in delta.items()}
    step = {k: m[k] / (np.sqrt(v[k]) + tau) for k in delta}
    return step, ServerState(state.rounds + 1, m=m, v=v)


def _fold(total: npt.NDArray[np.float64], delta: npt.NDArray[Any], weight: float) -> None:
    """total += weight · delta, in float64, a chunk at a time to bound the scratch buffer."""
    flat_total, flat_delta = total.reshape(-1), np.asarray(delta).reshape(-1)
    scratch = np.empty(min(_CHUNK, flat_total.size), np.float64)
    for start in range(0, flat_total.size, _CHUNK):
        part = slice(start, start + _CHUNK)
        buf = scratch[: flat_total[part].size]
        np.multiply(flat_delta[part], weight, out=buf, dtype=np.float64)
        flat_total[part] += buf


def _check_same_tensors(expected: Arrays, got: Arrays) -> None:
    if expected.keys() != got.keys():
        raise ValidationError(f"tensors {sorted(got)} differ from {sorted(expected)}")
    for name, arr in expected.items():
        if arr.shape != got[name].shape:
            raise ValidationError(f"tensor {name!r} has shape {got[name].shape}, "
                                  f"expected {arr.shape}")


def _require_updates(n: int) -> None:
    if n == 0:
        raise ValidationError("no update to aggregate")


def _check_range(name: str, value: float, low: float, high: float,
                 low_open: bool = False) -> None:
    if not (math.isfinite(value) and (low < value if low_open else low <= value) and value < high):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}), got {value}")
