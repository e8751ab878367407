"""The aggregator service: the I/O shell around the pure :class:`~aggregator.round.Round`.

One worker (the caller of :meth:`AggregatorService.run`) consumes
``transport.get(timeout)``; paho's network runs on the transport's own thread. The loop
reads like a round: **receive** a message (an update's chunks go through the intake to
:meth:`Round.admit`, a presence to :meth:`Round.seen`) or let time pass
(:meth:`Round.tick`), then carry out what the round decided: **configure and send** a
round (announce), **aggregate** and **publish** the new global model, record history,
finish. Every decision is the round's; this module only does I/O.

Crash safety (docs/aggregator.md): the MQTT session is durable and acknowledged by
hand. A chunk that does not complete a transfer is acknowledged on arrival (it lives
only in memory; after a crash the client re-sends the whole update). The chunk that
completes an update is acknowledged only after the update is either stored (the round
stores it through its journal before counting it) or rejected. Effects of closing a
round are idempotent (checkpoint, then publish, then a history line per round id, then
``round.json``), so a crash anywhere replays to the same result. A round is published
only after ``round.json`` holds it (announced or extended), so devices are never told a
round the state directory does not know.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aggregator import accounting, checkpoint, schedule
from aggregator.config import AggregatorConfig
from aggregator.global_model import GlobalModel
from aggregator.intake import Addressee, Arrived, Intake, Refused
from aggregator.ledger import LEDGER_FILE, PrivacyLedger
from aggregator.metrics import ServiceMetrics
from aggregator.modelfile import ModelFile
from aggregator.privacy import add_noise
from aggregator.publish import Publisher, RunMessages, manifest_signing_key
from aggregator.reasons import Reason, Rejection
from aggregator.recovery import restore
from aggregator.round import Round
from aggregator.run import Run, begin, load_initial_weights
from aggregator.schedule import Action, Phase
from aggregator.stages import NO_STAGES, Stage, StageHook
from aggregator.store import AggregatorStore
from edge_client import protocol
from edge_client.errors import ConfigError, ModelError, ProtocolError
from edge_client.model import embed_weights
from edge_client.protocol import PRIVACY_BUDGET
from edge_client.transfer import ReassemblyLimits
from edge_client.transport import Message, Transport

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
STATUS_EVERY_S = 1.0  # the retained status is republished at most this often while it changes
ALREADY_ACCEPTED = "already accepted"


class AggregatorService:
    """Runs a federation: see the module docstring."""

    def __init__(self, config: AggregatorConfig, transport: Transport, model_file: ModelFile,
                 *, store: AggregatorStore | None = None, metrics: ServiceMetrics | None = None,
                 clock: Callable[[], float] = time.time,
                 stages: StageHook = NO_STAGES, run: Run | None = None) -> None:
        """Restore the state directory; nothing is published until :meth:`run`.

        ``run``: the state directory's run when the caller began it (to know whether its
        broker session starts clean); else it is begun here.

        Raises:
            ConfigError: bad hyperparameters, signing key, state directory, or a model or
                ``--initial-weights`` the directory's run cannot take.
        """
        self.config, self.transport, self.clock = config, transport, clock
        self.stages = stages
        self.model_file = model_file
        self.store = store or AggregatorStore(config.state_dir)
        self.run_info = run or begin(self.store, model_file.sha256, model_file.data,
                                     config.initial_weights)
        run_id = self.run_info.run_id
        self.metrics = metrics or ServiceMetrics()
        self.topics = config.topics()
        meta = model_file.metadata
        # what the devices standardise with, stated in every history line (docs/data.md)
        self._scaling = None if meta.schema is None else (
            "shared" if meta.schema.shared_scaling else "per-site")
        if config.batch_size is not None and config.batch_size != meta.batch_size:
            log.warning("--batch-size %d differs from the model file's fixed batch size %d",
                        config.batch_size, meta.batch_size)
        self.messages = RunMessages(
            config.federation, model_file.sha256, len(model_file.data), config.codec,
            config.hyperparameters(meta.batch_size, meta.learning_rate),
            manifest_signing_key(config.signing_key), run_id)
        self.publisher = Publisher(transport, self.topics, max_payload=config.max_payload,
                                   run_id=run_id, on_sent=self._sent)
        reassembly = ReassemblyLimits(max_transfer_bytes=model_file.max_update_bytes(),
                                      timeout=max(30.0, 2 * config.round_timeout))
        self.intake = Intake(config.codec, reassembly, config.limits(),
                             selected=lambda sender: sender in self.round.state.selected)
        self.strategy = config.strategy_config()
        initial = model_file.initial_weights
        if config.initial_weights is not None:
            initial = load_initial_weights(config.initial_weights,
                                           {t.name: t.shape for t in model_file.spec})
        restored = restore(self.store, config.federation, initial, model_file.spec,
                           config.rounds)
        self.model = restored.model
        self.ledger = _ledger(config, self.store, restored.state.aggregated)
        ledger = self.ledger
        self.round = Round(
            config.rounds_config(model_file.sha256, run_id,
                                 ledger.sampling_seed if ledger else None),
            self.strategy, model_file.spec, config.limits(), _TimedJournal(self.store, stages),
            restored.state, now=clock(), bounds=config.bounds(),
            dp_clip=ledger.clip if ledger else None,
            budget=ledger.affordable if ledger else None)
        self._stored = restored.accepted
        self._recorded = set(restored.recorded_rounds)
        self._finishing = False  # the last round closed in this process
        self._told_presence_cap = False
        #: set on every (re)connect: the broker may have lost the retained state
        #: (a restart without persistence), so the next tick publishes it again
        self.republish = threading.Event()
        self._status_due, self._status_at = True, -1e18
        self._last_round = _summary(restored.last_record) if restored.last_record else {}
        self._saved = self.round.state.to_dict()

    # -- the loop -----------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Serve until the last round closes or ``stop`` is set.

        Returns:
            0 (finished, or stopped on request).
        """
        self.start()
        if self.finished and not self._finishing:
            log.info("run %s already finished %d rounds; nothing to do (give --rounds above "
                     "%d to extend it)", self.run_info.run_id, self.state.round_id,
                     self.state.round_id)
        next_tick = 0.0
        while not stop.is_set() and not self.finished:
            with self.stages.stage(Stage.WAIT):
                message = self.transport.get(timeout=max(0.0, next_tick - time.monotonic()))
            if message is not None:
                self.handle(message)
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + TICK_SECONDS
        state = self.round.state
        log.info("stopping: round=%d phase=%s version=%d", state.round_id, state.phase.value,
                 self.model.version)
        return 0

    @property
    def finished(self) -> bool:
        """Whether the last round has closed."""
        return self.round.finished

    @property
    def finish_reason(self) -> str:
        """Why the run finished (``rounds``, ``privacy budget``), or ``""`` while it runs."""
        if not self.finished:
            return ""
        early = self.ledger is not None and self.state.round_id < self.config.rounds
        return PRIVACY_BUDGET if early else "rounds"

    @property
    def state(self) -> schedule.RoundState:
        """The round state machine's state."""
        return self.round.state

    def start(self) -> None:
        """Subscribe, publish the current state, re-count the open round's stored updates."""
        self.transport.subscribe(self.topics.presence_filter())
        self.transport.subscribe(self.topics.update_filter())
        self.republish.clear()  # the connection that just came up gets it now
        self._publish_current()
        self._carry_out(self.round.restore(self._stored, self.clock()))
        self._stored = ()
        if (self.ledger is not None and self.state.phase is Phase.COLLECTING
                and self.ledger.has(self.state.round_id)):  # spent before a crash: close it
            self.tick()  # now, with the updates it was noised for, before any other comes

    def tick(self) -> None:
        """Let time pass: deadlines are checked against the clock, expired transfers
        answered; after a reconnect the retained state goes out again."""
        if self.republish.is_set():
            self.republish.clear()
            log.info("reconnected: publishing the retained state again")
            self._publish_current()
        for expired in self.intake.expire(self.clock()):  # an incomplete transfer: answered
            self.round.count_rejection(expired.rejection.reason)
            self._refuse(expired.to, expired.rejection, None)
        self._carry_out(self.round.tick(self.clock()))
        self._publish_status()

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
        self._status_due = True
        self.metrics.bytes_in.inc(len(message.payload))
        self.round.count_bytes(len(message.payload))
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

    # -- receive: presence ------------------------------------------------------
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
        if presence.online and presence.samples > self.config.max_num_samples:
            log.warning("client=%s announces %d samples, above --max-num-samples %d: if "
                        "selected, its update weighs as %d samples at most", client_id,
                        presence.samples, self.config.max_num_samples,
                        self.config.max_num_samples)
        self._carry_out(self.round.seen(client_id, presence.online, self.clock()))

    def _invalid(self, kind: str, text: str, message: Message | None = None) -> None:
        log.warning("invalid %s message %s", kind, text)
        self.metrics.invalid.labels(kind).inc()
        if message is not None:
            self.transport.ack(message)

    # -- receive: updates ---------------------------------------------------------
    def _on_chunk(self, sender: str, message: Message) -> None:
        evicted = self.intake.reassembler.evicted
        with self.stages.stage(Stage.INTAKE):
            outcome = self.intake.take(sender, message.payload, self.clock())
        if self.intake.reassembler.evicted > evicted:
            self.metrics.evicted.inc(self.intake.reassembler.evicted - evicted)
        if isinstance(outcome, Refused):
            self.round.count_rejection(outcome.rejection.reason)
            self._refuse(outcome.to, outcome.rejection, message)
            return
        if not isinstance(outcome, Arrived):  # a chunk held in memory, or a repeat
            self.transport.ack(message)
            return
        update, to = outcome.update, Addressee.of(outcome.update)
        with self.stages.stage(Stage.ADMIT):
            decision = self.round.admit(update, self.clock())
        if decision.rejection is not None and not decision.stored:
            log.error("update round=%d client=%s NOT stored (%s); not acknowledged",
                      update.round_id, sender, decision.rejection.message)
            self.metrics.rejected.labels(Reason.STORE.value).inc()
        elif decision.rejection is not None:
            self._refuse(to, decision.rejection, message)
        elif decision.resent:
            log.info("update round=%d client=%s re-sent, already accepted", update.round_id,
                     sender)
            self.transport.ack(message)
            self._reply(to, True, ALREADY_ACCEPTED)
        else:
            self.metrics.accepted.inc()
            log.info("update accepted round=%d client=%s samples=%d", update.round_id,
                     sender, update.num_samples)
            if update.num_samples > self.config.max_num_samples:
                log.warning("update round=%d client=%s claims %d samples, above "
                            "--max-num-samples %d: it weighs as %d samples at most",
                            update.round_id, sender, update.num_samples,
                            self.config.max_num_samples, self.config.max_num_samples)
            self.transport.ack(message)
            self._reply(to, True, "")
            self._carry_out(decision.actions)

    def _refuse(self, to: Addressee | None, rejection: Rejection,
                message: Message | None) -> None:
        log.warning("update rejected client=%s reason=%s: %s", to and to.client_id,
                    rejection.reason.value, rejection.message)
        self.metrics.rejected.labels(rejection.reason.value).inc()
        if message is not None:
            self.transport.ack(message)
        if to is not None:
            self._reply(to, False, rejection.reply_text())

    def _reply(self, to: Addressee, accepted: bool, reason: str) -> None:
        with self.stages.stage(Stage.REPLY):
            self.publisher.reply(self.messages.reply(to.round_id, to.client_id, to.nonce,
                                                     accepted, reason, to.run_id))

    # -- what the round decided ---------------------------------------------------
    def _carry_out(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, schedule.Announce):
                self._announce(action)
            elif isinstance(action, schedule.ExtendDeadline):
                log.info("round=%d quorum not met (%d accepted); deadline extended once",
                         action.round_id, action.accepted)
                self._publish_round()
            elif isinstance(action, schedule.Aggregate):
                self._aggregate(action)
            elif isinstance(action, schedule.SkipRound):
                log.warning("round=%d skipped: %d accepted, quorum %d", action.round_id,
                            action.accepted, action.min_clients)
                self._close_round("skipped")
            elif isinstance(action, schedule.PresenceRefused):
                self._presence_refused(action)
            elif isinstance(action, schedule.Finish):
                log.info("finished rounds=%d aggregated=%d skipped=%d", action.rounds,
                         action.aggregated, action.skipped)
                self._finish()
        self._save_state()
        if any(isinstance(a, (schedule.Aggregate, schedule.SkipRound)) for a in actions):
            self.tick()  # the next round's deadline counts from after this publish

    def _presence_refused(self, action: schedule.PresenceRefused) -> None:
        """Counted as ``fedge_invalid_messages{kind="presence_cap"}``; said once a run."""
        self.metrics.invalid.labels("presence_cap").inc()
        if not self._told_presence_cap:
            self._told_presence_cap = True
            log.warning("presence of %s refused: %d ids are online (--max-online; a flood "
                        "of made-up ids?); further refusals are only counted in "
                        "fedge_invalid_messages{kind=\"presence_cap\"}", action.client_id,
                        action.max_online)

    def _announce(self, action: schedule.Announce) -> None:
        self.stages.round_opened(action.round_id)
        self._publish_round()
        log.info("round=%d announced base=%d selected=%d deadline_in=%.1fs", action.round_id,
                 action.base_version, len(action.selected), action.deadline - self.clock())

    def _aggregate(self, action: schedule.Aggregate) -> None:
        with self.stages.stage(Stage.AGGREGATE):
            delta = self.round.delta()
            if self.ledger is not None:  # spent (fsync) before the noise exists
                participants = list(self.round.participants)
                unclipped = len(participants) - len(self.round.plan().clipped)
                noise = self.ledger.spend(action.round_id, self.round.population,
                                          participants, unclipped)
                delta = add_noise(delta, len(participants), noise)
            weights, server_state = self.strategy.apply(
                self.model.weights, delta, self.model.server_state)
        previous = self.model
        with self.stages.stage(Stage.ENCODE):
            self.model = GlobalModel.build(self.config.federation, action.new_version,
                                           weights, server_state)
        with self.stages.stage(Stage.CHECKPOINT):
            checkpoint.save(self.store, self.model)
        with self.stages.stage(Stage.PUBLISH):
            self.publisher.weights(self.model.version, self.model.payload)
        self._publish_manifest()
        self._clear_weights(previous.version - 1)
        log.info("round=%d aggregated participants=%d version=%d", action.round_id,
                 len(action.clients), self.model.version)
        self._close_round("aggregated")
        if self.ledger is not None:  # adaptive clipping moves C between rounds
            self.round.dp_clip = self.ledger.clip
        self.stages.round_closed(action.round_id)

    def _finish(self) -> None:
        """The run is over: the final model into ``final/``, then a finished manifest every
        device acts on, and no retained round left behind."""
        self._finishing = True
        if self.finish_reason == PRIVACY_BUDGET and self.ledger is not None:
            log.info("privacy budget: epsilon %.4g spent of %s at delta %g; another round "
                     "would exceed it, so the run finishes", self.ledger.epsilon,
                     self.ledger.settings.target_epsilon, self.ledger.settings.delta)
        self._save_final()
        self._publish_manifest()
        self.publisher.clear_round()
        self._publish_status(force=True)

    def _save_final(self) -> None:
        """``final/weights.npz`` and ``final/model.tflite`` (trainable, the final weights
        inside); an int8 inference model needs TensorFlow: ``fedge export --from-state``."""
        weights = {k: np.asarray(v, np.float32) for k, v in self.model.weights.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **weights)
        files = {"weights.npz": buffer.getvalue()}
        try:
            files["model.tflite"] = embed_weights(self.model_file.data, weights)
        except ModelError as e:  # the weights are kept; the deployable file can be made later
            log.error("final/model.tflite not written (%s); `fedge export --from-state %s` "
                      "makes it from final/weights.npz", e, self.store.root)
        self.store.save_final(files)
        log.info("final model (version %d) in %s/final", self.model.version, self.store.root)

    def _close_round(self, outcome: str) -> None:
        record = self.round.record(outcome, self.model.version, self.clock())
        record["run"] = self.run_info.run_id
        if self.ledger is not None:
            record["dp"] = self.ledger.report()
        if self._scaling is not None:
            record["scaling"] = self._scaling
        self.metrics.rounds.labels(outcome).inc()
        self.metrics.round_duration.observe(record["duration_s"])
        self._last_round = _summary(record)
        if record["round"] not in self._recorded:  # else written before a crash: replayed
            with self.stages.stage(Stage.HISTORY):
                self.store.append_history(record)
            self._recorded.add(record["round"])

    def _save_state(self) -> None:
        state = self.round.state.to_dict()
        if _durable(state) != _durable(self._saved):
            with self.stages.stage(Stage.SAVE_STATE):
                self.store.save_round_state(state)
            self._saved = state
        self._update_gauges()

    # -- publish ------------------------------------------------------------------
    def _publish_current(self) -> None:
        self.publisher.model_file(self.model_file.data, self.model_file.sha256)
        self.publisher.weights(self.model.version, self.model.payload)
        self._clear_weights(self.model.version - 2)
        self._publish_manifest()
        if self.round.state.phase is Phase.COLLECTING:
            self._publish_round()
        else:  # no round open: not this run's, nor one an earlier run left retained
            self.publisher.clear_round()
        if self.finished:
            self._save_final()  # again, in case the process died right after the last round
        self._publish_status(force=True)
        log.info("published model=%s version=%d round=%d phase=%s", self.model_file.sha256[:12],
                 self.model.version, self.state.round_id, self.state.phase.value)
        self._update_gauges()

    def _publish_manifest(self) -> None:
        with self.stages.stage(Stage.PUBLISH):
            self.publisher.manifest(self.messages.manifest(
                self.model.version, self.model.sha256, self.state.round_id,
                self.finish_reason))

    def _publish_status(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and not (self._status_due and now - self._status_at >= STATUS_EVERY_S):
            return
        s, collecting = self.state, self.state.phase is Phase.COLLECTING
        self.publisher.status(protocol.Status(
            federation=self.config.federation, run_id=self.run_info.run_id,
            round_id=s.round_id, phase=s.phase.value, weights_version=self.model.version,
            deadline=s.deadline or 0.0, selected=len(s.selected), accepted=len(s.accepted),
            rejected=dict(self.round.traffic.rejections) if collecting else {},
            online=len(s.online), last_round=self._last_round, updated_at=now,
            finished=self.finish_reason))
        self._status_due, self._status_at = False, now

    def _publish_round(self) -> None:
        """The round as the state says, after ``round.json`` holds that state: a crash right
        after the publish restarts into the round devices were told, not an older state
        that refuses their updates and announces another round of the same id."""
        self._save_state()
        with self.stages.stage(Stage.ANNOUNCE):
            self.publisher.round(self.messages.round(self.state))

    def _clear_weights(self, version: int) -> None:
        with self.stages.stage(Stage.CLEAR):
            saved = self.store.checkpoint(version) if version >= 0 else None
            if saved is not None:
                self.publisher.clear_weights(version, len(saved[0]))

    def _sent(self, size: int) -> None:
        self.metrics.bytes_out.inc(size)
        self.round.count_sent(size)

    def _update_gauges(self) -> None:
        m, s = self.metrics, self.state
        m.round.set(s.round_id)
        m.weights_version.set(self.model.version)
        m.online.set(len(s.online))
        collecting = s.phase is Phase.COLLECTING
        m.participants.set(len(self.round.participants) if collecting else 0)
        m.samples.set(self.round.samples if collecting else 0)
        if self.ledger is not None:
            m.dp_epsilon.set(self.ledger.epsilon)


class _TimedJournal:
    """The store as the round's journal, its writes timed as :attr:`Stage.STORE`."""

    def __init__(self, store: AggregatorStore, stages: StageHook) -> None:
        self.store, self.stages = store, stages

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        with self.stages.stage(Stage.STORE):
            self.store.save_accepted(round_id, client_id, payload)

    def accepted_payload(self, round_id: int, client_id: str) -> bytes | None:
        return self.store.accepted_payload(round_id, client_id)

    def accepted(self, round_id: int) -> list[tuple[str, bytes]]:
        return self.store.accepted(round_id)


def _ledger(config: AggregatorConfig, store: AggregatorStore,
            aggregated: int) -> PrivacyLedger | None:
    """The privacy ledger with DP on (Z computed from --dp-epsilon when not given).

    Raises:
        ConfigError: a DP run restarted without ``--dp-clip`` (it would publish models
            without noise after noised ones), or DP turned on for a run that already
            published models without it (no ε would cover those).
    """
    dp = config.dp_settings()
    has_ledger = (store.root / LEDGER_FILE).exists()
    if dp is None and has_ledger:
        raise ConfigError(f"{store.root} holds a differentially private run "
                          f"({LEDGER_FILE}); start it with its --dp-clip, --dp-delta and "
                          "--dp-noise-multiplier or --dp-epsilon")
    if dp is not None and not has_ledger and aggregated:
        raise ConfigError(f"--dp-clip: {store.root} already aggregated {aggregated} rounds "
                          "without differential privacy, which no epsilon covers; give a new "
                          "--state-dir (with --initial-weights to start from its model)")
    if dp is None:
        return None
    z = dp.noise_multiplier
    if z is None:
        assert dp.target_epsilon is not None  # DpSettings requires one of the two
        z = accounting.noise_multiplier(dp.target_epsilon, dp.delta, dp.sampling_rate,
                                        config.rounds)
        log.info("privacy: noise multiplier %.4f lets %d rounds at q=%g fit in epsilon %g "
                 "(delta %g)", z, config.rounds, dp.sampling_rate, dp.target_epsilon, dp.delta)
    return PrivacyLedger(store.root, dp, z)


def _summary(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a history line that the retained status carries."""
    numbers = {"round": record.get("round", 0), "version": record.get("version", 0),
               "participants": len(record.get("participants", ())),
               "samples": record.get("samples", 0), **record.get("metrics", {})}
    if "dp" in record:
        numbers["dp_epsilon"] = record["dp"]["epsilon"]
    return {k: float(v) for k, v in list(numbers.items())[:64]
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _durable(state: dict[str, Any]) -> dict[str, Any]:
    """The part of the round state worth an fsync of round.json on its own. Who is online
    is not: after a restart the broker hands every retained presence (or Last Will) to the
    aggregator again, so a presence change alone does not rewrite round.json (that cost
    grew with the fleet); the online set is written with the next change that matters."""
    return {k: v for k, v in state.items() if k != "online"}
