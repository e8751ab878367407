"""Drives the real :class:`aggregator.round.Round` in unit tests: an in-memory journal and
real encoded updates (so a re-sent one is recognised from its stored bytes)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from aggregator import schedule
from aggregator.fedavg import Strategy
from aggregator.intake import received
from aggregator.round import Decision, Round
from aggregator.schedule import Action, Aggregate, Event, RoundsConfig, RoundState, SkipRound
from aggregator.validation import ReceivedUpdate, UpdateLimits
from edge_client.protocol import TensorSpec, Update
from edge_client.quantize import quantize_update

WEIGHTS = {"dense/kernel": np.zeros((4, 3), np.float32), "dense/bias": np.zeros(3, np.float32)}
SPEC = TensorSpec.of(WEIGHTS)
LIMITS = UpdateLimits(max_norm=10.0, max_num_samples=5_000)


class MemoryJournal:
    """The round's journal in a dict; ``fail`` makes every save raise OSError."""

    def __init__(self) -> None:
        self.saved: dict[tuple[int, str], bytes] = {}
        self.fail = False

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        if self.fail:
            raise OSError("No space left on device")
        self.saved[(round_id, client_id)] = payload

    def accepted_payload(self, round_id: int, client_id: str) -> bytes | None:
        return self.saved.get((round_id, client_id))

    def accepted(self, round_id: int) -> list[tuple[str, bytes]]:
        return [(c, p) for (r, c), p in self.saved.items() if r == round_id]

    def updates(self, round_id: int) -> list[ReceivedUpdate]:
        return [received(Update.decode(p), p) for _, p in self.accepted(round_id)]


def update(config: RoundsConfig, client: str, round_id: int, base_version: int, *,
           samples: int = 120, salt: str = "", value: float = 0.1, **changes: Any
           ) -> ReceivedUpdate:
    """A real update (int8-free fp32 wire bytes) from ``client``, decoded as the intake does."""
    delta = {"dense/kernel": np.full((4, 3), value, np.float32),
             "dense/bias": np.full(3, -2 * value, np.float32)}
    tensors, _ = quantize_update(delta, "fp32")
    wire = Update(federation=config.federation, round_id=round_id, client_id=client,
                  base_version=base_version, model_sha256=config.model_sha256,
                  nonce=hashlib.sha256(f"{client}/{round_id}/{salt}".encode()).digest()[:16],
                  num_samples=samples, metrics={"loss": 0.4}, codec="fp32", tensors=tensors)
    payload = wire.encode()
    got = received(wire, payload)
    if changes:
        from dataclasses import replace
        got = replace(got, **changes)
    return got


class Driver:
    """Feeds events at given times to a real Round as the service does (a round that closes
    is followed by a tick, so the next one is announced), keeping every action."""

    def __init__(self, config: RoundsConfig, online: frozenset[str] = frozenset(),
                 strategy: Strategy | None = None) -> None:
        self.config = config
        self.journal = MemoryJournal()
        self.strategy = strategy or Strategy()
        self.round = Round(config, self.strategy, SPEC, LIMITS, self.journal,
                           RoundState(online=online))
        self.actions: list[Action] = []

    @property
    def state(self) -> RoundState:
        return self.round.state

    def send(self, event: Event, now: float) -> tuple[Action, ...]:
        if isinstance(event, schedule.Presence):
            return self._record(self.round.seen(event.client_id, event.online, now), now)
        return self._record(self.round.tick(now), now)

    def admit(self, got: ReceivedUpdate, now: float) -> Decision:
        decision = self.round.admit(got, now)
        self._record(decision.actions, now)
        return decision

    def answer(self, client: str, now: float, **kw: int) -> Decision:
        round_id = kw.get("round_id", self.state.round_id)
        base = kw.get("base_version", self.state.weights_version)
        return self.admit(update(self.config, client, round_id, base), now)

    def restart(self) -> None:
        """A new Round from the persisted state and the journal, as after a crash."""
        import json

        state = RoundState.from_dict(json.loads(json.dumps(self.state.to_dict())))
        self.round = Round(self.config, self.strategy, SPEC, LIMITS, self.journal, state)
        stored = self.journal.updates(state.round_id) if state.phase.value == "collecting" \
            else []
        self._record(self.round.restore(stored, 0.0), 0.0)

    def selected(self) -> list[str]:
        return sorted(self.state.selected)

    def _record(self, actions: tuple[Action, ...], now: float) -> tuple[Action, ...]:
        self.actions += actions
        if any(isinstance(a, (Aggregate, SkipRound)) for a in actions):
            more = self.round.tick(now)
            self.actions += more
            actions += more
        return actions
