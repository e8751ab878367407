"""Start-up: rebuild the service's state from the state directory after a stop or a crash.

Restores the round state machine (``round.json``), the global weights of *its*
version with the server optimizer state (``checkpoints/vN.*``; a newer checkpoint
left by a crash in the middle of an aggregation is ignored and later rewritten
with the same bytes), and reads every accepted update of the open round from
``rounds/R/accepted/`` in acceptance order, for :meth:`aggregator.round.Round.restore`
to re-fold, so the aggregate is bit-identical to the one the crashed process held
(updates stored but not yet in ``round.json``, a crash between the two writes, count
then). A fresh directory starts from the model file's weights (v0).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from aggregator import checkpoint
from aggregator.fedavg import ServerState
from aggregator.global_model import GlobalModel
from aggregator.intake import received
from aggregator.schedule import Phase, RoundState, extended, initial_state
from aggregator.store import AggregatorStore
from aggregator.validation import ReceivedUpdate
from edge_client.errors import ConfigError, FedgeError
from edge_client.protocol import TensorSpec, Update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """What a start finds in the state directory.

    Attributes:
        state: the round state machine's state.
        model: the global model of ``state.weights_version``.
        accepted: the open round's stored updates, in acceptance order.
        recorded_rounds: rounds that already have a history line.
        last_record: the newest history line ({} before the first).
    """

    state: RoundState
    model: GlobalModel
    accepted: tuple[ReceivedUpdate, ...]
    recorded_rounds: frozenset[int]
    last_record: dict[str, Any]


def restore(store: AggregatorStore, federation: str,
            initial_weights: Mapping[str, npt.NDArray[Any]],
            spec: Sequence[TensorSpec], total_rounds: int) -> Restored:
    """Rebuild the state from ``store``; see the module docstring. A finished run given
    more ``total_rounds`` than it ran goes on (:func:`aggregator.schedule.extended`).

    Raises:
        ConfigError: the state directory is unreadable, inconsistent, or was made for
            another model.
    """
    state = _round_state(store)
    if extended(state, total_rounds) != state:
        log.info("extending the finished run from %d to %d rounds", state.round_id,
                 total_rounds)
        state = extended(state, total_rounds)
    model = checkpoint.load(store, state.weights_version, spec)
    if model is None:
        if state.weights_version != 0:
            raise ConfigError(f"{store.root}: round.json says weights version "
                              f"{state.weights_version} but its checkpoint is missing")
        checkpoint.check_weights(initial_weights, spec, "--model")
        model = GlobalModel.build(federation, 0, initial_weights, ServerState())
        checkpoint.save(store, model)
    accepted = _accepted(store, state)
    history = store.history()
    recorded = frozenset(int(r["round"]) for r in history if "round" in r)
    if state.round_id or accepted:
        log.info("restored round=%d phase=%s version=%d accepted=%d stored=%d",
                 state.round_id, state.phase.value, model.version, len(state.accepted),
                 len(accepted))
    return Restored(state, model, accepted, recorded, history[-1] if history else {})


def _round_state(store: AggregatorStore) -> RoundState:
    raw = store.load_round_state()
    if raw is None:
        latest = store.latest_checkpoint()
        return initial_state(latest[0] if latest else 0)
    try:
        return RoundState.from_dict(raw)
    except FedgeError as e:
        raise ConfigError(f"{store.root}/round.json: {e}") from None


def _accepted(store: AggregatorStore, state: RoundState) -> tuple[ReceivedUpdate, ...]:
    if state.phase is not Phase.COLLECTING:
        return ()
    updates = []
    for client_id, payload in store.accepted(state.round_id):
        try:
            updates.append(received(Update.decode(payload), payload))
        except FedgeError as e:
            raise ConfigError(f"{store.root}: stored update of {client_id} in round "
                              f"{state.round_id} is unusable: {e}") from None
    missing = state.accepted - {u.client_id for u in updates}
    if missing:
        raise ConfigError(f"{store.root}: round {state.round_id} lists accepted clients "
                          f"{sorted(missing)} whose updates are not stored")
    return tuple(updates)
