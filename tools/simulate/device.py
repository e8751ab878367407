"""A simulated device: fedge's real wire protocol without training, for simulate and bench.

A :class:`SimDevice` talks through a :class:`Link` (the Transport port plus crash and
reconnect). It announces itself with a retained presence (its Last Will, set by the link,
says offline), reads the retained manifest and round, and when a round selects it
publishes a chunked update and waits for the reply, exactly as ``fedge-client`` does on
the wire. The update's tensors are precomputed quantized random deltas
(:class:`UpdateSource`), so a thousand devices fit in a few processes.

Faults (:class:`Faults`) are drawn per device and round from ``(seed, device, round)``,
so a run is reproducible: a device may skip the round (dropout), answer late (slow),
publish only some chunks and vanish without DISCONNECT until the round's deadline has
passed (crash mid-upload), or publish its update twice (same nonce, new transfer id).
Everything a device does is reported as a JSON-able dict through ``report``.

A device can also serve the transport floor of ``fedge bench round``: a Round on
``floor_topics`` makes it publish precomputed chunks of the same size, nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from edge_client.client import BUSY_RETRY_S
from edge_client.errors import ProtocolError
from edge_client.protocol import CODECS, Manifest, Presence, Reply, Round, Tensor, Topics, Update
from edge_client.protocol.ids import update_transfer_id
from edge_client.quantize import quantize_update
from edge_client.transfer import split
from edge_client.transport import Message, Transport
from tools.simulate.faults import Faults, Plan

Report = Callable[[dict[str, Any]], None]
RECONNECT_MARGIN_S = 0.5  # a crashed device comes back this long after the round's deadline
RESEND_AFTER_S = 20.0  # as the reference client (docs/protocol.md: acknowledgement and re-send)
DELTA_SCALE = 0.01


class Link(Transport, Protocol):
    """A device's connection: the Transport port, plus vanishing and coming back."""

    def crash(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the Last Will)."""

    def reconnect(self) -> None:
        """Connect again under the same client id, with the same subscriptions."""


class UpdateSource:
    """A few random deltas (σ = 0.01), quantized up front with every codec, shared by devices."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], seed: int, variants: int = 4
                 ) -> None:
        """Deltas of weights ``shapes`` (name → shape), ``variants`` distinct ones."""
        rng = np.random.default_rng(seed)
        self._tensors: dict[tuple[int, str], tuple[Tensor, ...]] = {}
        for v in range(variants):
            delta = {n: (rng.normal(size=s) * DELTA_SCALE).astype(np.float32)
                     for n, s in shapes.items()}
            for codec in CODECS:
                self._tensors[v, codec] = quantize_update(delta, codec, None, rng=rng)[0]
        self._variants = variants

    def tensors(self, device: int, codec: str) -> tuple[Tensor, ...]:
        """The wire tensors device ``device`` sends with ``codec``."""
        return self._tensors[device % self._variants, codec]


@dataclass(frozen=True)
class DeviceSpec:
    """Who a device is and how it behaves."""

    client_id: str
    index: int
    samples: int
    topics: Topics
    faults: Faults
    seed: int
    max_payload: int
    floor_topics: Topics | None = None
    resend_after: float = RESEND_AFTER_S


@dataclass(frozen=True)
class _Unanswered:
    """An update published and not answered yet."""

    round_id: int
    nonce: bytes
    copies: int  # transfers published so far (the next one gets the suffix -{copies})
    last_sent: float


def subscriptions(spec: DeviceSpec) -> list[str]:
    """The topic filters a device's link must hold."""
    tp, cid = spec.topics, spec.client_id
    filters = [tp.manifest(), tp.round(), tp.reply(cid)]
    if spec.floor_topics is not None:
        filters.append(spec.floor_topics.round())
    return filters


def presence(spec: DeviceSpec, online: bool, now: float) -> bytes:
    """A device's presence message (``online=False`` is its Last Will)."""
    return Presence(client_id=spec.client_id, online=online, samples=spec.samples,
                    runtime="simulated", runtime_version="0", software_version="fedge-sim",
                    timestamp=now).encode()


