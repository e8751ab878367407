"""Chunked transfers: split under the cap, reassemble once, bounded and strict."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client.errors import ConfigError
from edge_client.protocol import Chunk, MalformedMessage
from edge_client.transfer import (
    DEFAULT_MAX_PAYLOAD,
    ChunkRejected,
    Reassembler,
    ReassemblyLimits,
    TransferFailed,
    TransfersBusy,
    chunk_overhead,
    split,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.integers(300, 2000), st.randoms(use_true_random=False))
def test_split_respects_the_cap_and_reassembles_in_any_order(
    payload: bytes, max_payload: int, rnd: random.Random
) -> None:
    chunks = split(payload, "t-1", max_payload=max_payload)
    assert all(len(c) <= max_payload for c in chunks)
    arrivals = chunks + rnd.sample(chunks, k=len(chunks) // 2)  # duplicates
    rnd.shuffle(arrivals)
    reassembler = Reassembler()
    delivered = [p for c in arrivals if (p := reassembler.accept("c", c, 0.0)) is not None]
    assert delivered == [payload]
    assert reassembler.pending == 0


def test_default_cap_is_128_kib_including_the_header() -> None:
    payload = bytes(range(256)) * 2000  # 512,000 bytes
    chunks = split(payload, "a" * 64)
    assert max(len(c) for c in chunks) <= DEFAULT_MAX_PAYLOAD == 131_072
    assert len(chunks) == 4
    assert sum(len(c) for c in chunks) < len(payload) + 4 * chunk_overhead("a" * 64)


def test_shuffled_duplicated_and_dropped_chunks() -> None:
    rnd = random.Random(4)
    whole, lossy = rnd.randbytes(10_000), rnd.randbytes(10_000)
    complete = split(whole, "whole", max_payload=1000)
    dropped = split(lossy, "lossy", max_payload=1000)
    del dropped[3]
    arrivals = complete * 2 + dropped * 2
    rnd.shuffle(arrivals)
    reassembler = Reassembler(ReassemblyLimits(timeout=60.0))
    delivered = [p for i, c in enumerate(arrivals)
                 if (p := reassembler.accept("c1", c, now=i * 0.1)) is not None]
    assert delivered == [whole]
    assert reassembler.pending == 1 and reassembler.buffered_bytes == len(lossy)
    assert reassembler.expire(now=59.0) == []
    assert reassembler.expire(now=61.0) == [("c1", "lossy")]
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0
    # a late retransmission of the completed transfer is not delivered again
    assert all(reassembler.accept("c1", c, now=62.0) is None for c in complete)
    assert reassembler.pending == 0


def test_transfer_ids_are_scoped_per_sender() -> None:
    reassembler = Reassembler()
    (chunk,) = split(b"same id", "t")
    assert reassembler.accept("a", chunk, 0.0) == b"same id"
    assert reassembler.accept("b", chunk, 0.0) == b"same id"
    assert reassembler.accept("a", chunk, 0.0) is None


def test_completed_memory_is_bounded() -> None:
    reassembler = Reassembler(ReassemblyLimits(remember_completed=2))
    first = split(b"x", "t0")[0]
    for i in range(3):
        assert reassembler.accept("c", split(b"x", f"t{i}")[0], 0.0) == b"x"
    assert reassembler.accept("c", first, 0.0) == b"x"  # forgotten: memory stays bounded


def test_caps_are_checked_before_buffering() -> None:
    limits = ReassemblyLimits(max_transfer_bytes=5000, max_buffered_bytes=8000,
                              max_transfers=3, max_transfers_per_sender=2)
    reassembler = Reassembler(limits)
    with pytest.raises(ChunkRejected, match="transfer too large"):
        reassembler.accept("c", split(bytes(5001), "big", max_payload=1000)[0], 0.0)
    assert reassembler.pending == 0
    for sender, tid in (("a", "1"), ("a", "2")):
        reassembler.accept(sender, split(bytes(3000), tid, max_payload=1000)[0], 0.0)
    with pytest.raises(ChunkRejected, match="already has 2"):
        reassembler.accept("a", split(bytes(10), "3", max_payload=300)[0], 0.0)
    with pytest.raises(ChunkRejected, match="buffer full"):
        reassembler.accept("b", split(bytes(2001), "1", max_payload=1000)[0], 0.0)
    reassembler.accept("b", split(bytes(2000), "1", max_payload=1000)[0], 0.0)
    with pytest.raises(ChunkRejected, match="too many transfers"):
        reassembler.accept("d", split(bytes(10), "1", max_payload=300)[0], 0.0)
    assert reassembler.buffered_bytes == 8000


def _chunk(**change: Any) -> Chunk:
    base = Chunk.decode(split(bytes(2000), "t", max_payload=1000)[0])
    return dataclasses.replace(base, **change)


def test_inconsistent_and_corrupt_transfers_are_rejected() -> None:
    """Each failure fails the whole transfer (TransferFailed) and forgets it."""
    reassembler = Reassembler()
    reassembler.accept("c", _chunk(), 0.0)
    with pytest.raises(TransferFailed, match="differ"):
        reassembler.accept("c", _chunk(index=1, total_size=2001), 0.0)
    assert reassembler.pending == 0
    reassembler.accept("c", _chunk(), 0.0)
    reassembler.accept("c", _chunk(index=1, data=bytes(800)), 0.0)
    with pytest.raises(TransferFailed, match="beyond total_size"):
        reassembler.accept("c", _chunk(index=2, data=bytes(1200)), 0.0)
    assert reassembler.pending == 0
    with pytest.raises(TransferFailed, match="chunks for"):
        reassembler.accept("d", _chunk(count=3000, index=0, total_size=2000), 0.0)
    rest = [Chunk.decode(c) for c in split(bytes(2000), "t", max_payload=1000)[1:]]
    tampered = [Chunk(c.transfer_id, c.index, c.count, c.total_size, c.sha256,
                      b"\x01" * len(c.data)) for c in rest]
    reassembler.accept("c", _chunk(), 0.0)
    with pytest.raises(TransferFailed, match="sha256 mismatch"):
        for chunk in tampered:
            reassembler.accept("c", chunk, 0.0)
    assert reassembler.pending == 0
    # a correct retransmission after a rejected transfer still completes
    assert [reassembler.accept("c", c, 1.0) for c in split(bytes(2000), "t", max_payload=1000)
            ][-1] == bytes(2000)


def test_undecodable_chunks_and_bad_settings() -> None:
    with pytest.raises(MalformedMessage):
        Reassembler().accept("c", b"\xff\x00", 0.0)
    with pytest.raises(ConfigError, match="smaller than the chunk header"):
        split(b"abc", "t", max_payload=100)


def test_empty_payload_is_one_chunk() -> None:
    (chunk,) = split(b"", "empty")
    assert Reassembler().accept("c", chunk, 0.0) == b""


def _first(tid: str, size: int = 1000) -> bytes:
    """The first of two chunks of a ``size``-byte transfer ``tid`` (never completed)."""
    return split(bytes(size), tid, max_payload=size // 2 + 200)[0]


def test_evicting_a_sender_at_its_cap_loses_its_own_least_recently_active_transfer() -> None:
    """Issue 14 finding 7: 4 partial transfers on one device's topic refused its update."""
    r = Reassembler(ReassemblyLimits(max_transfers_per_sender=2), evict=True)
    r.accept("dev-a", _first("junk-1"), 0.0)
    r.accept("dev-a", _first("junk-2"), 1.0)
    r.accept("dev-a", _first("junk-1"), 2.0)  # a repeat keeps junk-1 active
    whole = split(b"genuine", "real", max_payload=300)
    assert r.accept("dev-a", whole[0], 3.0) == b"genuine"
    r.accept("dev-b", _first("b-1"), 3.0)
    assert (r.pending, r.evicted) == (2, 1)  # junk-2 went: junk-1 and b-1 are left
    r.drop("dev-a", "junk-1")
    assert (r.pending, r.buffered_bytes) == (1, 1000)


