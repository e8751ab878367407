"""Chunked transfers: split a payload into MQTT-sized chunks and reassemble it.

Brokers and managed IoT hubs cap a message (AWS IoT Core: 128 KB), and paho does
not honour the broker's Maximum Packet Size, so every large payload (model file,
global weights, update) travels as :class:`~edge_client.protocol.Chunk` messages
of at most ``max_payload`` bytes each, header included.

The :class:`Reassembler` takes chunks from untrusted senders in any order, with
duplicates and losses, and hands back each completed payload exactly once. Its
memory is bounded: every transfer reserves its declared ``total_size`` against the
caps when its first chunk arrives, before anything is stored. It is not
thread-safe: feed it from one worker.

With ``evict=True`` (the aggregator's intake) a flood of partial transfers cannot block a
genuine sender: a sender at its own cap loses its least recently active transfer (so ids
forged onto one topic only hurt that topic's older transfers), and when the global caps
are full the least recently active transfer of the sender holding the most goes (a sender
that is not ``protected``, e.g. not selected for the open round, first), never a sender's
only transfer, except an unprotected sender's when a protected sender needs the room.
When nothing may go the chunk is refused with :class:`TransfersBusy`: temporary, the
sender should re-send.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_client.errors import ConfigError, ProtocolError, ValidationError
from edge_client.protocol import MAX_CHUNKS, MAX_SELECTED, MAX_TRANSFER_BYTES, Chunk

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 128 * 1024  # AWS IoT Core's cap on one MQTT message
#: the one default of every reassembly cap (the aggregator's flags default to these too)
DEFAULT_MAX_TRANSFERS = MAX_SELECTED  # one upload in progress per client a round can select
DEFAULT_MAX_TRANSFERS_PER_SENDER = 4  # an upload and a few re-sends of it
DEFAULT_MAX_BUFFERED_BYTES = 4 * MAX_TRANSFER_BYTES  # what bounds the memory (256 MiB)
_DATA_HEADER_SLACK = 4  # a CBOR byte string header grows from 1 to at most 5 bytes


class ChunkRejected(ProtocolError):
    """A chunk cannot be accepted; the text says why (size, caps, inconsistency, hash)."""


class TransferFailed(ChunkRejected):
    """The whole transfer failed and is forgotten (not just this chunk): it declares more
    than the cap or more chunks than bytes, a chunk contradicts its first one, or the
    payload fails its size or SHA-256. Its sender should be told once; a refusal over
    the shared caps (too many transfers, buffer full) is a plain :class:`ChunkRejected`."""


class TransfersBusy(ChunkRejected):
    """A chunk refused only because the caps are full of other transfers: temporary."""


def chunk_overhead(transfer_id: str) -> int:
    """An upper bound on the bytes a chunk's header adds to its data."""
    probe = Chunk(transfer_id=transfer_id, index=MAX_CHUNKS - 1, count=MAX_CHUNKS,
                  total_size=2**40, sha256="0" * 64, data=b"")
    return len(probe.encode()) + _DATA_HEADER_SLACK


