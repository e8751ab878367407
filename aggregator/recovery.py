"""Start-up: rebuild the service's state from the state directory after a stop or a crash.

Restores the round state machine (``round.json``), the global weights of *its*
version with the server optimizer state (``checkpoints/vN.*``; a newer checkpoint
left by a crash in the middle of an aggregation is ignored and later rewritten
with the same bytes), and re-folds every accepted update of the open round from
``rounds/R/accepted/`` in acceptance order, so the aggregate is bit-identical to
the one the crashed process held. Updates stored but not yet in ``round.json``
(a crash between the two writes) are returned so the service can replay them into
the state machine. A fresh directory starts from the model file's weights (v0).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from aggregator import checkpoint
from aggregator.checkpoint import GlobalModel
from aggregator.fedavg import ServerState, Strategy
from aggregator.intake import received
from aggregator.ledger import RoundLedger
from aggregator.rounds import Phase, RoundState, initial_state
from aggregator.store import AggregatorStore
from aggregator.validation import ReceivedUpdate, TensorSpec
from edge_client.errors import ConfigError, FedgeError
from edge_client.protocol import Update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """What a start finds in the state directory.

    Attributes:
        state: the round state machine's state.
        model: the global model of ``state.weights_version``.
        ledger: the open round's accepted updates, folded in acceptance order.
        unrecorded: updates stored as accepted that ``state`` does not list yet.
        recorded_rounds: rounds that already have a history line.
    """

    state: RoundState
    model: GlobalModel
    ledger: RoundLedger
    unrecorded: tuple[ReceivedUpdate, ...]
    recorded_rounds: frozenset[int]


def restore(store: AggregatorStore, federation: str, strategy: Strategy,
            initial_weights: Mapping[str, npt.NDArray[Any]],
            spec: Sequence[TensorSpec]) -> Restored:
    """Rebuild the state from ``store``; see the module docstring.

    Raises:
        ConfigError: the state directory is unreadable, inconsistent, or was made for
            another model.
    """
    state = _round_state(store)
    model = checkpoint.load(store, state.weights_version, spec)
    if model is None:
        if state.weights_version != 0:
            raise ConfigError(f"{store.root}: round.json says weights version "
                              f"{state.weights_version} but its checkpoint is missing")
        checkpoint.check_weights(initial_weights, spec, "--model")
        model = GlobalModel.build(federation, 0, initial_weights, ServerState())
        model.save(store)
    ledger, unrecorded = _refold(store, state, strategy)
    recorded = frozenset(int(r["round"]) for r in store.history() if "round" in r)
    if state.round_id or ledger.participants:
        log.info("restored round=%d phase=%s version=%d accepted=%d replayed=%d",
                 state.round_id, state.phase.value, model.version, len(ledger.participants),
                 len(unrecorded))
    return Restored(state, model, ledger, tuple(unrecorded), recorded)


def _round_state(store: AggregatorStore) -> RoundState:
    raw = store.load_round_state()
    if raw is None:
        latest = store.latest_checkpoint()
        return initial_state(latest[0] if latest else 0)
    try:
        return RoundState.from_dict(raw)
    except FedgeError as e:
        raise ConfigError(f"{store.root}/round.json: {e}") from None


def _refold(store: AggregatorStore, state: RoundState,
            strategy: Strategy) -> tuple[RoundLedger, list[ReceivedUpdate]]:
    ledger = RoundLedger(state.round_id, strategy)
    if state.phase is not Phase.COLLECTING:
        return ledger, []
    unrecorded = []
    for client_id, payload in store.accepted(state.round_id):
        try:
            update = received(Update.decode(payload), len(payload))
            ledger.fold(update)
        except FedgeError as e:
            raise ConfigError(f"{store.root}: stored update of {client_id} in round "
                              f"{state.round_id} is unusable: {e}") from None
        if client_id not in state.accepted:
            unrecorded.append(update)
    missing = state.accepted - set(ledger.participants)
    if missing:
        raise ConfigError(f"{store.root}: round {state.round_id} lists accepted clients "
                          f"{sorted(missing)} whose updates are not stored")
    return ledger, unrecorded
