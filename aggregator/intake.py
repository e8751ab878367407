"""Update chunks in, updates out: reassembly, strict decoding, and the transfer's own checks.

:class:`Intake` reassembles the chunks of every sender (keyed by the topic's client id),
decodes a completed update strictly, checks what only the transport can tell (the
topic's client id, the round's codec) and dequantizes it. :meth:`Intake.take` returns
:class:`Pending` (a chunk held in memory, or a repeat), :class:`Refused` (with whom to
answer, when known; reason ``busy`` when only full caps refused it: temporary) or
:class:`Arrived` (a :class:`~aggregator.validation.ReceivedUpdate` for
:meth:`aggregator.round.Round.admit`). It touches nothing but its reassembly buffers.

Every failed transfer whose id names an update (``u-{round}-{nonce}-…``) is answered
once: at the chunk that makes the whole transfer fail (:class:`TransferFailed`: a
declaration over the caps, a chunk contradicting the first, a bad size or SHA-256, in
whatever order its chunks come) or that full shared caps refused (``busy``), and, from
:meth:`Intake.expire`, when it expires incomplete or was evicted to make room (``busy``),
unless a later transfer of the same update (a re-send) is in progress or done. The rest
of a failed or evicted transfer's chunks are dropped unanswered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import cbor2
import numpy as np

from aggregator.reasons import Reason, Rejection
from aggregator.validation import Counts, ReceivedUpdate, UpdateLimits
from edge_client.errors import ConfigError, ProtocolError, ValidationError
from edge_client.protocol import (
    MAX_CHUNK_BYTES,
    Chunk,
    MalformedMessage,
    Update,
    parse_update_transfer_id,
)
from edge_client.quantize import dequantize_update
from edge_client.score_counts import counts_from_dict
from edge_client.transfer import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_TRANSFERS,
    DEFAULT_MAX_TRANSFERS_PER_SENDER,
    ChunkRejected,
    Reassembler,
    ReassemblyLimits,
    TransferFailed,
    TransfersBusy,
)

REMEMBER_FAILED = 4096  # failed transfers remembered, so the rest of their chunks stay quiet


@dataclass(frozen=True)
class IntakeLimits(UpdateLimits):
    """:class:`UpdateLimits` plus the resource caps of the chunk intake (docs/aggregator.md).

    Attributes:
        max_message_bytes: largest MQTT payload taken on ``update/+``; a larger one is
            refused before it is decoded.
        max_transfer_bytes: largest update a transfer may declare; None: the bound the
            service derives from the model (its fp32 size plus framing).
        max_transfers: incomplete transfers held in total.
        max_transfers_per_client: incomplete transfers held per client (topic) id.
        max_buffered_bytes: sum of the sizes declared by the incomplete transfers.
        transfer_timeout: seconds an incomplete transfer is kept; None: the service's.
    """

    max_message_bytes: int = MAX_CHUNK_BYTES
    max_transfer_bytes: int | None = None
    max_transfers: int = DEFAULT_MAX_TRANSFERS
    max_transfers_per_client: int = DEFAULT_MAX_TRANSFERS_PER_SENDER
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    transfer_timeout: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        caps = (self.max_message_bytes, self.max_transfer_bytes or 1, self.max_transfers,
                self.max_transfers_per_client, self.max_buffered_bytes,
                self.transfer_timeout or 1.0)
        if min(caps) <= 0:
            raise ConfigError(f"intake caps must be positive, got {caps}")

    def reassembly(self, default: ReassemblyLimits) -> ReassemblyLimits:
        """``default`` (the service's) with every cap set here applied."""
        return replace(
            default, max_transfer_bytes=self.max_transfer_bytes or default.max_transfer_bytes,
            max_buffered_bytes=self.max_buffered_bytes, max_transfers=self.max_transfers,
            max_transfers_per_sender=self.max_transfers_per_client,
            timeout=self.transfer_timeout or default.timeout)


@dataclass(frozen=True)
class Addressee:
    """Whom a reply goes to, and what it echoes."""

    client_id: str
    round_id: int
    nonce: bytes
    run_id: str | None = None  # the update's run, echoed; None: the aggregator's own

    @classmethod
    def of(cls, update: ReceivedUpdate) -> Addressee:
        """The sender, round, nonce and run of a received update."""
        return cls(update.client_id, update.round_id, bytes.fromhex(update.nonce),
                   update.run_id)


def addressee(sender: str, update: Update | None, transfer_id: str) -> Addressee | None:
    """Where to answer an update from ``sender`` (the topic's client id).

    From the decoded update when there is one; else, for a payload that does not
    decode, from its transfer id ``u-{round_id}-{nonce hex}[-…]``; else None.
    """
    if update is not None:
        return Addressee(sender, update.round_id, update.nonce, update.run_id)
    named = parse_update_transfer_id(transfer_id)
    return None if named is None else Addressee(sender, *named)


@dataclass(frozen=True)
class Pending:
    """A chunk held in memory until its transfer completes (or a repeated chunk)."""


@dataclass(frozen=True)
class Refused:
    """Turned away before it became an update; answer ``to`` when known."""

    to: Addressee | None
    rejection: Rejection


@dataclass(frozen=True)
class Arrived:
    """A whole update, decoded and dequantized: for the round to admit or reject."""

    update: ReceivedUpdate


Outcome = Pending | Refused | Arrived


class Intake:
    """Turns update chunks into :data:`Outcome` s; see the module docstring."""

    def __init__(self, codec: str, reassembly: ReassemblyLimits,
                 limits: IntakeLimits | None = None, *,
                 selected: Callable[[str], bool] | None = None) -> None:
        """Take updates in ``codec``; ``limits`` (when given) replace ``reassembly``'s caps.
        Full caps evict a transfer of a flood rather than refuse a genuine one
        (:class:`~edge_client.transfer.Reassembler` with ``evict``); ``selected`` says which
        senders the open round selected: their transfers go last."""
        self.codec = codec
        self.max_message_bytes = limits.max_message_bytes if limits else MAX_CHUNK_BYTES
        self.reassembler = Reassembler(limits.reassembly(reassembly) if limits else reassembly,
                                       evict=True, protected=selected)
        self._failed: OrderedDict[tuple[str, str], None] = OrderedDict()  # answered
        self._expired: list[tuple[str, str]] = []  # found while taking a chunk
        self._busy: list[Refused] = []  # answers to evicted transfers, for expire()

    def take(self, sender: str, payload: bytes, now: float) -> Outcome:
        """Decide about one chunk published on ``update/{sender}`` (``payload`` untrusted;
        ``now`` is the clock of the reassembly timeout)."""
        if len(payload) > self.max_message_bytes:  # refused before anything is decoded
            return Refused(None, Rejection(Reason.TRANSFER, f"message of {len(payload)} bytes "
                           f"from {sender} exceeds --max-message-bytes {self.max_message_bytes}"))
        try:
            chunk = Chunk.decode(payload)
        except ProtocolError as e:
            return Refused(None, Rejection(Reason.MALFORMED, f"not a chunk from {sender}: {e}"))
        key = (sender, chunk.transfer_id)
        if key in self._failed:  # answered already: the rest of its chunks say nothing new
            return Pending()
        self._expired += self.reassembler.expire(now)
        try:
            whole = self.reassembler.accept(sender, chunk, now)
        except ChunkRejected as e:
            to = None  # answer once per transfer, not per chunk
            if isinstance(e, (TransferFailed, TransfersBusy)) or chunk.index == chunk.count - 1:
                to = addressee(sender, None, chunk.transfer_id)
                self._remember_failed(key)
            if isinstance(e, TransfersBusy):
                return Refused(to, Rejection(Reason.BUSY, f"{e}; temporary, re-send"))
            return Refused(to, Rejection(Reason.TRANSFER, str(e)))
        finally:
            self._note_evicted()
        if whole is None:
            return Pending()
        return decode_update(whole, sender, self.codec, chunk.transfer_id)

    def expire(self, now: float) -> list[Refused]:
        """Drop the transfers older than the timeout; the answers to their senders (those
        whose id names an update no later transfer of the sender re-sends), and to the
        senders of transfers evicted since the last call (``busy``)."""
        expired, self._expired = self._expired + self.reassembler.expire(now), []
        answers, self._busy = self._busy, []
        for key in expired:
            sender, transfer_id = key
            to = addressee(sender, None, transfer_id)
            if to is None or key in self._failed or self._resent(sender, transfer_id):
                continue
            self._remember_failed(key)
            answers.append(Refused(to, Rejection(
                Reason.TRANSFER, f"transfer {transfer_id} from {sender} expired incomplete "
                f"after {self.reassembler.limits.timeout:g} s")))
        return answers

    def _note_evicted(self) -> None:
        """Transfers evicted to make room: the rest of their chunks are dropped quietly (they
        could not complete), and a sender whose transfer id names an update is told ``busy``
        at the next :meth:`expire`, so it re-sends soon instead of after its re-send time."""
        for key in self.reassembler.take_evicted():
            sender, transfer_id = key
            to = addressee(sender, None, transfer_id)
            if to is not None and not self._resent(sender, transfer_id):
                self._busy.append(Refused(to, Rejection(Reason.BUSY, f"transfer "
                                  f"{transfer_id} from {sender} was dropped to make room for "
                                  "another; temporary, re-send")))
            self._remember_failed(key)

    def _resent(self, sender: str, transfer_id: str) -> bool:
        named = parse_update_transfer_id(transfer_id)
        return any(t != transfer_id and parse_update_transfer_id(t) == named
                   for t in self.reassembler.transfer_ids(sender))

    def _remember_failed(self, key: tuple[str, str]) -> None:
        self._failed[key] = None
        while len(self._failed) > REMEMBER_FAILED:
            self._failed.popitem(last=False)


def decode_update(payload: bytes, sender: str, codec: str, transfer_id: str = "") -> Outcome:
    """Decode the reassembled ``payload`` that ``sender`` (the topic's client id) published,
    in the ``codec`` the round requires: :class:`Arrived`, or :class:`Refused` with reason
    ``malformed``, ``client_id`` or ``codec``."""
    try:
        update = Update.decode(payload)
    except MalformedMessage as e:
        return Refused(addressee(sender, None, transfer_id), Rejection(
            Reason.MALFORMED, f"update from {sender} does not decode: {e}"))
    to = addressee(sender, update, transfer_id)
    if update.client_id != sender:
        return Refused(to, Rejection(Reason.CLIENT_ID, f"update names client "
                       f"{update.client_id!r} but came on the topic of {sender!r}"))
    if update.codec != codec:
        return Refused(to, Rejection(
            Reason.CODEC, f"update uses codec {update.codec}, the round asks for {codec}"))
    try:
        return Arrived(received(update, payload))
    except ValidationError as e:
        return Refused(to, Rejection(Reason.EVALUATION, f"update from {sender}: {e}"))


def received(update: Update, payload: bytes) -> ReceivedUpdate:
    """The core's view of a decoded update: dequantized float32 delta, nonce in hex,
    evaluation counts parsed.

    Raises:
        ValidationError: the evaluation counts do not decode.
    """
    with np.errstate(over="ignore"):  # int8 × a huge scale may overflow: validation says "inf"
        delta = dequantize_update(update.tensors)
    return ReceivedUpdate(
        federation=update.federation, round_id=update.round_id, client_id=update.client_id,
        base_version=update.base_version, model_sha256=update.model_sha256,
        nonce=update.nonce.hex(), num_samples=update.num_samples,
        delta=delta, metrics=dict(update.metrics),
        bytes_received=len(payload), payload=payload, run_id=update.run_id,
        evaluation=_evaluation(update.evaluation),
    )


def _evaluation(data: bytes) -> Counts | None:
    if not data:
        return None
    try:
        document = cbor2.loads(data, allow_indefinite=False, max_depth=8)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise ValidationError(f"evaluation counts are not CBOR ({e})") from None
    return counts_from_dict(document)