def split(
    payload: bytes, transfer_id: str, *, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> list[bytes]:
    """Cut ``payload`` into encoded chunk messages of at most ``max_payload`` bytes each.

    Args:
        payload: the bytes to send (a model file, an encoded Weights or Update).
        transfer_id: a safe id, unique per payload for this sender (never reused
            for different content: completed ids are remembered).
        max_payload: MQTT payload cap, chunk header included.

    Returns:
        One encoded :class:`Chunk` per element, in index order; at least one.

    Raises:
        ConfigError: ``max_payload`` leaves no room for data.
        ValidationError: the payload would need more than ``MAX_CHUNKS`` chunks.
    """
    room = max_payload - chunk_overhead(transfer_id)
    if room < 1:
        raise ConfigError(f"max_payload={max_payload} is smaller than the chunk header "
                          f"({chunk_overhead(transfer_id)} bytes) plus one byte of data")
    count = max(1, math.ceil(len(payload) / room))
    if count > MAX_CHUNKS:
        raise ValidationError(f"payload of {len(payload)} bytes needs {count} chunks of "
                              f"{room} bytes, more than {MAX_CHUNKS}")
    digest = hashlib.sha256(payload).hexdigest()
    return [Chunk(transfer_id=transfer_id, index=i, count=count, total_size=len(payload),
                  sha256=digest, data=payload[i * room:(i + 1) * room]).encode()
            for i in range(count)]


@dataclass(frozen=True)
class ReassemblyLimits:
    """Caps of a :class:`Reassembler`.

    Attributes:
        max_transfer_bytes: largest payload accepted.
        max_buffered_bytes: sum of ``total_size`` over incomplete transfers.
        max_transfers: incomplete transfers in total.
        max_transfers_per_sender: incomplete transfers of one sender.
        timeout: seconds after its first chunk an incomplete transfer is dropped.
        remember_completed: how many completed (sender, transfer id) pairs are kept to
            swallow late duplicates.
    """

    max_transfer_bytes: int = MAX_TRANSFER_BYTES
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_transfers: int = DEFAULT_MAX_TRANSFERS
    max_transfers_per_sender: int = DEFAULT_MAX_TRANSFERS_PER_SENDER
    timeout: float = 600.0
    remember_completed: int = 4096


@dataclass
class _Transfer:
    count: int
    total_size: int
    sha256: str
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    received: int = 0
    active: float = 0.0  # when its latest chunk came: the least recently active goes first


class Reassembler:
    """Rebuilds chunked payloads; bounded, idempotent, order- and duplicate-tolerant."""

    def __init__(self, limits: ReassemblyLimits | None = None, *, evict: bool = False,
                 protected: Callable[[str], bool] | None = None) -> None:
        """Create an empty reassembler with ``limits`` (defaults if ``None``); ``evict`` and
        ``protected``: see the module docstring (without ``evict`` a full cap refuses)."""
        self.limits = limits or ReassemblyLimits()
        self.evict, self._protected = evict, protected or (lambda sender: False)
        self.evicted = 0  # transfers dropped to make room, for the caller's counts
        self._evicted: list[tuple[str, str]] = []  # since the last take_evicted()
        self._open: dict[tuple[str, str], _Transfer] = {}
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._per_sender: Counter[str] = Counter()
        self._bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes reserved by incomplete transfers."""
        return self._bytes

    @property
    def pending(self) -> int:
        """Number of incomplete transfers."""
        return len(self._open)

    def accept(self, sender: str, chunk: Chunk | bytes, now: float) -> bytes | None:
        """Take one chunk.

        Args:
            sender: who sent it (from the topic, e.g. the client id); transfer ids are
                scoped per sender.
            chunk: a decoded chunk, or the raw MQTT payload.
            now: the current time in seconds from the caller's clock.

        Returns:
            The whole payload when this chunk completes a transfer (once per transfer
            id), else ``None`` (more chunks needed, or a duplicate).

        Raises:
            ChunkRejected: over a cap, inconsistent with earlier chunks, or the
                completed payload fails its SHA-256. MalformedMessage: undecodable bytes.
        """
        if not isinstance(chunk, Chunk):
            chunk = Chunk.decode(chunk)
        self.expire(now)
        key = (sender, chunk.transfer_id)
        if key in self._done:
            return None
        transfer = self._open.get(key) or self._admit(key, chunk, now)
        transfer.active = now
        self._store(key, transfer, chunk)
        if len(transfer.parts) < transfer.count:
            return None
        return self._finish(key, transfer)

    def transfer_ids(self, sender: str) -> list[str]:
        """The transfer ids of ``sender`` in progress or completed (and remembered)."""
        return [t for s, t in (*self._open, *self._done) if s == sender]

    def take_evicted(self) -> list[tuple[str, str]]:
        """The (sender, transfer id) of the transfers evicted since the last call."""
        evicted, self._evicted = self._evicted, []
        return evicted

    def drop(self, sender: str, transfer_id: str) -> None:
        """Forget the incomplete transfer ``transfer_id`` of ``sender`` (if any), e.g. one
        whose first chunk lied about its size: the next chunk starts it afresh."""
        self._forget((sender, transfer_id))

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop incomplete transfers older than the timeout; return their (sender, id)."""
        old = [k for k, t in self._open.items() if now - t.started > self.limits.timeout]
        for key in old:
            transfer = self._forget(key)
            assert transfer is not None
            log.info("transfer %s from %s expired with %d of %d chunks", key[1], key[0],
                     len(transfer.parts), transfer.count)
        return old

    def _admit(self, key: tuple[str, str], chunk: Chunk, now: float) -> _Transfer:
        limits, size = self.limits, chunk.total_size
        if size > limits.max_transfer_bytes:
            raise TransferFailed(f"transfer too large: {key[1]} from {key[0]} declares {size} "
                                 f"bytes, cap {limits.max_transfer_bytes}")
        if chunk.count > max(1, size):
            raise TransferFailed(f"transfer {key[1]}: {chunk.count} chunks for {size} bytes")
        while (full := self._full(key[0], size)) is not None:
            victim = self._victim(key[0]) if self.evict else None
            if victim is None:
                raise (TransfersBusy if self.evict else ChunkRejected)(full)
            self._forget(victim)
            self.evicted += 1
            self._evicted.append(victim)
            log.info("transfer %s from %s evicted for one from %s: %s", victim[1], victim[0],
                     key[0], full)
        transfer = _Transfer(chunk.count, size, chunk.sha256, now, active=now)
        self._open[key] = transfer
        self._per_sender[key[0]] += 1
        self._bytes += size
        return transfer

    def _full(self, sender: str, size: int) -> str | None:
        """Which cap a new transfer of ``size`` bytes from ``sender`` would break, if any."""
        limits = self.limits
        if self._per_sender[sender] >= limits.max_transfers_per_sender:
            return (f"sender {sender} already has {limits.max_transfers_per_sender} "
                    "transfers in progress")
        if len(self._open) >= limits.max_transfers:
            return f"too many transfers in progress ({limits.max_transfers})"
        if self._bytes + size > limits.max_buffered_bytes:
            return (f"buffer full: {self._bytes} + {size} bytes exceeds "
                    f"{limits.max_buffered_bytes}")
        return None

    def _victim(self, sender: str) -> tuple[str, str] | None:
        """The transfer to drop for a new one of ``sender`` (see the module docstring): its
        own at its cap; else one of a sender holding several (an unprotected one first);
        else, for a protected ``sender``, an unprotected sender's only one. Within a tier the
        sender holding the most, then the least recently active transfer."""
        if self._per_sender[sender] >= self.limits.max_transfers_per_sender:
            return min((k for k in self._open if k[0] == sender),
                       key=lambda k: self._open[k].active)
        mine = self._protected(sender)
        tiers = ((False, True), (True, True), (False, False)) if mine else ((False, True),)
        for protected, several in tiers:
            keys = [k for k in self._open if self._protected(k[0]) == protected
                    and (self._per_sender[k[0]] > 1) == several]
            if keys:
                return min(keys, key=lambda k: (-self._per_sender[k[0]], self._open[k].active))
        return None

    def _forget(self, key: tuple[str, str]) -> _Transfer | None:
        transfer = self._open.pop(key, None)
        if transfer is not None:
            self._per_sender[key[0]] -= 1
            if not self._per_sender[key[0]]:
                del self._per_sender[key[0]]
            self._bytes -= transfer.total_size
        return transfer

    def _store(self, key: tuple[str, str], transfer: _Transfer, chunk: Chunk) -> None:
        header = (chunk.count, chunk.total_size, chunk.sha256)
        if header != (transfer.count, transfer.total_size, transfer.sha256):
            self._forget(key)  # it cannot complete now: its sender should know at once
            raise TransferFailed(f"chunk {chunk.index} of {key[1]} from {key[0]}: count, "
                                 "total_size or sha256 differ from the transfer's first chunk")
        if chunk.index in transfer.parts:
            return
        if transfer.received + len(chunk.data) > transfer.total_size:
            self._forget(key)
            raise TransferFailed(f"chunk {chunk.index} of {key[1]} from {key[0]}: data beyond "
                                 f"total_size {transfer.total_size}")
        transfer.parts[chunk.index] = chunk.data
        transfer.received += len(chunk.data)

    def _finish(self, key: tuple[str, str], transfer: _Transfer) -> bytes:
        self._forget(key)
        payload = b"".join(transfer.parts[i] for i in range(transfer.count))
        if len(payload) != transfer.total_size:
            raise TransferFailed(f"transfer {key[1]} from {key[0]}: {len(payload)} bytes, "
                                 f"declared {transfer.total_size}")
        if hashlib.sha256(payload).hexdigest() != transfer.sha256:
            raise TransferFailed(f"transfer {key[1]} from {key[0]}: sha256 mismatch")
        self._done[key] = None
        while len(self._done) > self.limits.remember_completed:
            self._done.popitem(last=False)
        return payload
