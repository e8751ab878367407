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
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
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


class Reassembler:
    """Rebuilds chunked payloads; bounded, idempotent, order- and duplicate-tolerant."""

    def __init__(self, limits: ReassemblyLimits | None = None) -> None:
        """Create an empty reassembler with ``limits`` (defaults if ``None``)."""
        self.limits = limits or ReassemblyLimits()
        self._open: dict[tuple[str, str], _Transfer] = {}
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def buffered_bytes(self) -> int:
        """Bytes reserved by incomplete transfers."""
        return sum(t.total_size for t in self._open.values())

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
        self._store(key, transfer, chunk)
        if len(transfer.parts) < transfer.count:
            return None
        return self._finish(key, transfer)

    def transfer_ids(self, sender: str) -> list[str]:
        """The transfer ids of ``sender`` in progress or completed (and remembered)."""
        return [t for s, t in (*self._open, *self._done) if s == sender]

    def drop(self, sender: str, transfer_id: str) -> None:
        """Forget the incomplete transfer ``transfer_id`` of ``sender`` (if any), e.g. one
        whose first chunk lied about its size: the next chunk starts it afresh."""
        self._open.pop((sender, transfer_id), None)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop incomplete transfers older than the timeout; return their (sender, id)."""
        old = [k for k, t in self._open.items() if now - t.started > self.limits.timeout]
        for key in old:
            transfer = self._open.pop(key)
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
        if len(self._open) >= limits.max_transfers:
            raise ChunkRejected(f"too many transfers in progress ({limits.max_transfers})")
        if sum(k[0] == key[0] for k in self._open) >= limits.max_transfers_per_sender:
            raise ChunkRejected(f"sender {key[0]} already has "
                                f"{limits.max_transfers_per_sender} transfers in progress")
        if self.buffered_bytes + size > limits.max_buffered_bytes:
            raise ChunkRejected(f"buffer full: {self.buffered_bytes} + {size} bytes exceeds "
                                f"{limits.max_buffered_bytes}")
        transfer = _Transfer(chunk.count, size, chunk.sha256, now)
        self._open[key] = transfer
        return transfer

    def _store(self, key: tuple[str, str], transfer: _Transfer, chunk: Chunk) -> None:
        header = (chunk.count, chunk.total_size, chunk.sha256)
        if header != (transfer.count, transfer.total_size, transfer.sha256):
            del self._open[key]  # it cannot complete now: its sender should know at once
            raise TransferFailed(f"chunk {chunk.index} of {key[1]} from {key[0]}: count, "
                                 "total_size or sha256 differ from the transfer's first chunk")
        if chunk.index in transfer.parts:
            return
        if transfer.received + len(chunk.data) > transfer.total_size:
            del self._open[key]
            raise TransferFailed(f"chunk {chunk.index} of {key[1]} from {key[0]}: data beyond "
                                 f"total_size {transfer.total_size}")
        transfer.parts[chunk.index] = chunk.data
        transfer.received += len(chunk.data)

    def _finish(self, key: tuple[str, str], transfer: _Transfer) -> bytes:
        del self._open[key]
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