def update_chunks(spec: DeviceSpec, source: UpdateSource, r: Round, nonce: bytes,
                  suffix: str = "") -> list[bytes]:
    """The encoded chunks of the update ``spec``'s device sends in round ``r``."""
    update = Update(federation=r.federation, round_id=r.round_id, client_id=spec.client_id,
                    base_version=r.weights_version, model_sha256=r.model_sha256, nonce=nonce,
                    num_samples=spec.samples, metrics={"train_loss": 0.5}, codec=r.codec,
                    tensors=source.tensors(spec.index, r.codec), run_id=r.run_id)
    attempt = int(suffix[1:]) if suffix else None  # suffix: "" or "-{copies}"
    return split(update.encode(), update_transfer_id(r.round_id, nonce, attempt),
                 max_payload=spec.max_payload)


class SimDevice:
    """One simulated device; see the module docstring. Drive it with :meth:`step`."""

    def __init__(self, spec: DeviceSpec, link: Link, source: UpdateSource, report: Report,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.spec, self.link, self.source = spec, link, source
        self.report, self.clock = report, clock
        self.announce = threading.Event()  # set by the link on every (re)connect
        self.announce.set()
        self.manifest: Manifest | None = None
        self._round: Round | None = None
        self._done: set[int] = set()
        self._floor_done: set[int] = set()
        self._floor_chunks: dict[str, list[bytes]] = {}
        self._due: tuple[float, Round, Plan] | None = None
        self._nonces: dict[bytes, int] = {}
        self._unanswered: _Unanswered | None = None
        self._back_at: float | None = None

    def presence(self, online: bool) -> bytes:
        """This device's presence message (``online=False`` is its Last Will)."""
        return presence(self.spec, online, self.clock())

    def step(self) -> bool:
        """Handle what arrived and what is due; returns whether anything happened."""
        now = self.clock()
        if self._back_at is not None:
            if now < self._back_at:
                return False
            self._back_at = None
            self.link.reconnect()
            self.report({"event": "reconnected", "client": self.spec.client_id})
        busy = False
        if self.announce.is_set():
            self.announce.clear()
            self.link.publish(self.spec.topics.presence(self.spec.client_id),
                              self.presence(True), retain=True, timeout=None)
            busy = True
        while (message := self.link.get(timeout=0.0)) is not None:
            self._handle(message)
            busy = True
        if self._due is not None and now >= self._due[0]:
            _, r, plan = self._due
            self._due = None
            self._send(r, plan)
            self._consider()  # a round announced meanwhile
            busy = True
        return self._resend(now) or busy

    # -- messages -------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        if not message.payload:
            return
        floor = self.spec.floor_topics
        try:
            if floor is not None and message.topic == floor.round():
                self._on_floor(Round.decode(message.payload))
                return
            kind = self.spec.topics.parse(message.topic).kind
            if kind == "manifest":
                self.manifest = Manifest.decode(message.payload)
            elif kind == "round":
                self._round = Round.decode(message.payload)
            elif kind == "reply":
                self._on_reply(Reply.decode(message.payload))
        except ProtocolError as e:
            self.report({"event": "bad_message", "client": self.spec.client_id,
                         "topic": message.topic, "error": str(e)})
        self._consider()

    def _consider(self) -> None:
        r, m = self._round, self.manifest
        if r is None or m is None or r.round_id in self._done or self._due is not None:
            return
        if m.model_sha256 != r.model_sha256 or self.clock() >= r.deadline:
            return  # the round's model is not announced yet, or the round is over
        self._done.add(r.round_id)
        if not r.selects(self.spec.client_id):
            return
        plan = self.spec.faults.draw(self.spec.seed, self.spec.index, r.round_id)
        self.report({"event": "plan", "round": r.round_id, "client": self.spec.client_id,
                     "dropout": plan.dropout, "crash": plan.crash, "slow": plan.delay > 0,
                     "duplicate": plan.duplicate})
        if not plan.dropout:
            self._due = (self.clock() + plan.delay, r, plan)

    def _on_reply(self, reply: Reply) -> None:
        if reply.client_id != self.spec.client_id or reply.nonce not in self._nonces:
            return
        u = self._unanswered
        if u is not None and u.nonce == reply.nonce:  # busy: re-sent soon, as edge_client does
            self._unanswered = (replace(u, last_sent=self.clock() - self.spec.resend_after
                                        + BUSY_RETRY_S) if reply.temporary else None)
        self.report({"event": "reply", "round": reply.round_id, "client": reply.client_id,
                     "accepted": reply.accepted, "reason": reply.reason})

    def _on_floor(self, r: Round) -> None:
        if r.round_id in self._floor_done or not r.selects(self.spec.client_id):
            return
        self._floor_done.add(r.round_id)
        assert self.spec.floor_topics is not None
        if r.codec not in self._floor_chunks:  # encoded once: the floor measures transport
            self._floor_chunks[r.codec] = self._chunks(r, bytes(16), "")
        chunks = self._floor_chunks[r.codec]
        for chunk in chunks:
            self.link.publish(self.spec.floor_topics.update(self.spec.client_id), chunk,
                              timeout=None)
        self.report({"event": "floor", "round": r.round_id, "client": self.spec.client_id,
                     "chunks": len(chunks), "bytes": sum(map(len, chunks)), "at": self.clock()})

    # -- updates ----------------------------------------------------------------
    def _chunks(self, r: Round, nonce: bytes, suffix: str) -> list[bytes]:
        return update_chunks(self.spec, self.source, r, nonce, suffix)

    def _send(self, r: Round, plan: Plan) -> None:
        nonce = np.random.default_rng([self.spec.seed, self.spec.index, r.round_id, 1]
                                      ).bytes(16)
        self._nonces[nonce] = r.round_id
        t0 = time.perf_counter()
        chunks = self._chunks(r, nonce, "")
        encode_s = time.perf_counter() - t0
        topic = self.spec.topics.update(self.spec.client_id)
        if plan.crash:
            self._crash(r, chunks, topic)
            return
        copies = [chunks, self._chunks(r, nonce, "-1")] if plan.duplicate else [chunks]
        for chunk in (c for copy in copies for c in copy):  # a duplicate: new transfer id
            self.link.publish(topic, chunk, timeout=None)
        self._unanswered = _Unanswered(r.round_id, nonce, len(copies), self.clock())
        self.report({"event": "sent", "round": r.round_id, "client": self.spec.client_id,
                     "chunks": len(chunks), "bytes": sum(map(len, chunks)),
                     "encode_s": encode_s, "copies": len(copies), "at": self.clock()})

    def _resend(self, now: float) -> bool:
        """No reply for a while and the round still open: the same update, a new transfer id."""
        u, r = self._unanswered, self._round
        if u is None or now - u.last_sent < self.spec.resend_after:
            return False
        if r is None or r.round_id != u.round_id or now >= r.deadline:
            self._unanswered = None  # the round is over: nothing more to do
            return False
        for chunk in self._chunks(r, u.nonce, f"-{u.copies}"):
            self.link.publish(self.spec.topics.update(self.spec.client_id), chunk, timeout=None)
        self._unanswered = _Unanswered(u.round_id, u.nonce, u.copies + 1, now)
        self.report({"event": "resent", "round": r.round_id, "client": self.spec.client_id})
        return True

    def _crash(self, r: Round, chunks: list[bytes], topic: str) -> None:
        some = int(np.random.default_rng([self.spec.seed, self.spec.index, r.round_id, 2])
                   .integers(1, len(chunks))) if len(chunks) > 1 else 0
        for chunk in chunks[:some]:
            self.link.publish(topic, chunk, timeout=10.0)  # on the broker before vanishing
        self.link.crash()
        self._back_at = r.deadline + RECONNECT_MARGIN_S
        self.report({"event": "crashed", "round": r.round_id, "client": self.spec.client_id,
                     "chunks_sent": some, "chunks": len(chunks)})
