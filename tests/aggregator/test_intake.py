"""The update intake: where undecodable updates and failed transfers are answered, what a
reply may say, and the temporary refusal of full caps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aggregator.intake import Addressee, Intake, Outcome, Pending, Refused, addressee
from aggregator.reasons import Reason, Rejection
from edge_client.protocol import REASON_BUSY, Chunk, Reply
from edge_client.transfer import ReassemblyLimits, split


def test_undecodable_updates_are_answered_through_their_transfer_id() -> None:
    nonce = bytes(range(16))
    assert addressee("dev-1", None, f"u-12-{nonce.hex()}-3") == Addressee("dev-1", 12, nonce)
    assert addressee("dev-1", None, f"u-12-{nonce.hex()}") == Addressee("dev-1", 12, nonce)
    assert addressee("dev-1", None, "weights-3") is None
    assert addressee("dev-1", None, "u-12-abc") is None  # odd hex: not a nonce


def test_reply_reasons_are_safe_and_short() -> None:
    text = Rejection(Reason.SHAPE, "tensor 'x\n' " + "y" * 400).reply_text()
    assert text.startswith("shape: tensor 'x?' ") and len(text) == 256 and text.endswith("...")


# -- every failed transfer from a known client is answered once (issue 14, finding 10) ----
NONCE = bytes(range(16))
TID = f"u-3-{NONCE.hex()}-0"
TO = Addressee("dev-1", 3, NONCE)


def intake(**caps: Any) -> Intake:
    return Intake("int8", ReassemblyLimits(**{"timeout": 30.0, **caps}))


def chunks(payload: bytes = bytes(range(256)) * 8, tid: str = TID) -> list[Chunk]:
    return [Chunk.decode(c) for c in split(payload, tid, max_payload=400)]


def take_all(got: Intake, parts: list[Chunk], now: float = 0.0) -> list[Outcome]:
    return [got.take("dev-1", p.encode(), now) for p in parts]


def refusals(outcomes: list[Outcome]) -> list[Refused]:
    return [o for o in outcomes if isinstance(o, Refused)]


def test_a_chunk_contradicting_its_transfer_mid_way_is_answered_once() -> None:
    parts = chunks()
    assert len(parts) >= 6
    parts[2] = replace(parts[2], total_size=parts[2].total_size + 1)
    got = refusals(take_all(intake(), parts))
    assert [(r.to, r.rejection.reason) for r in got] == [(TO, Reason.TRANSFER)]
    assert "differ from the transfer's first chunk" in got[0].rejection.message


def test_a_hash_mismatch_completed_out_of_order_is_answered() -> None:
    parts = chunks()
    parts[1] = replace(parts[1], data=bytes(len(parts[1].data)))  # same header, wrong bytes
    got = refusals(take_all(intake(), [parts[-1], *parts[:-1]]))  # completes on chunk 4
    assert [(r.to, r.rejection.reason) for r in got] == [(TO, Reason.TRANSFER)]
    assert "sha256 mismatch" in got[0].rejection.message


def test_a_transfer_declaring_too_much_is_answered_at_its_first_chunk_only() -> None:
    parts = chunks()
    outcomes = take_all(intake(max_transfer_bytes=1000), parts)
    assert isinstance(outcomes[0], Refused) and outcomes[0].to == TO
    assert "transfer too large" in outcomes[0].rejection.message
    assert refusals(outcomes[1:]) == []


def test_an_expired_transfer_is_answered_unless_a_re_send_took_over() -> None:
    got = intake()
    take_all(got, chunks()[:3], now=0.0)  # attempt 0 loses its tail
    take_all(got, chunks(tid=f"u-4-{NONCE.hex()}-0")[:2], now=0.0)  # another update: lost
    take_all(got, chunks(tid=f"u-4-{NONCE.hex()}-1"), now=5.0)  # its re-send completes
    assert got.expire(10.0) == []
    (expired,) = got.expire(31.0)
    assert expired.to == TO and expired.rejection.reason is Reason.TRANSFER
    assert "expired incomplete" in expired.rejection.message
    assert got.expire(100.0) == []


def test_an_expiry_found_while_taking_a_chunk_is_answered_at_the_next_expire() -> None:
    got = intake()
    take_all(got, chunks()[:3], now=0.0)
    got.take("dev-2", chunks(tid="u-9-" + "ab" * 16)[0].encode(), 40.0)  # expires dev-1's
    assert [r.to for r in got.expire(40.0)] == [TO]


def test_a_refusal_because_the_caps_are_full_is_busy_and_a_client_reads_it_as_temporary(
) -> None:
    """Issue 14 finding 7: it was 'transfer', which a client takes as final."""
    got = Intake("int8", ReassemblyLimits(max_transfers=1))
    first = split(bytes(600), "u-1-" + "aa" * 8, max_payload=500)
    assert isinstance(got.take("fake-1", first[0], 0.0), Pending)
    refused = got.take("fake-2", split(b"x" * 10, "u-1-" + "bb" * 8)[0], 0.0)
    assert isinstance(refused, Refused) and refused.rejection.reason is Reason.BUSY
    assert refused.to == Addressee("fake-2", 1, bytes.fromhex("bb" * 8))
    reply = Reply(federation="f", round_id=1, client_id="fake-2", nonce=b"b" * 8,
                  accepted=False, reason=refused.rejection.reply_text())
    assert reply.temporary and reply.reason.startswith("busy: too many transfers")
    assert Reason.BUSY.value == REASON_BUSY
    assert not Reply(federation="f", round_id=1, client_id="c", nonce=b"b" * 8,
                     accepted=False, reason="transfer: busy").temporary


def test_an_evicted_transfer_is_answered_busy_and_the_rest_of_its_chunks_are_dropped() -> None:
    got = Intake("int8", ReassemblyLimits(max_transfers_per_sender=1))
    first, rest = chunks()[0], chunks()[1:]
    assert isinstance(got.take("dev-1", first.encode(), 0.0), Pending)
    assert isinstance(got.take("dev-1", chunks(tid="u-3-" + "cd" * 8)[0].encode(), 1.0),
                      Pending)  # evicts TID: dev-1 holds one transfer at most
    (answer,) = got.expire(2.0)
    assert answer.to == TO and answer.rejection.reason is Reason.BUSY
    assert "dropped to make room" in answer.rejection.message
    assert refusals(take_all(got, rest)) == [] and got.reassembler.pending == 1
