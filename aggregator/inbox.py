"""Update chunks in, decisions out: what the service must do with each chunk it receives.

:class:`UpdateInbox` reassembles the chunks of every sender (keyed by the topic's client
id), decodes a completed update, recognises a re-sent one (same client, round and
nonce as an accepted update), validates the rest against the open round and, when
accepted, **stores it** before saying so. It returns one :data:`Outcome`; the service
acknowledges, replies, counts and feeds the round machine accordingly. It publishes
nothing and touches no state but the reassembly buffers and the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator import intake
from aggregator.intake import Addressee, Arrival, Refused, decode_update
from aggregator.ledger import RoundLedger
from aggregator.store import AggregatorStore
from aggregator.validation import RoundContext, TensorSpec, UpdateLimits, validate
from edge_client.errors import FedgeError, ProtocolError
from edge_client.protocol import Chunk, Update
from edge_client.transfer import ChunkRejected, Reassembler, ReassemblyLimits


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
        """Check updates against ``spec``, ``limits`` and the round's ``codec``."""
        self.store, self.spec, self.limits, self.codec = store, spec, limits, codec
        self.reassembler = Reassembler(reassembly)

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