def test_full_caps_evict_a_flood_but_never_a_protected_senders_only_transfer() -> None:
    selected = {"dev-a", "dev-b"}
    r = Reassembler(ReassemblyLimits(max_transfers=3, max_buffered_bytes=10_000), evict=True,
                    protected=selected.__contains__)
    r.accept("dev-b", _first("b"), 0.0)
    r.accept("fake-1", _first("f1"), 1.0)
    r.accept("fake-2", _first("f2"), 2.0)
    with pytest.raises(TransfersBusy, match="too many transfers"):  # fake for fake: no
        r.accept("fake-3", _first("f3"), 3.0)
    r.accept("dev-a", _first("a"), 4.0)  # a selected sender evicts the oldest fake
    with pytest.raises(TransfersBusy, match="too many transfers"):
        r.accept("fake-3", _first("f3"), 5.0)
    r.accept("dev-a", _first("a2"), 6.0)  # now dev-a holds 2 of 3 ...
    r.accept("dev-b", _first("b2"), 7.0)  # ... and dev-b's takes dev-a's older one
    assert r.evicted == 3
    assert sorted(k for k in r._open) == [("dev-a", "a2"), ("dev-b", "b"), ("dev-b", "b2")]
    r.drop("dev-b", "b2")
    with pytest.raises(TransfersBusy, match="buffer full"):  # 2,000 + 9,000 > 10,000
        r.accept("dev-c", _first("c", 9000), 8.0)


def test_without_evict_a_full_cap_refuses_as_before() -> None:
    r = Reassembler(ReassemblyLimits(max_transfers_per_sender=1))
    r.accept("a", _first("1"), 0.0)
    with pytest.raises(ChunkRejected, match="already has 1") as raised:
        r.accept("a", _first("2"), 0.0)
    assert not isinstance(raised.value, TransfersBusy) and r.evicted == 0
