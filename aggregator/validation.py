"""Checks an update must pass before it counts toward a round.

Everything from the network is untrusted. :func:`validate` looks at one decoded,
dequantized :class:`ReceivedUpdate` against the open round (:class:`RoundContext`),
the model's weight spec (:class:`TensorSpec`) and the configured :class:`UpdateLimits`,
and returns a :class:`Verdict`: accepted, or rejected with a machine-readable
:class:`Reason` and a message naming the field or tensor. Nothing is changed; the
caller counts rejections with :class:`RejectionCounts`.

Checks run cheapest first, and the first failure is reported: identity (federation,
model hash), admission to the round (:func:`admission_reason`, shared with the round
state machine so both always agree), sample count, then the tensors (names, dtypes,
shapes, NaN/Inf, L2 norm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError


class Reason(str, Enum):
    """Why an update was rejected; the value is the code sent back to the client."""

    FEDERATION = "federation"  # another federation
    MODEL_HASH = "model_hash"  # trained another model file
    WRONG_ROUND = "wrong_round"  # a round that was never announced
    LATE = "late"  # answers the round that closed most recently
    STALE = "stale"  # an older round, or trained from an older global model
    BASE_VERSION = "base_version"  # a global model version that does not exist yet
    NOT_SELECTED = "not_selected"  # the client was not selected for this round
    DUPLICATE = "duplicate"  # the client already has an accepted update in this round
    NUM_SAMPLES = "num_samples"  # <= 0, or above the configured maximum
    NAME = "name"  # missing or unexpected tensor
    DTYPE = "dtype"
    SHAPE = "shape"
    NAN = "nan"
    INF = "inf"
    NORM = "norm"  # L2 norm of the whole delta above the bound


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


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model weight."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def of(cls, weights: Mapping[str, npt.NDArray[Any]]) -> tuple[TensorSpec, ...]:
        """The spec of a set of weights (e.g. the global model), in name order."""
        return tuple(
            cls(name, tuple(int(d) for d in arr.shape), str(arr.dtype))
            for name, arr in sorted(weights.items())
        )


@dataclass(frozen=True)
class UpdateLimits:
    """Bounds an update must respect.

    Attributes:
        max_norm: largest accepted L2 norm of the whole delta (all tensors together).
        max_num_samples: largest credible sample count; a larger claim is rejected outright
            (unlike the weighting cap in :mod:`aggregator.fedavg`, which only clips it).
    """

    max_norm: float
    max_num_samples: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ConfigError(f"max_norm must be a positive finite number, got {self.max_norm}")
        if self.max_num_samples < 1:
            raise ConfigError(f"max_num_samples must be >= 1, got {self.max_num_samples}")


@dataclass(frozen=True)
class RoundContext:
    """What the open round expects of an update (built by :func:`aggregator.rounds.context`).

    Attributes:
        federation: federation name.
        model_sha256: hash of the model file every client trains.
        round_id: the current round (open, or the latest closed one when ``collecting``
            is False).
        collecting: whether the round accepts updates.
        base_version: global weights version the round was announced with.
        selected: clients selected for the round.
        accepted: clients whose update has already been accepted in the round.
    """

    federation: str
    model_sha256: str
    round_id: int
    collecting: bool
    base_version: int
    selected: frozenset[str]
    accepted: frozenset[str]


@dataclass(frozen=True)
class Verdict:
    """Outcome of the checks: ``reason`` is None exactly when accepted."""

    reason: Reason | None = None
    message: str = "accepted"

    @property
    def accepted(self) -> bool:
        """True when the update may count toward the round."""
        return self.reason is None


ACCEPTED = Verdict()


@dataclass(frozen=True)
class RejectionCounts:
    """Rejections counted by reason (immutable; :meth:`add` returns a new tally)."""

    counts: Mapping[Reason, int] = field(default_factory=lambda: MappingProxyType({}))

    def add(self, verdict: Verdict) -> RejectionCounts:
        """The tally with ``verdict`` counted (unchanged when it was accepted)."""
        if verdict.reason is None:
            return self
        counts = dict(self.counts)
        counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
        return RejectionCounts(MappingProxyType(counts))

    def as_dict(self) -> dict[str, int]:
        """JSON-able ``{reason code: count}``."""
        return {reason.value: n for reason, n in sorted(self.counts.items())}


def admission_reason(
    ctx: RoundContext, client_id: str, round_id: int, base_version: int
) -> Reason | None:
    """Whether the round admits an update from ``client_id``; None when it does."""
    if round_id > ctx.round_id:
        return Reason.WRONG_ROUND
    last_closed = ctx.round_id - 1 if ctx.collecting else ctx.round_id
    if round_id < ctx.round_id or not ctx.collecting:
        return Reason.LATE if round_id == last_closed else Reason.STALE
    if base_version < ctx.base_version:
        return Reason.STALE
    if base_version > ctx.base_version:
        return Reason.BASE_VERSION
    if client_id not in ctx.selected:
        return Reason.NOT_SELECTED
    if client_id in ctx.accepted:
        return Reason.DUPLICATE
    return None


def validate(
    update: ReceivedUpdate,
    ctx: RoundContext,
    spec: tuple[TensorSpec, ...],
    limits: UpdateLimits,
) -> Verdict:
    """Run every check on ``update``; the first failure decides the verdict."""
    return (
        _identity(update, ctx)
        or _admission(update, ctx)
        or _num_samples(update.num_samples, limits)
        or _tensors(update.delta, spec, limits)
        or ACCEPTED
    )


def _identity(update: ReceivedUpdate, ctx: RoundContext) -> Verdict | None:
    if update.federation != ctx.federation:
        return Verdict(
            Reason.FEDERATION,
            f"federation {update.federation!r} is not this federation {ctx.federation!r}",
        )
    if update.model_sha256 != ctx.model_sha256:
        return Verdict(
            Reason.MODEL_HASH,
            f"model_sha256 {update.model_sha256[:16]!r}... does not match the round's model "
            f"{ctx.model_sha256[:16]!r}...",
        )
    return None


def _admission(update: ReceivedUpdate, ctx: RoundContext) -> Verdict | None:
    reason = admission_reason(ctx, update.client_id, update.round_id, update.base_version)
    if reason is None:
        return None
    state = "open" if ctx.collecting else "closed"
    return Verdict(
        reason,
        f"{_ADMISSION_TEXT[reason]}: client {update.client_id!r} sent round {update.round_id} "
        f"on base_version {update.base_version}; round {ctx.round_id} is {state} on "
        f"base_version {ctx.base_version}",
    )


_ADMISSION_TEXT = {
    Reason.WRONG_ROUND: "round not announced",
    Reason.LATE: "round already closed",
    Reason.STALE: "older round or older global model",
    Reason.BASE_VERSION: "unknown global model version",
    Reason.NOT_SELECTED: "client not selected for this round",
    Reason.DUPLICATE: "client already has an accepted update in this round",
}


def _num_samples(num_samples: int, limits: UpdateLimits) -> Verdict | None:
    if 0 < num_samples <= limits.max_num_samples:
        return None
    return Verdict(
        Reason.NUM_SAMPLES,
        f"num_samples {num_samples} is outside 1..{limits.max_num_samples}",
    )


def _tensors(
    delta: Mapping[str, npt.NDArray[Any]], spec: tuple[TensorSpec, ...], limits: UpdateLimits
) -> Verdict | None:
    expected = {t.name for t in spec}
    missing, unexpected = sorted(expected - delta.keys()), sorted(delta.keys() - expected)
    if missing or unexpected:
        return Verdict(Reason.NAME, f"tensors missing {missing}, unexpected {unexpected}")
    for t in spec:
        found = _tensor(t, delta[t.name])
        if found is not None:
            return found
    norm = delta_norm(delta)
    if norm > limits.max_norm:
        return Verdict(Reason.NORM, f"L2 norm of the delta {norm:.4g} exceeds {limits.max_norm}")
    return None


def _tensor(spec: TensorSpec, arr: npt.NDArray[Any]) -> Verdict | None:
    if str(arr.dtype) != spec.dtype:
        return Verdict(Reason.DTYPE, f"tensor {spec.name!r} has dtype {arr.dtype}, "
                       f"expected {spec.dtype}")
    if tuple(arr.shape) != spec.shape:
        return Verdict(Reason.SHAPE, f"tensor {spec.name!r} has shape {tuple(arr.shape)}, "
                       f"expected {spec.shape}")
    if not np.issubdtype(arr.dtype, np.inexact):
        return None
    nans = int(np.count_nonzero(np.isnan(arr)))
    if nans:
        return Verdict(Reason.NAN, f"tensor {spec.name!r} holds {nans} NaN value(s)")
    infs = int(np.count_nonzero(np.isinf(arr)))
    if infs:
        return Verdict(Reason.INF, f"tensor {spec.name!r} holds {infs} infinite value(s)")
    return None


def delta_norm(delta: Mapping[str, npt.NDArray[Any]]) -> float:
    """L2 norm of all tensors together, in float64 so large float32 values cannot overflow."""
    total = 0.0
    for arr in delta.values():
        flat = arr.ravel().astype(np.float64)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)
