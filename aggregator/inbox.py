"""Update chunks in, decisions out: what the service must do with each chunk it receives.

:class:`UpdateInbox` reassembles the chunks of every sender (keyed by the topic's client
id), decodes a completed update, recognises a re-sent one (same client, round and
nonce as an accepted update), validates the rest against the open round and, when
accepted, **stores it** before saying so. It returns one :data:`Outcome`; the service
acknowledges, replies, counts and feeds the round machine accordingly. It publishes
nothing and touches no state but the reassembly buffers and the store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aggregator import intake
from aggregator.intake import Addressee, Arrival, Refused, decode_update
from aggregator.ledger import RoundLedger
from aggregator.store import AggregatorStore
from aggregator.validation import RoundContext, TensorSpec, UpdateLimits, validate
from edge_client.errors import ConfigError, FedgeError, ProtocolError
from edge_client.protocol import MAX_CHUNK_BYTES, Chunk, Update
from edge_client.transfer import ChunkRejected, Reassembler, ReassemblyLimits


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
    max_transfers: int = 64
    max_transfers_per_client: int = 4
    max_buffered_bytes: int = 256 * 1024 * 1024
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
class Incomplete:
    """A chunk stored in memory (or a duplicate): acknowledge it now."""


@dataclass(frozen=True)
class Refusal:
    """Rejected: count ``reason``, acknowledge, and answer ``to`` when known."""

    to: Addressee | None
    reason: str
    text: str


@dataclass(frozen=True)
class Resent:
    """The same update (client, round, nonce) was accepted before: answer accepted again."""

    to: Addressee


@dataclass(frozen=True)
class Admitted:
    """Valid and stored: feed it to the round machine, then fold, acknowledge, reply."""

    arrival: Arrival


@dataclass(frozen=True)
class Unstored:
    """Valid but the store failed (disk full?): do not acknowledge; the broker keeps it."""

    arrival: Arrival
    error: str


Outcome = Incomplete | Refusal | Resent | Admitted | Unstored


class UpdateInbox:
    """Turns update chunks into :data:`Outcome` s; see the module docstring."""

    def __init__(self, store: AggregatorStore, spec: tuple[TensorSpec, ...],
                 limits: UpdateLimits, codec: str, reassembly: ReassemblyLimits) -> None:
        """Check updates against ``spec``, ``limits`` and the round's ``codec``.

        ``limits`` may be :class:`IntakeLimits`: its caps then replace ``reassembly``'s.
        """
        self.store, self.spec, self.limits, self.codec = store, spec, limits, codec
        caps = limits if isinstance(limits, IntakeLimits) else None
        self.max_message_bytes = caps.max_message_bytes if caps else MAX_CHUNK_BYTES
        self.reassembler = Reassembler(caps.reassembly(reassembly) if caps else reassembly)

    def take(self, sender: str, payload: bytes, now: float, ctx: RoundContext,
             ledger: RoundLedger) -> Outcome:
        """Decide about one chunk published on ``update/{sender}``.

        Args:
            sender: the client id in the topic.
            payload: the MQTT payload, untrusted.
            now: clock of the reassembly timeout.
            ctx: what the open round expects.
            ledger: the open round's accepted updates (for re-sent nonces).
        """
        if len(payload) > self.max_message_bytes:  # refused before anything is decoded
            return Refusal(None, intake.TRANSFER, f"message of {len(payload)} bytes from "
                           f"{sender} exceeds --max-message-bytes {self.max_message_bytes}")
        try:
            chunk = Chunk.decode(payload)
        except ProtocolError as e:
            return Refusal(None, intake.MALFORMED, f"not a chunk from {sender}: {e}")
        try:
            whole = self.reassembler.accept(sender, chunk, now)
        except ChunkRejected as e:
            last = chunk.index == chunk.count - 1  # answer once per transfer, not per chunk
            to = intake.addressee(sender, None, chunk.transfer_id) if last else None
            return Refusal(to, intake.TRANSFER, str(e))
        if whole is None:
            return Incomplete()
        try:
            arrival = decode_update(whole, sender, self.codec)
        except Refused as e:
            return Refusal(intake.addressee(sender, e.update, chunk.transfer_id), e.reason, str(e))
        return self._judge(arrival, ctx, ledger)

    def _judge(self, arrival: Arrival, ctx: RoundContext, ledger: RoundLedger) -> Outcome:
        if self._already_accepted(arrival, ctx, ledger):
            return Resent(arrival.addressee)
        verdict = validate(arrival.received, ctx, self.spec, self.limits)
        if verdict.reason is not None:
            return Refusal(arrival.addressee, verdict.reason.value, verdict.message)
        update = arrival.update
        try:
            self.store.save_accepted(update.round_id, update.client_id, arrival.payload)
        except (OSError, FedgeError) as e:
            return Unstored(arrival, str(e))
        return Admitted(arrival)

    def _already_accepted(self, arrival: Arrival, ctx: RoundContext,
                          ledger: RoundLedger) -> bool:
        got = arrival.received
        known = ledger.nonce_of(got.client_id) if ledger.round_id == got.round_id else None
        if known is not None:
            return known == got.nonce
        if not 1 <= got.round_id <= ctx.round_id:
            return False
        stored = self.store.accepted_payload(got.round_id, got.client_id)
        return stored is not None and Update.decode(stored).nonce.hex() == got.nonce
