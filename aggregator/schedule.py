"""When rounds open and close: the round state machine, a pure function of events and time.

``step(config, state, event, now) -> (state, actions)``. :class:`aggregator.round.Round`
feeds it :class:`Presence`, :class:`Admitted` (an update that passed every check,
including :func:`admission`, which only this module decides) and :class:`Tick` events;
the service carries out the returned actions in order, then persists
``state.to_dict()``; :meth:`RoundState.from_dict` restores it after a crash and the run
continues exactly as it would have.

A round:

1. **Announce.** As soon as ``min_available`` clients are online, round r+1 is announced
   to clients picked by :func:`choose_participants` (seeded by ``(seed, round id, sorted
   online set)``), with the deadline ``now + round_timeout``. Ids that delivered an
   accepted update before are picked first; ids that never did are capped at
   ``max_new_clients`` a round, the untried before those selected earlier in vain, so a
   flood of made-up presence ids cannot capture a round (docs/security.md).
2. **Collect** until every selected client was accepted, or the deadline passed. Each
   update gets a :class:`Reply`; updates for a closed round (``late``: the round that
   closed most recently; ``stale``: an older round or an older base version), from
   unselected clients or repeated (``duplicate``) are refused with their reason.
3. **Close.** With at least ``min_clients`` accepted: :class:`Aggregate` (the global
   weights version goes up by one). Otherwise the policy is: **extend the deadline once,
   by ``round_timeout``**; if the quorum is still not met then, :class:`SkipRound`: global
   weights unchanged. The next round is announced by the *next* step, so its deadline
   counts from after the service has published the closed round's results.
4. After round ``total_rounds`` closes (aggregated or skipped: a skipped round still uses
   its id, so a run always ends), :class:`Finish`.

Stragglers never stall a round beyond its (possibly extended) deadline. At most
``max_online`` ids are online at once (an id that delivered before is always let in); a
presence beyond that is refused with :class:`PresenceRefused`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

from aggregator.reasons import Reason, Rejection
from edge_client.errors import ConfigError, ValidationError
from edge_client.protocol import MAX_SELECTED

DEFAULT_MAX_NEW_CLIENTS = 256  # never-delivered ids a round selects: a flood's cost, bounded
DEFAULT_MAX_ONLINE = 16384  # presence table size; a fleet's real ids beyond this are let in


class Phase(str, Enum):
    """Where the machine is."""

    WAITING = "waiting"  # for min_available clients to come online
    COLLECTING = "collecting"
    FINISHED = "finished"


@dataclass(frozen=True)
class RoundsConfig:
    """Fixed parameters of a federation run.

    Attributes:
        federation: federation name.
        model_sha256: hash of the model file all clients train.
        run_id: the run (one state directory's life) updates must belong to.
        total_rounds: rounds to run (the ``--rounds`` flag).
        min_clients: quorum: fewest accepted updates to aggregate a round.
        clients_per_round: clients to select per round (None: use ``fraction``).
        fraction: share of online clients to select (None with ``clients_per_round``
            None: all online clients).
        round_timeout: seconds from announce to deadline, and the one extension.
        seed: seed of client selection.
        min_available: clients that must be online before a round is announced (None:
            ``min_clients``), like Flower's ``min_available_clients``.
        max_new_clients: ids that never delivered an accepted update selected per round.
        max_online: ids held online at once, besides those that delivered before.
        sampling_rate: with differential privacy, each online client is selected with
            this probability (:func:`poisson_sample`) instead of by :func:`round_size`.
    """

    federation: str
    model_sha256: str
    total_rounds: int
    min_clients: int = 2
    run_id: str = ""
    clients_per_round: int | None = None
    fraction: float | None = None
    round_timeout: float = 60.0
    seed: int = 0
    min_available: int | None = None
    max_new_clients: int = DEFAULT_MAX_NEW_CLIENTS
    max_online: int = DEFAULT_MAX_ONLINE
    sampling_rate: float | None = None

    def __post_init__(self) -> None:
        if self.total_rounds < 1 or self.min_clients < 1 or self.seed < 0:
            raise ConfigError("total_rounds and min_clients must be >= 1 and seed >= 0, got "
                              f"{self.total_rounds}, {self.min_clients}, {self.seed}")
        if self.clients_per_round is not None and self.clients_per_round < self.min_clients:
            raise ConfigError(f"clients_per_round {self.clients_per_round} is below "
                              f"min_clients {self.min_clients}")
        if self.min_available is not None and self.min_available < self.min_clients:
            raise ConfigError(f"min_available {self.min_available} is below "
                              f"min_clients {self.min_clients}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.max_new_clients < self.min_clients or self.max_online < self.max_new_clients:
            raise ConfigError(f"need min_clients {self.min_clients} <= max_new_clients "
                              f"{self.max_new_clients} <= max_online {self.max_online} (a new "
                              "federation could not reach its quorum): raise --max-new-clients")
        if self.sampling_rate is not None and not 0.0 < self.sampling_rate <= 1.0:
            raise ConfigError(f"sampling_rate must be in (0, 1], got {self.sampling_rate}")
        if not (math.isfinite(self.round_timeout) and self.round_timeout > 0):
            raise ConfigError(f"round_timeout must be positive, got {self.round_timeout}")


@dataclass(frozen=True)
class RoundState:
    """Everything the machine knows; serialisable with :meth:`to_dict`.

    Attributes:
        round_id: the open round, or the latest one when not collecting (0: none yet).
        phase: see :class:`Phase`.
        weights_version: version of the current global weights (base of the open round).
        online: clients currently online.
        selected: clients selected for the round.
        accepted: clients whose update the round accepted.
        deadline: when the round closes (clock of ``now``), None when not collecting.
        extended: whether the deadline was already extended.
        aggregated: rounds aggregated so far.
        skipped: rounds skipped so far.
        delivered: ids that ever delivered an update a round accepted.
        tried: ids selected and never delivered (picked after untried new ids).
    """

    round_id: int = 0
    phase: Phase = Phase.WAITING
    weights_version: int = 0
    online: frozenset[str] = frozenset()
    selected: frozenset[str] = frozenset()
    accepted: frozenset[str] = frozenset()
    deadline: float | None = None
    extended: bool = False
    aggregated: int = 0
    skipped: int = 0
    delivered: frozenset[str] = frozenset()
    tried: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (sets as sorted lists)."""
        return {
            "round_id": self.round_id, "phase": self.phase.value,
            "weights_version": self.weights_version, "online": sorted(self.online),
            "selected": sorted(self.selected), "accepted": sorted(self.accepted),
            "deadline": self.deadline, "extended": self.extended,
            "aggregated": self.aggregated, "skipped": self.skipped,
            "delivered": sorted(self.delivered), "tried": sorted(self.tried),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundState:
        """Parse :meth:`to_dict` output, strictly (a bad checkpoint names the field)."""
        try:
            deadline = data["deadline"]
            return cls(
                round_id=_int(data, "round_id"), phase=Phase(data["phase"]),
                weights_version=_int(data, "weights_version"),
                online=_names(data, "online"), selected=_names(data, "selected"),
                accepted=_names(data, "accepted"),
                deadline=None if deadline is None else float(deadline),
                extended=bool(data["extended"]),
                aggregated=_int(data, "aggregated"), skipped=_int(data, "skipped"),
                delivered=_names(data, "delivered", []), tried=_names(data, "tried", []),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"round state checkpoint is invalid: {exc!r}") from exc


@dataclass(frozen=True)
class Presence:
    """A client came online (``online=True``) or went offline."""

    client_id: str
    online: bool


@dataclass(frozen=True)
class Admitted:
    """An update from ``client_id`` passed every check (:func:`admission` included) and
    was stored: it counts toward the open round."""

    client_id: str


@dataclass(frozen=True)
class Tick:
    """Time passed; deadlines are checked against ``now``."""


Event = Presence | Admitted | Tick


@dataclass(frozen=True)
class Announce:
    """Publish round ``round_id`` to ``selected``, training from ``base_version``."""

    round_id: int
    base_version: int
    selected: tuple[str, ...]
    deadline: float


@dataclass(frozen=True)
class ExtendDeadline:
    """The quorum was not met by the deadline: the round now closes at ``deadline``."""

    round_id: int
    deadline: float
    accepted: int


@dataclass(frozen=True)
class Aggregate:
    """Close the round: aggregate the updates of ``clients``, publish ``new_version``."""

    round_id: int
    clients: tuple[str, ...]
    new_version: int


@dataclass(frozen=True)
class SkipRound:
    """Close the round without aggregating; global weights stay as they are."""

    round_id: int
    accepted: int
    min_clients: int


@dataclass(frozen=True)
class Finish:
    """The last round closed: the run is over."""

    rounds: int
    aggregated: int
    skipped: int


@dataclass(frozen=True)
class PresenceRefused:
    """``client_id`` came online while ``max_online`` ids were: not taken (a flood?)."""

    client_id: str
    max_online: int


Action = Announce | ExtendDeadline | Aggregate | SkipRound | Finish | PresenceRefused
Step = tuple[RoundState, tuple[Action, ...]]


def initial_state(weights_version: int = 0) -> RoundState:
    """The state of a fresh run whose global weights have ``weights_version``."""
    return RoundState(weights_version=weights_version)


def extended(state: RoundState, total_rounds: int) -> RoundState:
    """A finished run given more rounds (``--rounds`` above the rounds it ran) waits to
    announce its next round; any other state is returned unchanged."""
    if state.phase is Phase.FINISHED and total_rounds > state.round_id:
        return replace(state, phase=Phase.WAITING)
    return state


def admission(state: RoundState, client_id: str, round_id: int,
              base_version: int) -> Rejection | None:
    """Whether the round admits an update from ``client_id`` for ``round_id`` trained on
    ``base_version``; None when it does."""
    reason = _admission_reason(state, client_id, round_id, base_version)
    if reason is None:
        return None
    open_or_closed = "open" if state.phase is Phase.COLLECTING else "closed"
    return Rejection(reason, f"{_ADMISSION_TEXT[reason]}: client {client_id!r} sent round "
                     f"{round_id} on base_version {base_version}; round {state.round_id} is "
                     f"{open_or_closed} on base_version {state.weights_version}")


def _admission_reason(state: RoundState, client_id: str, round_id: int,
                      base_version: int) -> Reason | None:
    collecting = state.phase is Phase.COLLECTING
    if round_id > state.round_id:
        return Reason.WRONG_ROUND
    last_closed = state.round_id - 1 if collecting else state.round_id
    if round_id < state.round_id or not collecting:
        return Reason.LATE if round_id == last_closed else Reason.STALE
    if base_version < state.weights_version:
        return Reason.STALE
    if base_version > state.weights_version:
        return Reason.BASE_VERSION
    if client_id not in state.selected:
        return Reason.NOT_SELECTED
    if client_id in state.accepted:
        return Reason.DUPLICATE
    return None


_ADMISSION_TEXT = {
    Reason.WRONG_ROUND: "round not announced",
    Reason.LATE: "round already closed",
    Reason.STALE: "older round or older global model",
    Reason.BASE_VERSION: "unknown global model version",
    Reason.NOT_SELECTED: "client not selected for this round",
    Reason.DUPLICATE: "client already has an accepted update in this round",
}


def step(config: RoundsConfig, state: RoundState, event: Event, now: float) -> Step:
    """Apply one event at time ``now``; return the new state and the actions to carry out.

    Raises:
        ValidationError: an :class:`Admitted` event the round cannot count (a caller that
            skipped :func:`admission`).
    """
    if isinstance(event, Presence):
        if event.online and not has_room(config, state, event.client_id):
            return state, (PresenceRefused(event.client_id, config.max_online),)
        client = frozenset({event.client_id})
        online = state.online | client if event.online else state.online - client
        state = replace(state, online=online)
    elif isinstance(event, Admitted):
        if state.phase is not Phase.COLLECTING or event.client_id not in state.selected:
            raise ValidationError(f"round {state.round_id} cannot count an update from "
                                  f"{event.client_id!r}: check admission() first")
        state = replace(state, accepted=state.accepted | {event.client_id})
    if state.phase is Phase.FINISHED:
        return state, ()
    return _advance(config, state, now)


def has_room(config: RoundsConfig, state: RoundState, client_id: str) -> bool:
    """Whether ``client_id`` may come online: the presence table is below ``max_online``,
    or the id is known (online already, or it delivered before)."""
    return (len(state.online) < config.max_online or client_id in state.online
            or client_id in state.delivered)


def choose_participants(config: RoundsConfig, state: RoundState,
                        round_id: int) -> tuple[str, ...]:
    """The clients round ``round_id`` selects among ``state.online``, in tiers: ids that
    delivered before; then at most ``max_new_clients`` that never did, untried ids before
    those selected earlier in vain. Each tier is drawn by :func:`select_clients`."""
    count = round_size(config, len(state.online))
    known = select_clients(config.seed, round_id, state.online & state.delivered, count)
    room = min(count - len(known), config.max_new_clients)
    never = state.online - state.delivered
    fresh = select_clients(config.seed, round_id, never - state.tried, room)
    retried = select_clients(config.seed, round_id, never & state.tried, room - len(fresh))
    return tuple(sorted(known + fresh + retried))


def remember_delivery(config: RoundsConfig, state: RoundState) -> RoundState:
    """The closing round's accepted ids join ``delivered``; its other selected ids join
    ``tried`` (kept to the ids online when it outgrows ``max_online``)."""
    delivered = state.delivered | state.accepted
    tried = (state.tried | state.selected) - delivered
    if len(tried) > config.max_online:
        tried &= state.online
    return replace(state, delivered=delivered, tried=tried)


def select_clients(
    seed: int, round_id: int, online: frozenset[str], count: int
) -> tuple[str, ...]:
    """``count`` clients drawn without replacement, reproducible from the arguments."""
    pool = sorted(online)
    rng = np.random.default_rng([seed, round_id])
    picked = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return tuple(sorted(pool[int(i)] for i in picked))


def poisson_sample(seed: int, round_id: int, online: frozenset[str],
                   rate: float) -> tuple[str, ...]:
    """Each online client independently with probability ``rate`` (Poisson sampling, the
    sampling the DP accountant assumes; the sample may be empty or below the quorum),
    reproducible from the arguments; at most :data:`MAX_SELECTED` (sorted ids first)."""
    pool = sorted(online)
    draws = np.random.default_rng([seed, round_id]).random(len(pool))
    return tuple(c for c, u in zip(pool, draws, strict=True) if u < rate)[:MAX_SELECTED]


def finish(state: RoundState) -> Step:
    """End the run now, between rounds (its privacy budget cannot pay for another)."""
    if state.phase is not Phase.WAITING:
        raise ValidationError(f"the run can only finish between rounds, not {state.phase.value}")
    return (replace(state, phase=Phase.FINISHED),
            (Finish(state.round_id, state.aggregated, state.skipped),))


def round_size(config: RoundsConfig, online: int) -> int:
    """How many clients a round selects among ``online`` (never fewer than the quorum)."""
    if config.clients_per_round is not None:
        wanted = config.clients_per_round
    elif config.fraction is not None:
        wanted = math.ceil(config.fraction * online)
    else:
        wanted = online
    return min(max(wanted, config.min_clients), online, MAX_SELECTED)


def _advance(config: RoundsConfig, state: RoundState, now: float) -> Step:
    if state.phase is Phase.WAITING:
        return _announce(config, state, now)
    assert state.deadline is not None  # always set while collecting
    if state.accepted >= state.selected:
        return _close(config, state, now)
    if now < state.deadline:
        return state, ()
    quorum = len(state.accepted) >= config.min_clients
    extended_deadline = state.deadline + config.round_timeout
    if not quorum and not state.extended and now < extended_deadline:
        extended = replace(state, deadline=extended_deadline, extended=True)
        return extended, (ExtendDeadline(state.round_id, extended_deadline,
                                         len(state.accepted)),)
    return _close(config, state, now)


def _close(config: RoundsConfig, state: RoundState, now: float) -> Step:
    closed: Action
    state = remember_delivery(config, state)
    if len(state.accepted) >= config.min_clients:
        version = state.weights_version + 1
        closed = Aggregate(state.round_id, tuple(sorted(state.accepted)), version)
        state = replace(state, weights_version=version, aggregated=state.aggregated + 1)
    else:
        closed = SkipRound(state.round_id, len(state.accepted), config.min_clients)
        state = replace(state, skipped=state.skipped + 1)
    state = replace(state, phase=Phase.WAITING, selected=frozenset(), accepted=frozenset(),
                    deadline=None, extended=False)
    if state.round_id >= config.total_rounds:
        done = replace(state, phase=Phase.FINISHED)
        return done, (closed, Finish(state.round_id, state.aggregated, state.skipped))
    return state, (closed,)


def _announce(config: RoundsConfig, state: RoundState, now: float) -> Step:
    if len(state.online) < (config.min_available or config.min_clients):
        return state, ()
    round_id = state.round_id + 1
    if config.sampling_rate is not None:  # DP: a real random sample, what the accountant assumes
        selected = poisson_sample(config.seed, round_id, state.online, config.sampling_rate)
    else:
        selected = choose_participants(config, state, round_id)
    deadline = now + config.round_timeout
    state = replace(state, round_id=round_id, phase=Phase.COLLECTING,
                    selected=frozenset(selected), accepted=frozenset(), deadline=deadline,
                    extended=False)
    return state, (Announce(round_id, state.weights_version, selected, deadline),)


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _names(data: dict[str, Any], key: str,
           default: list[str] | None = None) -> frozenset[str]:
    value = data[key] if default is None else data.get(key, default)  # older checkpoints
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of client ids, got {value!r}")
    return frozenset(value)
