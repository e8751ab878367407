"""The update intake: where undecodable updates are answered, what a reply may say."""

from __future__ import annotations

from aggregator.intake import Addressee, addressee
from aggregator.reasons import Reason, Rejection


def test_undecodable_updates_are_answered_through_their_transfer_id() -> None:
    nonce = bytes(range(16))
    assert addressee("dev-1", None, f"u-12-{nonce.hex()}-3") == Addressee("dev-1", 12, nonce)
    assert addressee("dev-1", None, f"u-12-{nonce.hex()}") == Addressee("dev-1", 12, nonce)
    assert addressee("dev-1", None, "weights-3") is None
    assert addressee("dev-1", None, "u-12-abc") is None  # odd hex: not a nonce


def test_reply_reasons_are_safe_and_short() -> None:
    text = Rejection(Reason.SHAPE, "tensor 'x\n' " + "y" * 400).reply_text()
    assert text.startswith("shape: tensor 'x?' ") and len(text) == 256 and text.endswith("...")
