"""The participation loop of an edge device, written against small ports.

:class:`EdgeClient` reads the retained manifest (refusing one whose signature does not
verify, when given ``verify``: it then keeps its model and weights), fetches
the model file and the global weights when a trusted manifest changes them (checking
their SHA-256 against it), trains when a round selects it, publishes its quantized
delta in chunks, and waits for the aggregator's reply. It talks to a
:class:`~edge_client.transport.Transport`, keeps what must survive a restart in a
:class:`~edge_client.state.StateDir`, and loads models through a factory, so tests
can run it on in-memory fakes.

Model files: every one passes :class:`~edge_client.admission.ModelAdmission` (checks,
a crash-proof probe in a child process on its first load, refusals remembered in the
state dir) before it is loaded or stored; a stored model that fails at start is moved
aside, and a manifest naming a refused model is not followed: the device keeps running
and waits for another model.

Signatures: with ``verify`` the device acts only on what a trusted key signed: the
manifest, the round announcement (its hyperparameters, deadline and selection) and the
reply to its update. Anything else is refused and logged; a refused round is not
trained and not marked done, so the real round is trained when it comes, and a refused
reply leaves the update pending (it is re-sent until a signed reply or the deadline).

Downloads: the model and weights transfers the manifest announces (transfer id, SHA-256,
model size) are reassembled in slots of their own, so junk chunks cannot crowd them out;
with ``verify`` and a trusted manifest no other chunk is buffered. A named transfer that
fails, or whose chunks came before its manifest and were dropped, is fetched again by
subscribing anew (the broker re-sends retained chunks), at most every ``REFETCH_S``.

Runs: every manifest, round and reply names the run it belongs to. A model file or
weights that complete before a manifest names them (a device's old broker session
delivers what an earlier run queued, in any order) are **held**, not dropped, until a
trusted manifest names their SHA-256; a round or reply of another run than the
manifest's is ignored. A finished manifest is the end of the run: the client saves its
weights as ``final/weights.bin`` and stops, whatever ``max_rounds`` says.

Delivery contract: an update is written to the outbox before it is published and
removed only when the aggregator replied or its round is over. When no reply
comes within ``resend_after`` seconds while the round is open (an aggregator
crash may have dropped a partial transfer), the same update (same nonce) is
published again under a new transfer id; the aggregator counts a nonce once. A reply
refusing it as ``busy`` (temporary: the aggregator had no room for the transfer) keeps
it pending: it is re-sent after ``BUSY_RETRY_S``, doubling with each busy reply up to
``resend_after`` (jittered), until the round's deadline; any other refusal is final.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_client.admission import ModelAdmission
from edge_client.errors import FedgeError, ModelError, ProtocolError
from edge_client.protocol import (
    Chunk,
    Manifest,
    Reply,
    Round,
    SignedMessage,
    Topics,
    Update,
    Weights,
    is_clear,
    update_transfer_id,
    weights_transfer_id,
)
from edge_client.quantize import dequantize_update, residual_from_bytes, residual_to_bytes
from edge_client.state import MODEL_FILE, StateDir
from edge_client.training import Array, LocalSplit, TrainedUpdate, Trainer, train_round
from edge_client.transfer import DEFAULT_MAX_PAYLOAD, ChunkRejected, Reassembler, split
from edge_client.transport import Message, Transport, TransportError

log = logging.getLogger(__name__)
NAMED, UNNAMED = "named", "unnamed"  # reassembly slots: what the manifest names, the rest
MAX_DROPPED = 256  # SHA-256s of transfers not buffered, remembered to fetch them again
REFETCH_S = 10.0
FINAL_WEIGHTS = "final/weights.bin"  # the run's final global weights (a Weights message)
MAX_HELD_BYTES = 128 * 1024 * 1024  # transfers no manifest named yet, oldest dropped first
WAITING_LOG_S = 30.0  # how often a client without a model says what it waits for
BUSY_RETRY_S = 1.0  # first re-send after a busy reply; doubles per busy reply


@dataclass(frozen=True)
class ClientSettings:
    """What the loop needs beyond its ports."""

    client_id: str
    topics: Topics
    max_payload: int = DEFAULT_MAX_PAYLOAD
    once: bool = False
    max_rounds: int | None = None
    resend_after: float = 20.0
    presence: Callable[[bool], bytes] = field(default=lambda online: b"")
    #: raises FedgeError for a manifest, round or reply not signed by a trusted key;
    #: None: trust every one
    verify: Callable[[SignedMessage], None] | None = None


@dataclass
class _Pending:
    """An update published (or to publish) and not yet answered."""

    update: Update
    payload: bytes
    path: Path
    attempts: int = 0
    last_sent: float = -1e18
    restored: bool = False
    next_send: float = -1e18  # when it is (re-)sent next
    busy: int = 0  # busy replies so far


class EdgeClient:
    """See the module docstring."""

    def __init__(self, settings: ClientSettings, transport: Transport, state: StateDir,
                 data: LocalSplit, load_model: Callable[[bytes], Trainer], *,
                 clock: Callable[[], float] = time.time, rng: np.random.Generator,
                 test: tuple[Array, Array] | None = None,
                 probe: Callable[[bytes], None] | None = None) -> None:
        """``probe`` checks a new model file in a child process (see
        :func:`edge_client.probe.probe_model`); None loads it directly (in-memory tests)."""
        self.s, self.t, self.state, self.data = settings, transport, state, data
        self.test = test  # --eval-data: the global model's counts on it go with each update
        self._clock, self._rng = clock, rng
        self.admission = ModelAdmission(state, load_model, probe, clock=clock)
        self._refusals_told: set[str] = set()
        self._chunks = Reassembler()
        self.manifest: Manifest | None = None
        self.round: Round | None = None
        self.model: Trainer | None = None
        self.model_sha: str | None = None
        self.version: int | None = None
        self._global: dict[str, Array] | None = None
        self._weights_pending: Weights | None = None
        self._pending: _Pending | None = None
        self._done_rounds: set[tuple[str, int]] = set()  # (run id, round id)
        self._held: dict[str, tuple[str, bytes]] = {}  # SHA-256 -> (kind, payload)
        self._dropped: OrderedDict[str, str] = OrderedDict()  # SHA-256 -> kind, not buffered
        self._refetched: dict[str, float] = {}  # kind -> when its transfer was last refetched
        self._refetch_due: dict[str, float] = {}
        self._chunks_seen = 0
        self._next_waiting_log = clock() + WAITING_LOG_S
        self.final_saved = False
        self.results: list[tuple[int, bool, str]] = []
        self._subscribed: set[str] = set()
        self.fatal: ModelError | None = None
        self.announce_presence = threading.Event()
        self.announce_presence.set()
        self._restore()

    # -- state across restarts ---------------------------------------------
    def _restore(self) -> None:
        blob = self.state.read(MODEL_FILE)
        if blob is not None:
            digest = hashlib.sha256(blob).hexdigest()
            try:
                self._install_model(blob, digest, stored=True)
            except FedgeError as e:
                self.fatal = None  # a new model may come from the federation
                if self.admission.refusal(digest) is None:
                    log.warning("ignoring the stored model: %s", e)
                else:
                    aside = self.state.set_aside(MODEL_FILE)
                    log.error("moved the stored model aside to %s, never to be loaded "
                              "again: %s", aside, e)
        stored = self.state.read("global.bin")
        if stored is not None and self.model is not None:
            try:
                self._apply_weights(Weights.decode(stored))
            except FedgeError as e:
                log.warning("ignoring the stored global weights: %s", e)
        for _, path in self.state.outbox():
            try:
                update = Update.decode(path.read_bytes())
            except (OSError, ProtocolError) as e:
                log.warning("dropping unreadable outbox file %s: %s", path, e)
                self.state.outbox_done(path)
                continue
            self._pending = _Pending(update, path.read_bytes(), path, restored=True)
            log.info("round %d: an unsent update waits in the outbox", update.round_id)

    # -- the loop -----------------------------------------------------------
    def run(self, stop: threading.Event, *, poll: float = 0.2) -> int:
        """Runs until ``stop`` is set or --once/--max-rounds is satisfied.

        Returns:
            0 when done (or stopped); 1 when --once ended without an accepted update.

        Raises:
            ModelError: the federation's model does not fit the local data (found before
                any training; a configuration problem that waiting will not fix).
        """
        tp = self.s.topics
        for f in (tp.manifest(), tp.round(), tp.reply(self.s.client_id)):
            self._subscribe(f)
        while not stop.is_set():
            if self.announce_presence.is_set():
                self.announce_presence.clear()
                self.t.publish(tp.presence(self.s.client_id), self.s.presence(True),
                               retain=True, timeout=None)
            msg = self.t.get(timeout=poll)
            if msg is not None:
                self._handle_safely(msg)
            self._refetch_now()
            self._participate()
            self._send_pending()
            self._say_what_it_waits_for()
            if self.fatal is not None:
                raise self.fatal
            if self.final_saved:
                log.info("the run finished; final weights v%s in %s/%s", self.version,
                         self.state.root, FINAL_WEIGHTS)
                return 0
            if self._finished():
                return 0 if all(ok for _, ok, _ in self.results) else 1
        return 0

    def _finished(self) -> bool:
        accepted = sum(ok for _, ok, _ in self.results)
        return (self.s.once and len(self.results) >= 1) or (
            self.s.max_rounds is not None and accepted >= self.s.max_rounds)

    def _say_what_it_waits_for(self) -> None:
        now = self._clock()
        if self.model is not None or now < self._next_waiting_log:
            return
        self._next_waiting_log = now + WAITING_LOG_S
        m = self.manifest
        if m is None:
            log.warning("no model yet: waiting for a trusted manifest on %s (is the "
                        "aggregator of federation %r running?)", self.s.topics.manifest(),
                        self.s.topics.federation)
        elif self.admission.refusal(m.model_sha256) is not None:
            log.warning("no model yet: run %s names model %s…, which this device refused; "
                        "waiting for another model", m.run_id or "-", m.model_sha256[:12])
        else:
            log.warning("no model yet: run %s names model %s…; %d chunk(s) received, %d "
                        "held transfer(s) do not match it", m.run_id or "-",
                        m.model_sha256[:12], self._chunks_seen, len(self._held))

    def _subscribe(self, topic_filter: str, *, replaces: str | None = None) -> None:
        """Subscribes once; ``replaces`` names a kind whose older filter is dropped."""
        if topic_filter in self._subscribed:
            return
        if replaces is not None:
            for old in [f for f in self._subscribed if f.split("/")[-3:-2] == [replaces]]:
                self._subscribed.discard(old)
                self.t.unsubscribe(old)
        self._subscribed.add(topic_filter)
        self.t.subscribe(topic_filter)

    def _handle_safely(self, msg: Message) -> None:
        try:
            self._handle(msg)
        except FedgeError as e:  # never let one bad message stop the device
            log.warning("ignoring message on %s: %s", msg.topic, e)

    def _handle(self, msg: Message) -> None:
        ref = self.s.topics.parse(msg.topic)
        if is_clear(msg.payload):
            if ref.kind == "round":  # no round open
                self.round = None
            return
        if ref.kind == "manifest":
            self._on_manifest(Manifest.decode(msg.payload))
        elif ref.kind == "round":
            self._on_round(Round.decode(msg.payload))
        elif ref.kind in ("model", "weights"):
            self._on_chunk(ref.kind, Chunk.decode(msg.payload))
        elif ref.kind == "reply" and ref.client_id == self.s.client_id:
            self._on_reply(Reply.decode(msg.payload))

    # -- model and weights ----------------------------------------------------
    def _named(self, kind: str) -> tuple[str, str, int | None] | None:
        """The (transfer id, SHA-256, size if known) of the ``kind`` transfer the current
        manifest announces, or None without a manifest."""
        m = self.manifest
        if m is None:
            return None
        if kind == "model":
            return m.model_sha256, m.model_sha256, m.model_size
        return weights_transfer_id(m.run_id, m.weights_version), m.weights_sha256, None

    def _on_chunk(self, kind: str, chunk: Chunk) -> None:
        """Buffers a model or weights chunk. The transfer the manifest announces has its own
        slot (junk cannot fill it); a verifying device buffers nothing else once it has a
        trusted manifest; any other device holds other transfers in bounded slots."""
        self._chunks_seen += 1
        named, now = self._named(kind), self._clock()
        if named is not None and chunk.sha256 == named[1]:
            if chunk.transfer_id != named[0] or named[2] not in (None, chunk.total_size):
                raise ProtocolError(f"{kind} chunk under the manifest's SHA-256 "
                                    f"{chunk.sha256[:12]}… but transfer id "
                                    f"{chunk.transfer_id!r} or size {chunk.total_size} is not "
                                    "the manifest's")
            try:
                payload = self._chunks.accept(NAMED, chunk, now)
            except ChunkRejected:  # a forged chunk came first, or the whole failed its hash
                self._chunks.drop(NAMED, chunk.transfer_id)
                self._refetch(kind)
                raise
        elif self.manifest is not None and self.s.verify is not None:
            self._dropped[chunk.sha256] = kind
            return  # not named by the trusted manifest: not buffered at all
        else:
            try:
                payload = self._chunks.accept(UNNAMED, chunk, now)
            except ChunkRejected:
                self._dropped[chunk.sha256] = kind  # fetched again if a manifest names it
                raise
        while len(self._dropped) > MAX_DROPPED:
            self._dropped.popitem(last=False)
        if payload is not None:
            self._on_transfer(kind, payload)

    def _refetch(self, kind: str) -> None:
        """Subscribes again to the ``kind`` transfer the manifest names: the broker sends
        its retained chunks again (at most every REFETCH_S seconds, so junk cannot turn
        into a stream of downloads)."""
        self._refetch_due[kind] = max(self._clock(),
                                      self._refetched.get(kind, -1e18) + REFETCH_S)
        self._refetch_now()

    def _refetch_now(self) -> None:
        m, now = self.manifest, self._clock()
        for kind, due in list(self._refetch_due.items()):
            if now < due or m is None:
                continue
            del self._refetch_due[kind]
            self._refetched[kind] = now
            topic_filter = (self.s.topics.model_filter(m.model_sha256) if kind == "model"
                            else self.s.topics.weights_filter(m.weights_version))
            log.info("fetching the %s transfer again (%s)", kind, topic_filter)
            self._subscribed.add(topic_filter)
            self.t.subscribe(topic_filter)

    def _on_manifest(self, m: Manifest) -> None:
        if m.federation != self.s.topics.federation or not self._trusted(m):
            return
        if self.manifest is None or self.manifest.run_id != m.run_id:
            log.info("run %s of federation %s%s", m.run_id or "-", m.federation,
                     " (finished)" if m.finished else "")
        self.manifest = m
        refusal = self.admission.refusal(m.model_sha256)
        if refusal is not None:
            if m.model_sha256 not in self._refusals_told:
                self._refusals_told.add(m.model_sha256)
                log.error("the manifest names model %s…, which was refused earlier (%s); "
                          "not downloading it, waiting for another model (delete "
                          "%s/models.refused to try it again)", m.model_sha256[:12], refusal,
                          self.state.root)
        elif m.model_sha256 != self.model_sha:
            log.info("new model %s… announced; downloading", m.model_sha256[:12])
            self._subscribe(self.s.topics.model_filter(m.model_sha256), replaces="model")
        if m.weights_version != self.version:
            self._subscribe(self.s.topics.weights_filter(m.weights_version), replaces="weights")
        for digest in (m.model_sha256, m.weights_sha256):  # named now: take what was held
            held = self._held.pop(digest, None)
            if held is not None:
                self._on_transfer(*held)
            elif digest in self._dropped:  # its chunks came before this manifest named it
                self._refetch(self._dropped.pop(digest))
        if m.finished and self.version == m.weights_version:
            self._save_final()

    def _hold(self, kind: str, digest: str, payload: bytes) -> None:
        """Keeps a transfer no trusted manifest names (yet): an earlier run's, or this one's
        arriving before its manifest."""
        self._held[digest] = (kind, payload)
        while sum(len(p) for _, p in self._held.values()) > MAX_HELD_BYTES:
            self._held.pop(next(iter(self._held)))
        log.debug("holding a %s transfer %s… no manifest names yet", kind, digest[:12])

    def _trusted(self, message: SignedMessage) -> bool:
        """With ``verify``, only what a trusted key signed is acted on; the rest is logged."""
        if self.s.verify is None:
            return True
        try:
            self.s.verify(message)
        except FedgeError as e:
            log.error("refusing %s (key id %s): %s; %s", self._describe(message),
                      message.key_id or "-", e, self._keeping(message))
            return False
        return True

    def _describe(self, message: SignedMessage) -> str:
        if isinstance(message, Manifest):
            return (f"manifest for model {message.model_sha256[:12]}… weights "
                    f"v{message.weights_version}")
        if isinstance(message, Round):
            h = message.hyperparameters
            return (f"round {message.round_id} of run {message.run_id or '-'} (epochs "
                    f"{h.epochs}, learning rate {h.learning_rate:g})")
        assert isinstance(message, Reply)
        return (f"reply for round {message.round_id} "
                f"({'accepted' if message.accepted else 'not counted: ' + message.reason})")

    def _keeping(self, message: SignedMessage) -> str:
        if isinstance(message, Manifest):
            return (f"keeping model {f'{self.model_sha[:12]}…' if self.model_sha else '(none)'}"
                    f" weights v{self.version}")
        if isinstance(message, Round):
            return "not training it"
        return "the update stays pending"

    def _on_transfer(self, kind: str, payload: bytes) -> None:
        m = self.manifest
        digest = hashlib.sha256(payload).hexdigest()
        wanted = None if m is None else m.model_sha256 if kind == "model" else m.weights_sha256
        if m is None or digest != wanted:
            self._hold(kind, digest, payload)
            return
        if kind == "model":
            if not self._install_model_safely(payload, digest):
                return
            if self._weights_pending is not None:
                self._apply_weights(self._weights_pending)
        else:
            weights = Weights.decode(payload)
            if weights.version != m.weights_version:
                raise ProtocolError(f"weights of version {weights.version} under the "
                                    f"manifest's hash of version {m.weights_version}")
            self.state.write("global.bin", payload)
            if self.model is None:
                self._weights_pending = weights
            else:
                self._apply_weights(weights)
            if m.finished:
                self._save_final()

    def _save_final(self) -> None:
        payload = self.state.read("global.bin")
        if payload is not None and not self.final_saved:
            self.state.write(FINAL_WEIGHTS, payload)
            self.final_saved = True

    def _install_model_safely(self, blob: bytes, digest: str) -> bool:
        """Installs and stores a model from the federation; False when it was refused
        (logged and remembered by the admission: the device waits for another one)."""
        try:
            self._install_model(blob, digest)
        except ModelError:
            if self.fatal is not None:
                raise
            return False
        self.admission.keep(blob, digest)
        return True

    def _install_model(self, blob: bytes, digest: str, *, stored: bool = False) -> None:
        model = self.admission.load(blob, digest, stored=stored)
        try:
            model.check_data(self.data.x_train, self.data.y_train)
        except ModelError as e:
            self.fatal = ModelError(f"the federation's model does not fit the local data: {e}")
            raise self.fatal from e
        self.model, self.model_sha, self.version = model, digest, None
        if stored:
            self.admission.keep(blob, digest)  # marks a file stored by an older fedge probed
        log.info("model %s… loaded", digest[:12])

    def _apply_weights(self, weights: Weights) -> None:
        assert self.model is not None
        values = dequantize_update(weights.tensors)
        self.model.set_weights(values)
        self._global = values
        self.version, self._weights_pending = weights.version, None
        log.info("global weights v%d applied", weights.version)

    # -- rounds -----------------------------------------------------------------
    def _on_round(self, r: Round) -> None:
        if r.federation == self.s.topics.federation and self._trusted(r):
            self.round = r

    def _participate(self) -> None:
        r, m = self.round, self.manifest
        if (r is None or m is None or (r.run_id, r.round_id) in self._done_rounds
                or self.model is None or not r.selects(self.s.client_id)
                or self._clock() >= r.deadline):
            return
        if r.run_id != m.run_id:
            log.info("ignoring round %d of run %s: the manifest is of run %s", r.round_id,
                     r.run_id or "-", m.run_id or "-")
            self._done_rounds.add((r.run_id, r.round_id))
            return
        if self._pending is not None and self._pending.update.round_id == r.round_id:
            return
        if r.model_sha256 != self.model_sha or r.weights_version != self.version:
            return  # the matching model/weights are still on their way
        try:
            trained = self._train(r)
        except FedgeError as e:
            log.error("round %d: cannot train: %s", r.round_id, e)
            self._done_rounds.add((r.run_id, r.round_id))
            return
        payload = trained.update.encode()
        path = self.state.outbox_put(r.round_id, trained.update.nonce.hex(), payload)
        self.state.write("residual.bin", residual_to_bytes(trained.residual))
        self._pending = _Pending(trained.update, payload, path)

    def _train(self, r: Round) -> TrainedUpdate:
        assert self.model is not None and self._global is not None
        self.model.set_weights(self._global)  # from the global weights, every time
        raw = self.state.read("residual.bin")
        residual = residual_from_bytes(raw) if raw else {}
        if residual and set(residual) != set(self._global):
            residual = {}  # a new model architecture: the old residual does not apply
        return train_round(self.model, self.data, r, client_id=self.s.client_id,
                           residual=residual, rng=self._rng, test=self.test)

    def _send_pending(self) -> None:
        p, r, m, now = self._pending, self.round, self.manifest, self._clock()
        if p is None:
            return
        if m is not None and m.run_id != p.update.run_id:
            self._close(p, False, f"run {p.update.run_id or '-'} is over")
            return
        if r is None:
            if m is not None and m.finished:
                self._close(p, False, "the run finished before a reply arrived")
            return
        if r.round_id != p.update.round_id or now >= r.deadline:
            if r.round_id >= p.update.round_id:
                self._close(p, False, "round closed before a reply arrived")
            return
        if now < p.next_send:
            return
        tid = update_transfer_id(p.update.round_id, p.update.nonce, p.attempts)
        p.attempts, p.last_sent = p.attempts + 1, now
        p.next_send = now + self.s.resend_after
        try:
            for chunk in split(p.payload, tid, max_payload=self.s.max_payload):
                self.t.publish(self.s.topics.update(self.s.client_id), chunk, qos=1,
                               timeout=60.0)
        except TransportError as e:  # kept in the outbox; paho re-sends after a reconnect
            log.warning("round %d: publishing the update failed (%s); will retry",
                        p.update.round_id, e)
            return
        log.info("round %d: update published (%d bytes, attempt %d)", p.update.round_id,
                 len(p.payload), p.attempts)

    def _on_reply(self, reply: Reply) -> None:
        p = self._pending
        if p is None or reply.nonce != p.update.nonce or reply.run_id != p.update.run_id:
            return
        if not self._trusted(reply):
            return
        if reply.temporary:
            self._busy(p, reply.reason)
        else:
            self._close(p, reply.accepted, reply.reason)

    def _busy(self, p: _Pending, reason: str) -> None:
        """A temporary refusal: the update stays pending, re-sent after a back-off that
        doubles per busy reply, at most ``resend_after`` (jittered: a crowd that was refused
        together does not come back together)."""
        backoff = min(self.s.resend_after, BUSY_RETRY_S * 2 ** p.busy)
        jitter = random.Random(p.update.nonce + bytes([p.busy % 256])).uniform(0.75, 1.0)
        p.busy += 1
        p.next_send = self._clock() + backoff * jitter
        log.warning("round %d: aggregator busy (%s); re-sending in %.1f s", p.update.round_id,
                    reason, backoff * jitter)

    def _close(self, p: _Pending, accepted: bool, reason: str) -> None:
        rid = p.update.round_id
        if accepted:
            log.info("round %d: update accepted %s", rid, f"({reason})" if reason else "")
        else:
            log.warning("round %d: update not counted: %s", rid, reason)
        self.state.outbox_done(p.path)
        self._pending = None
        self._done_rounds.add((p.update.run_id, rid))
        if accepted or not p.restored:  # a stale update left from before a restart
            self.results.append((rid, accepted, reason))
