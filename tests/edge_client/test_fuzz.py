"""Decoder fuzzing: whatever arrives, only ProtocolError escapes, and caps hold.

The corpus is the golden files (one valid payload per message type); the tests
feed arbitrary bytes, byte-level mutations of the corpus and field-level
mutations of its CBOR maps: 11,000 examples in all.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_client.errors import ProtocolError
from edge_client.protocol import (
    MESSAGES,
    InvalidTopic,
    Message,
    MessageTooLarge,
    Update,
    parse_topic,
)
from edge_client.quantize import quantize
from edge_client.transfer import Reassembler, ReassemblyLimits

GOLDEN = Path(__file__).parent / "golden"
DECODERS = {cls.KIND: cls for cls in MESSAGES}
CORPUS = [(DECODERS[path.stem.split("-")[0]], path.read_bytes())
          for path in sorted(GOLDEN.glob("*.cbor"))]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_reject(cls: type[Message], payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        cls.decode(payload)


def test_corpus_covers_every_message_type() -> None:
    assert {cls for cls, _ in CORPUS} == set(MESSAGES)


@settings(FUZZ, max_examples=3000)
@given(st.sampled_from(MESSAGES), st.binary(max_size=600))
def test_arbitrary_bytes(cls: type[Message], payload: bytes) -> None:
    _decode_or_reject(cls, payload)


@st.composite
def byte_mutations(draw: st.DrawFn) -> tuple[type[Message], bytes]:
    cls, data = draw(st.sampled_from(CORPUS))
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(buffer) - 1, 0)))
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "copy"]))
        if op == "flip" and buffer:
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buffer:
            buffer[at] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x1B, 0x5B, 0x7B, 0x9B, 0xBB,
                                               0xC2, 0xD8, 0xF7, 0xF9, 0xFB, 0xFF]))
        elif op == "cut":
            del buffer[at:]
        elif op == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del buffer[at:at + draw(st.integers(1, 16))]
        else:
            buffer[at:at] = buffer[draw(st.integers(0, len(buffer))):][:32]
    return cls, bytes(buffer)


@pytest.mark.slow
@settings(FUZZ, max_examples=4000)
@given(byte_mutations())
def test_mutated_golden_messages(case: tuple[type[Message], bytes]) -> None:
    _decode_or_reject(*case)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _mutate_map(body: Any, draw: st.DrawFn) -> None:
    if not isinstance(body, dict) or not body:
        return
    key = draw(st.sampled_from(sorted(body)))
    op = draw(st.sampled_from(["replace"] * 3 + ["descend"] * 2 + ["drop", "add"]))
    if op == "replace":
        body[key] = draw(cbor_values | st.integers(-5, 2**64 - 1))
    elif op == "drop":
        del body[key]
    elif op == "add":
        body[draw(st.text(max_size=12))] = draw(cbor_values)
    elif isinstance(body[key], list) and body[key]:
        _mutate_map(body[key][draw(st.integers(0, len(body[key]) - 1))], draw)
    else:
        _mutate_map(body[key], draw)


@st.composite
def field_mutations(draw: st.DrawFn) -> tuple[type[Message], bytes]:
    cls, data = draw(st.sampled_from(CORPUS))
    body = cbor2.loads(data)
    for _ in range(draw(st.integers(1, 3))):
        _mutate_map(body, draw)
    return cls, cbor2.dumps(body)


@pytest.mark.slow
@settings(FUZZ, max_examples=3000)
@given(field_mutations())
def test_field_mutations(case: tuple[type[Message], bytes]) -> None:
    _decode_or_reject(*case)


@settings(FUZZ, max_examples=500)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), byte_mutations()), max_size=6))
def test_reassembler_takes_any_bytes(feed: list[tuple[str, tuple[type[Message], bytes]]]) -> None:
    reassembler = Reassembler(ReassemblyLimits(max_transfer_bytes=10_000))
    for now, (sender, (_, payload)) in enumerate(feed):
        with contextlib.suppress(ProtocolError):
            reassembler.accept(sender, payload, float(now))


@settings(FUZZ, max_examples=500)
@given(st.text(max_size=120) | st.sampled_from(["fedge/v3/f/update/c", "fedge/v3/f/round"]))
def test_parse_topic_takes_any_text(topic: str) -> None:
    with contextlib.suppress(InvalidTopic):
        parse_topic(topic)


# ------------------------------------------------------------------ allocation caps


def _peak_while(cls: type[Message], payload: bytes) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            cls.decode(payload)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _update_body(**tensor_change: Any) -> dict[str, Any]:
    tensor = quantize("w", [1.0, 2.0], "fp32")
    update = Update("f", 1, "c", 0, "0" * 64, b"n" * 8, 1, {}, "fp32", (tensor,))
    body: dict[str, Any] = cbor2.loads(update.encode())
    body["tensors"][0].update(tensor_change)
    return body


@pytest.mark.parametrize("payload", [
    b"\x5b" + (2**62).to_bytes(8, "big") + b"\0" * 100,  # a byte string of 4 EiB
    b"\x9b" + (2**40).to_bytes(8, "big") + b"\0" * 100,  # an array of 2**40 items
    b"\xbb" + (2**40).to_bytes(8, "big") + b"\0" * 100,  # a map of 2**40 pairs
    b"\x81" * 100_000 + b"\x00",  # nesting bomb
    b"\x9a" + (8_000_000).to_bytes(4, "big") + b"\0" * 8_000_000,  # 8M tiny items
    cbor2.dumps(_update_body(shape=[2**25, 2**25])),  # 2**50 elements claimed
    cbor2.dumps(_update_body(shape=[2**26, 0, 2**26])),
])
def test_crafted_huge_lengths_allocate_nothing(payload: bytes) -> None:
    assert _peak_while(Update, payload) < 256 * 1024


def test_over_cap_payload_is_rejected_without_copying() -> None:
    payload = b"\x00" * (Update.MAX_BYTES + 1)
    with pytest.raises(MessageTooLarge):
        Update.decode(payload)
    assert _peak_while(Update, payload) < 64 * 1024


def test_valid_large_update_decodes_within_twice_its_size() -> None:
    tensor = quantize("w", [0.5] * 2_000_000, "fp32")
    payload = Update("f", 1, "c", 0, "0" * 64, b"n" * 8, 1, {}, "fp32", (tensor,)).encode()
    tracemalloc.start()
    try:
        Update.decode(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(payload)
