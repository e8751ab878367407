"""The aggregator service: the I/O shell around the pure round machine and aggregation maths.

One worker (the caller of :meth:`AggregatorService.run`) consumes
``transport.get(timeout)``; paho's network runs on the transport's own thread.
Each message or 0.2 s tick becomes a :func:`aggregator.rounds.step` event whose
actions are carried out in order, then ``round.json`` is written if it changed.

Crash safety (docs/aggregator.md): the MQTT session is durable and acknowledged by
hand. A chunk that does not complete a transfer is acknowledged on arrival (it
lives only in memory; after a crash the client re-sends the whole update). The
chunk that completes an update is acknowledged only after the update is either
stored (``save_accepted``, before it is folded and answered) or rejected. Effects
of closing a round are idempotent (checkpoint, then publish, then a history line
per round id, then ``round.json``), so a crash anywhere replays to the same result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aggregator import inbox, intake, rounds
from aggregator.checkpoint import GlobalModel
from aggregator.config import AggregatorConfig
from aggregator.intake import Arrival
from aggregator.ledger import OpenRound, RoundLedger
from aggregator.metrics import ServiceMetrics
from aggregator.modelfile import ModelFile
from aggregator.publish import Publisher, RunMessages, manifest_signing_key
from aggregator.recovery import restore
from aggregator.stages import NO_STAGES, StageHook
from aggregator.rounds import Event, Phase, UpdateArrived
from aggregator.store import AggregatorStore
from edge_client import protocol
from edge_client.errors import ProtocolError
from edge_client.transfer import ReassemblyLimits
from edge_client.transport import Message, Transport

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
ALREADY_ACCEPTED = "already accepted"


class AggregatorService:
    """Runs a federation: see the module docstring."""

    def __init__(self, config: AggregatorConfig, transport: Transport, model_file: ModelFile,
                 *, store: AggregatorStore | None = None, metrics: ServiceMetrics | None = None,
                 clock: Callable[[], float] = time.time,
                 stages: StageHook = NO_STAGES) -> None:
        """Restore the state directory; nothing is published until :meth:`run`.

        Raises:
            ConfigError: bad hyperparameters, signing key or state directory.
        """
        self.config, self.transport, self.clock = config, transport, clock
        self.stages = stages
        self.model_file = model_file
        self.store = store or AggregatorStore(config.state_dir)
        self.metrics = metrics or ServiceMetrics()
        self.topics = config.topics()
        self.rounds_config = config.rounds_config(model_file.sha256)
        self.strategy = config.strategy_config()
        self.limits = config.limits()
        self.spec = model_file.spec
        meta = model_file.metadata
        if config.batch_size is not None and config.batch_size != meta.batch_size:
            log.warning("--batch-size %d differs from the model file's fixed batch size %d",
                        config.batch_size, meta.batch_size)
        self.messages = RunMessages(
            config.federation, model_file.sha256, len(model_file.data), config.codec,
            config.hyperparameters(meta.batch_size, meta.learning_rate),
            manifest_signing_key(config.signing_key))
        self.publisher = Publisher(transport, self.topics, max_payload=config.max_payload)
        reassembly = ReassemblyLimits(max_transfer_bytes=model_file.max_update_bytes(),
                                      timeout=max(30.0, 2 * config.round_timeout))
        self.inbox = inbox.UpdateInbox(self.store, self.spec, self.limits, config.codec, reassembly)
        restored = restore(self.store, config.federation, self.strategy,
                           model_file.initial_weights, self.spec)
        self.state, self.model, self.ledger = restored.state, restored.model, restored.ledger
        self._replay = restored.unrecorded
        self._recorded = set(restored.recorded_rounds)
        self._saved = self.state.to_dict()
        self._open = OpenRound(self.state.round_id, tuple(sorted(self.state.selected)),
                               self._started_at(), self.publisher.bytes_sent)

    # -- the loop -----------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Serve until the last round closes or ``stop`` is set.

        Returns:
            0 (finished, or stopped on request).
        """
        self.start()
        next_tick = 0.0
        while not stop.is_set() and not self.finished:
            message = self.transport.get(timeout=max(0.0, next_tick - time.monotonic()))
            if message is not None:
                self.handle(message)
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + TICK_SECONDS
        log.info("stopping: round=%d phase=%s version=%d", self.state.round_id,
                 self.state.phase.value, self.model.version)
        return 0

    @property
    def finished(self) -> bool:
        """Whether the last round has closed."""
        return self.state.phase is Phase.FINISHED

    def start(self) -> None:
        """Subscribe, publish the current state, replay updates stored but not yet counted."""
        self.transport.subscribe(self.topics.presence_filter())
        self.transport.subscribe(self.topics.update_filter())
        self._publish_current()
        for update in self._replay:
            self._event(UpdateArrived.of(update))
        self._replay = ()

    def tick(self) -> None:
        """Let time pass: deadlines are checked against the clock."""
        self._event(rounds.Tick())

    def handle(self, message: Message) -> None:
        """Process one received message; nothing in it can make this raise.

        Raises:
            OSError: the state directory failed mid-effect; stopping (and restarting
                from the last consistent state) is the only safe reaction.
        """
        try:
            self._dispatch(message)
        except OSError:
            raise
        except Exception:  # a bug must not kill the service; the message is dropped
            log.exception("unexpected error on %s; message dropped", message.topic)
            self.transport.ack(message)

    def _dispatch(self, message: Message) -> None:
        self.metrics.bytes_in.inc(len(message.payload))
        self._open.bytes_in += len(message.payload)
        try:
            ref = self.topics.parse(message.topic)
        except ProtocolError as e:
            self._invalid("topic", f"{message.topic!r}: {e}", message)
            return
        if ref.kind == "update" and ref.client_id is not None:
            self._on_chunk(ref.client_id, message)
        elif ref.kind == "presence" and ref.client_id is not None:
            self._on_presence(ref.client_id, message)
        else:
            self.transport.ack(message)

    # -- presence -------------------------------------------------------------
    def _on_presence(self, client_id: str, message: Message) -> None:
        self.transport.ack(message)
        if protocol.is_clear(message.payload):
            return
        try:
            presence = protocol.Presence.decode(message.payload)
        except ProtocolError as e:
            self._invalid("presence", f"from {client_id}: {e}")
            return
        if presence.client_id != client_id:
            self._invalid("presence", f"topic of {client_id} carries {presence.client_id!r}")
            return
        log.info("presence client=%s online=%s samples=%d", client_id, presence.online,
                 presence.samples)
        self._event(rounds.Presence(client_id, presence.online))

    def _invalid(self, kind: str, text: str, message: Message | None = None) -> None:
        log.warning("invalid %s message %s", kind, text)
        self.metrics.invalid.labels(kind).inc()
        if message is not None:
            self.transport.ack(message)

    # -- updates ------------------------------------------------------------
    def _on_chunk(self, sender: str, message: Message) -> None:
        ctx = rounds.context(self.rounds_config, self.state)
        outcome = self.inbox.take(sender, message.payload, self.clock(), ctx, self.ledger)
        if isinstance(outcome, inbox.Admitted):  # stored: acknowledged once folded
            self._event(UpdateArrived.of(outcome.arrival.received), outcome.arrival, message)
        elif isinstance(outcome, inbox.Unstored):  # not acknowledged: the broker keeps it
            log.error("update round=%d client=%s NOT stored (%s); not acknowledged",
                      outcome.arrival.update.round_id, sender, outcome.error)
            self._count(intake.STORE)
        elif isinstance(outcome, inbox.Refusal):
            self._refuse(outcome.to, outcome.reason, outcome.text, message)
        else:
            self.transport.ack(message)
            if isinstance(outcome, inbox.Resent):
                log.info("update round=%d client=%s re-sent, already accepted",
                         outcome.to.round_id, sender)
                self._reply(outcome.to, True, ALREADY_ACCEPTED)

    def _refuse(self, to: intake.Addressee | None, reason: str, text: str,
                message: Message) -> None:
        log.warning("update rejected client=%s reason=%s: %s", to and to.client_id, reason, text)
        self._count(reason)
        self.transport.ack(message)
        if to is not None:
            self._reply(to, False, intake.reason_text(reason, text))

    def _count(self, reason: str) -> None:
        self.metrics.rejected.labels(reason).inc()
        self._open.rejections[reason] += 1

    def _reply(self, to: intake.Addressee, accepted: bool, reason: str) -> None:
        self.publisher.reply(protocol.Reply(
            federation=self.config.federation, round_id=to.round_id, client_id=to.client_id,
            nonce=to.nonce, accepted=accepted, reason=reason))

    # -- the state machine --------------------------------------------------
    def _event(self, event: Event, arrival: Arrival | None = None,
               message: Message | None = None) -> None:
        now = self.clock()
        self.state, actions = rounds.step(self.rounds_config, self.state, event, now)
        for action in actions:
            if isinstance(action, rounds.Announce) and now != (fresh := self.clock()):
                # announced right after closing a round: count from after its publish
                self.state = rounds.restamp(self.rounds_config, self.state, fresh)
                action = replace(action, deadline=self.state.deadline or action.deadline)
                now = fresh
            self._carry_out(action, now, arrival, message)
        state = self.state.to_dict()
        if _durable(state) != _durable(self._saved):
            self.store.save_round_state(state)
            self._saved = state
        self._update_gauges()

    def _carry_out(self, action: rounds.Action, now: float, arrival: Arrival | None,
                   message: Message | None) -> None:
        if isinstance(action, rounds.Reply):
            self._answer(action, arrival, message)
        elif isinstance(action, rounds.Announce):
            self._announce(action, now)
        elif isinstance(action, rounds.ExtendDeadline):
            log.info("round=%d quorum not met (%d accepted); deadline extended once",
                     action.round_id, action.accepted)
            self.publisher.round(self._round_message())
        elif isinstance(action, rounds.Aggregate):
            self._aggregate(action, now)
        elif isinstance(action, rounds.SkipRound):
            log.warning("round=%d skipped: %d accepted, quorum %d", action.round_id,
                        action.accepted, action.min_clients)
            self._close_round("skipped", now)
        elif isinstance(action, rounds.Finish):
            log.info("finished rounds=%d aggregated=%d skipped=%d", action.rounds,
                     action.aggregated, action.skipped)
            self.publisher.manifest(self._manifest())

    def _answer(self, action: rounds.Reply, arrival: Arrival | None,
                message: Message | None) -> None:
        if arrival is None or message is None:
            return  # replayed at start-up: restore folded it; a re-send gets "already accepted"
        if action.accepted:
            self.ledger.fold(arrival.received)
            self.metrics.accepted.inc()
            log.info("update accepted round=%d client=%s samples=%d", action.round_id,
                     action.client_id, arrival.update.num_samples)
            self.transport.ack(message)
            self._reply(arrival.addressee, True, "")
        else:
            reason = action.reason.value if action.reason else "rejected"
            self._refuse(arrival.addressee, reason, "refused by the round", message)

    def _announce(self, action: rounds.Announce, now: float) -> None:
        self.ledger = RoundLedger(action.round_id, self.strategy)
        self._open = OpenRound(action.round_id, action.selected, now, self.publisher.bytes_sent)
        self.publisher.round(self._round_message())
        log.info("round=%d announced base=%d selected=%d deadline_in=%.1fs", action.round_id,
                 action.base_version, len(action.selected), action.deadline - now)

    def _aggregate(self, action: rounds.Aggregate, now: float) -> None:
        if self.ledger.participants != action.clients:
            log.error("round=%d: ledger %s differs from the machine's %s", action.round_id,
                      self.ledger.participants, action.clients)
        weights, server_state = self.strategy.apply(self.model.weights, self.ledger.delta(),
                                                    self.model.server_state)
        previous = self.model
        self.model = GlobalModel.build(self.config.federation, action.new_version, weights,
                                       server_state)
        self.model.save(self.store)
        self.publisher.weights(self.model.version, self.model.payload)
        self.publisher.manifest(self._manifest())
        self._clear_weights(previous.version - 1)
        log.info("round=%d aggregated participants=%d version=%d", action.round_id,
                 len(action.clients), self.model.version)
        self._close_round("aggregated", now)

    def _clear_weights(self, version: int) -> None:
        saved = self.store.checkpoint(version) if version >= 0 else None
        if saved is not None:
            self.publisher.clear_weights(version, len(saved[0]))

    def _close_round(self, outcome: str, now: float) -> None:
        record = self._open.record(self.ledger, outcome, self.model.version,
                                   self.publisher.bytes_sent, now)
        self.metrics.rounds.labels(outcome).inc()
        self.metrics.round_duration.observe(record["duration_s"])
        if self._open.round_id not in self._recorded:  # else written before a crash: replayed
            self.store.append_history(record)
            self._recorded.add(self._open.round_id)

    # -- messages -------------------------------------------------------------
    def _publish_current(self) -> None:
        self.publisher.model_file(self.model_file.data, self.model_file.sha256)
        self.publisher.weights(self.model.version, self.model.payload)
        self._clear_weights(self.model.version - 2)
        self.publisher.manifest(self._manifest())
        if self.state.phase is Phase.COLLECTING:
            self.publisher.round(self._round_message())
        log.info("published model=%s version=%d round=%d phase=%s", self.model_file.sha256[:12],
                 self.model.version, self.state.round_id, self.state.phase.value)
        self._update_gauges()

    def _manifest(self) -> protocol.Manifest:
        return self.messages.manifest(self.model.version, self.model.sha256, self.state.round_id)

    def _round_message(self) -> protocol.Round:
        return self.messages.round(self.state)

    def _started_at(self) -> float:
        s = self.state
        if s.deadline is None:
            return self.clock()
        return s.deadline - self.config.round_timeout * (2 if s.extended else 1)

    def _update_gauges(self) -> None:
        m, s = self.metrics, self.state
        m.round.set(s.round_id)
        m.weights_version.set(self.model.version)
        m.online.set(len(s.online))
        current = self.ledger.round_id == s.round_id
        m.participants.set(len(self.ledger.participants) if current else 0)
        m.samples.set(self.ledger.samples if current else 0)


def _durable(state: dict[str, Any]) -> dict[str, Any]:
    """The part of the round state worth an fsync of round.json on its own. Who is online
    is not: after a restart the broker hands every retained presence (or Last Will) to the
    aggregator again, so a presence change alone does not rewrite round.json (that cost
    grew with the fleet); the online set is written with the next change that matters."""
    return {k: v for k, v in state.items() if k != "online"}
