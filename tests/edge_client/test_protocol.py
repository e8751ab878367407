"""The wire format: golden bytes, round trips, strict decoding, the topic tree.

Regenerate the golden files only on purpose (a format change is a protocol change):
``FEDGE_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/edge_client/test_protocol.py -k golden``
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Literal

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_client.errors import ProtocolError
from edge_client.protocol import (
    CODEC_DTYPES,
    CODECS,
    MESSAGES,
    NUMPY_DTYPES,
    Chunk,
    FeatureSummary,
    Hyperparameters,
    InvalidTopic,
    MalformedMessage,
    Manifest,
    Message,
    MessageTooLarge,
    Presence,
    Reply,
    Round,
    StatsReport,
    Status,
    Tensor,
    TensorSet,
    TopicRef,
    Topics,
    UnsupportedVersion,
    Update,
    Weights,
    check_id,
    is_id,
    parse_topic,
    parse_update_transfer_id,
    update_transfer_id,
)

GOLDEN = Path(__file__).parent / "golden"
SHA_A = hashlib.sha256(b"model").hexdigest()
SHA_B = hashlib.sha256(b"weights").hexdigest()
NONCE = bytes(range(16))
RUN = "3f9a0c1e5b7d2468"  # a run id as the aggregator makes them (16 hex digits)


def _tensor(name: str, codec: str, shape: tuple[int, ...], seed: int) -> Tensor:
    count = math.prod(shape)
    rng = np.random.default_rng(seed)
    if codec == "int8":
        channels = shape[-1] if len(shape) >= 2 else 1
        data = rng.integers(-127, 128, count).astype("i1").tobytes()
        scales = np.linspace(0.01, 0.02, channels).astype("<f4").tobytes()
        return Tensor(name, codec, "int8", shape, scales, data)
    data = rng.normal(size=count).astype(NUMPY_DTYPES[CODEC_DTYPES[codec]]).tobytes()
    return Tensor(name, codec, CODEC_DTYPES[codec], shape, b"", data)


HYPER = Hyperparameters(epochs=2, batch_size=32, learning_rate=0.05, mu=0.01)
SAMPLES: dict[str, Message] = {
    "manifest": Manifest("cardio", SHA_A, 48_213, 7, SHA_B, 8, "fp32", "agg-2025", bytes(64),
                         run_id=RUN),
    "manifest-unsigned": Manifest("cardio", SHA_A, 48_213, 7, SHA_B, 8, "fp32", "agg-2025",
                                  run_id=RUN),
    "manifest-finished": Manifest("cardio", SHA_A, 48_213, 9, SHA_B, 9, "fp32", "agg-2025",
                                  bytes(64), run_id=RUN, finished="rounds"),
    "manifest-privacy-budget": Manifest("cardio", SHA_A, 48_213, 4, SHA_B, 4, "fp32",
                                        "agg-2025", bytes(64), run_id=RUN,
                                        finished="privacy budget"),
    "weights": Weights("cardio", 7, (_tensor("dense0_kernel", "fp32", (3, 2), 1),
                                     _tensor("dense0_bias", "fp32", (2,), 2))),
    "round-fraction": Round("cardio", 8, 7, SHA_A, 1_750_000_000.5, HYPER, "int8", fraction=0.25,
                            run_id=RUN),
    "round-selected": Round("cardio", 8, 7, SHA_A, 1_750_000_000.5, HYPER, "fp16",
                            selected=("watch-01", "watch-02"), run_id=RUN),
    "presence": Presence("watch-01", True, 120, "tflite_runtime", "2.14.0", "0.1.0",
                         1_750_000_000.25, battery=0.8, charging=False),
    "presence-will": Presence("watch-01", False, 120, "tflite_runtime", "2.14.0", "0.1.0",
                              1_750_000_000.25),
    "update-int8": Update("cardio", 8, "watch-01", 7, SHA_A, NONCE, 120,
                          {"loss": 0.25, "accuracy": 0.875}, "int8",
                          (_tensor("conv0_kernel", "int8", (3, 2, 4), 3),
                           _tensor("conv0_bias", "int8", (4,), 4),
                           _tensor("step", "int8", (), 5), _tensor("empty", "int8", (0, 3), 6)),
                          run_id=RUN),
    "update-fp16": Update("cardio", 8, "watch-02", 7, SHA_A, NONCE, 64, {}, "fp16",
                          (_tensor("dense0_kernel", "fp16", (4, 2), 7),), run_id=RUN),
    "reply-accepted": Reply("cardio", 8, "watch-01", NONCE, True, run_id=RUN),
    "reply-rejected": Reply("cardio", 8, "watch-01", NONCE, False, "stale base_version 6",
                            run_id=RUN),
    "status": Status("cardio", RUN, 8, "collecting", 7, 1_750_000_000.5, 5, 3,
                     {"late": 1, "norm": 2}, 6, {"round": 7.0, "samples": 420.0, "loss": 0.25},
                     1_750_000_000.25),
    "chunk": Chunk("u-8-0001020304050607", 1, 3, 300, SHA_B, bytes(range(100))),
    "tensors": TensorSet((_tensor("dense0_kernel", "fp32", (2, 2), 8),)),
    "stats": StatsReport("ward-7", SHA_A, 120, 10, (
        FeatureSummary("age", True, 118, 2, 6490.0, 372_000.5, 21.0, 90.0, (0, 3, 9, 20, 25, 30,
                                                                        15, 10, 4, 2, 0, 0)),
        FeatureSummary("sex", False, 120, 0, 0.0, 0.0, 0.0, 0.0, (61, 58, 1))), ("smoker",),
        1_750_000_000.5),
}


def test_every_message_type_has_a_golden_sample() -> None:
    assert {m.KIND for m in MESSAGES} == {m.KIND for m in SAMPLES.values()}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_bytes(name: str) -> None:
    message = SAMPLES[name]
    path = GOLDEN / f"{name}.cbor"
    if os.environ.get("FEDGE_REGENERATE_GOLDEN") == "1":
        path.write_bytes(message.encode())
    golden = path.read_bytes()
    assert message.encode() == golden, f"{path.name}: the wire format changed"
    assert type(message).decode(golden) == message


# ------------------------------------------------------------------ round trips

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
shas = st.text("0123456789abcdef", min_size=64, max_size=64)
counters = st.integers(0, 2**53)
texts = st.text(st.characters(min_codepoint=32, exclude_characters="\x7f",
                              exclude_categories=["Cs"]), max_size=64)
finite = st.floats(allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn, codec: str | None = None) -> Tensor:
    codec = codec or draw(st.sampled_from(CODECS))
    shape = draw(shapes)
    dtype = np.dtype(NUMPY_DTYPES[CODEC_DTYPES[codec]])
    if codec == "int8":
        values = draw(hnp.arrays(dtype, shape, elements=st.integers(-127, 127)))
        channels = shape[-1] if len(shape) >= 2 else 1
        scales = draw(hnp.arrays(np.dtype("<f4"), channels,
                                 elements=st.floats(0, 2.0**100, width=32)))
        return Tensor(draw(texts.filter(bool)), codec, CODEC_DTYPES[codec], shape, scales.tobytes(),
                      values.tobytes())
    width: Literal[16, 32] = 16 if dtype.itemsize == 2 else 32
    elements = st.floats(allow_nan=False, allow_infinity=False, width=width)
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    name = draw(texts.filter(bool))
    return Tensor(name, codec, CODEC_DTYPES[codec], shape, b"", values.tobytes())


def tensor_tuples(codec: str | None = None) -> st.SearchStrategy[tuple[Tensor, ...]]:
    return st.lists(tensors(codec), max_size=4, unique_by=lambda t: t.name).map(tuple)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    codec = draw(st.sampled_from(CODECS))
    return Update(draw(ids), draw(counters), draw(ids), draw(counters), draw(shas),
                  draw(st.binary(min_size=8, max_size=64)), draw(st.integers(1, 2**53)),
                  draw(st.dictionaries(texts, finite, max_size=5)), codec,
                  draw(tensor_tuples(codec)))


hypers = st.builds(Hyperparameters, st.integers(1, 10_000), st.integers(1, 1_000_000),
                   st.floats(1e-12, 1e3), st.floats(0, 1e6))
selection = st.one_of(
    st.tuples(st.lists(ids, max_size=5).map(tuple), st.none()),
    st.tuples(st.none(), st.floats(1e-9, 1.0)),
)
timestamps = st.floats(0, 1e11)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Manifest, ids, shas, st.integers(1, 2**26), counters, shas, counters,
              st.sampled_from(CODECS), ids, st.none() | st.binary(min_size=1, max_size=128)),
    st.builds(Weights, ids, counters, tensor_tuples()),
    st.builds(lambda f, r, w, s, d, h, c, sel: Round(f, r, w, s, d, h, c, *sel), ids, counters,
              counters, shas, timestamps, hypers, st.sampled_from(CODECS), selection),
    st.builds(Presence, ids, st.booleans(), counters, texts, texts, texts, timestamps,
              st.none() | st.floats(0, 1), st.none() | st.booleans()),
    updates(),
    st.builds(Reply, ids, counters, ids, st.binary(min_size=8, max_size=64), st.booleans(),
              texts),
    st.builds(lambda t, n, i, d, s: Chunk(t, min(i, n - 1), n, len(d) + 5, s, d), ids,
              st.integers(1, 65_536), st.integers(0, 65_535), st.binary(max_size=64), shas),
    st.builds(TensorSet, tensor_tuples()),
)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    encoded = message.encode()
    assert type(message).decode(encoded) == message
    assert type(message).decode(encoded).encode() == encoded


# ------------------------------------------------------------------ strictness


def _body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = cbor2.loads(SAMPLES[name].encode())
    return body


def _rejects(cls: type[Message], body: Any, *fragments: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        cls.decode(cbor2.dumps(body))
    for fragment in fragments:
        assert fragment in str(caught.value)
    return caught.value


def test_unknown_version_is_a_clear_error() -> None:
    body = _body("presence") | {"v": 4}
    error = _rejects(Presence, body, "presence.v", "version 4")
    assert isinstance(error, UnsupportedVersion)
    for before in (1, 2):  # before runs; before signed rounds and replies
        old = _rejects(Presence, body | {"v": before}, "presence.v", f"version {before}")
        assert isinstance(old, UnsupportedVersion)
    _rejects(Presence, body | {"v": 2.0}, "presence.v")


def test_missing_extra_and_mistyped_fields_name_the_field() -> None:
    body = _body("reply-rejected")
    _rejects(Reply, {k: v for k, v in body.items() if k != "nonce"}, "missing", "nonce")
    _rejects(Reply, body | {"extra": 1}, "unknown", "extra")
    _rejects(Reply, body | {"round_id": "8"}, "reply.round_id", "expected int")
    _rejects(Reply, body | {"round_id": True}, "reply.round_id")
    _rejects(Reply, body | {"kind": "presence"}, "reply.kind")
    _rejects(Reply, body | {"client_id": "a/b"}, "reply.client_id")


def test_nan_and_out_of_range_values_are_rejected() -> None:
    _rejects(Round, _body("round-fraction") | {"deadline": math.nan}, "round.deadline")
    _rejects(Round, _body("round-fraction") | {"fraction": 1.5}, "round.fraction")
    _rejects(Round, _body("round-fraction") | {"selected": ["a"]}, "exactly one")
    _rejects(Presence, _body("presence") | {"battery": 2.0}, "presence.battery")
    _rejects(Update, _body("update-fp16") | {"metrics": {"loss": math.inf}}, "metrics")


def test_inconsistent_tensors_are_rejected() -> None:
    body = _body("update-int8")
    tensor = body["tensors"][0]
    cases: list[tuple[Any, ...]] = [
        ({"shape": [3, 2, 5]}, "update.tensors[0].data", "expected"),
        ({"scales": b"\0" * 4}, "update.tensors[0].scales"),
        ({"dtype": "float32"}, "update.tensors[0].dtype"),
        ({"shape": [2**20, 2**20, 2**20]}, "update.tensors[0].shape"),
        ({"shape": [-1]}, "update.tensors[0].shape"),
        ({"data": b"\x80" * 24}, "-128"),
        ({"scales": np.array([np.nan] * 4, "<f4").tobytes()}, "scales"),
    ]
    for change, *fragments in cases:
        broken = dict(body, tensors=[tensor | change, *body["tensors"][1:]])
        _rejects(Update, broken, *fragments)
    fp16 = _body("update-fp16")
    nan_data = np.full(8, np.nan, "<f2").tobytes()
    _rejects(Update, dict(fp16, tensors=[fp16["tensors"][0] | {"data": nan_data}]), "non-finite")
    _rejects(Update, dict(body, codec="fp16"), "codec")
    _rejects(Update, dict(body, tensors=[tensor, tensor]), "duplicate")


@pytest.mark.parametrize("payload, fragment", [
    (b"", "empty payload"),
    (b"\xc2\x41\x01", "tags are not allowed"),
    (b"\x5f\x41\x01\xff", "unsupported CBOR item"),
    (b"\x5b" + b"\xff" * 8, "exceeds"),
    (b"\x9b" + b"\x00\x00\x00\x01\x00\x00\x00\x00", "declared"),
    (b"\x81" * 20 + b"\x00", "nested"),
    (b"\xf7", "unsupported CBOR item"),
    (b"\xa2\x61a\x00\x61a\x01", "invalid CBOR"),
    (b"\x00\x00", "trailing"),
    (b"\x62\xff\xfe", "invalid CBOR"),
])
def test_malformed_cbor_is_rejected(payload: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessage, match=fragment):
        Presence.decode(payload)


def test_oversized_payload_is_rejected_before_decoding() -> None:
    with pytest.raises(MessageTooLarge, match="exceeds the cap"):
        Presence.decode(b"\x00" * (Presence.MAX_BYTES + 1))
    with pytest.raises(MessageTooLarge):
        Update.decode(SAMPLES["update-int8"].encode(), max_bytes=10)


def test_signed_bytes_do_not_depend_on_the_signature() -> None:
    signed, unsigned = SAMPLES["manifest"], SAMPLES["manifest-unsigned"]
    assert isinstance(signed, Manifest) and isinstance(unsigned, Manifest)
    assert signed.signed_bytes() == unsigned.signed_bytes() == unsigned.encode()
    assert dataclasses.replace(signed, round_id=9).signed_bytes() != signed.signed_bytes()


def test_round_selection_by_fraction_is_deterministic_and_proportional() -> None:
    base = SAMPLES["round-fraction"]
    assert isinstance(base, Round)
    chosen = [base.selects(f"watch-{i}") for i in range(4000)]
    assert chosen == [base.selects(f"watch-{i}") for i in range(4000)]
    assert 0.22 < sum(chosen) / 4000 < 0.28
    listed = SAMPLES["round-selected"]
    assert isinstance(listed, Round)
    assert listed.selects("watch-01") and not listed.selects("watch-03")


# ------------------------------------------------------------------ topics


def test_topic_tree() -> None:
    topics = Topics("cardio")
    assert topics.manifest() == "fedge/v3/cardio/manifest"
    assert topics.round() == "fedge/v3/cardio/round"
    assert topics.model_chunk(SHA_A, 3) == f"fedge/v3/cardio/model/{SHA_A}/3"
    assert topics.weights_chunk(7, 0) == "fedge/v3/cardio/weights/7/0"
    assert topics.presence("w1") == "fedge/v3/cardio/presence/w1"
    assert topics.update("w1") == "fedge/v3/cardio/update/w1"
    assert topics.reply("w1") == "fedge/v3/cardio/reply/w1"
    assert topics.stats("w1") == "fedge/v3/cardio/stats/w1"
    assert topics.stats_filter() == "fedge/v3/cardio/stats/+"
    assert topics.update_filter("aggs") == "$share/aggs/fedge/v3/cardio/update/+"
    assert topics.weights_chunks(7, 2) == ["fedge/v3/cardio/weights/7/0",
                                           "fedge/v3/cardio/weights/7/1"]
    assert Topics("cardio", "org/fl").everything() == "org/fl/v3/cardio/#"


@pytest.mark.parametrize("topic, ref", [
    ("fedge/v3/f/manifest", TopicRef("manifest", "f")),
    ("fedge/v3/f/round", TopicRef("round", "f")),
    (f"fedge/v3/f/model/{SHA_A}/12", TopicRef("model", "f", sha256=SHA_A, index=12)),
    ("fedge/v3/f/weights/7/0", TopicRef("weights", "f", version=7, index=0)),
    ("fedge/v3/f/presence/c-1", TopicRef("presence", "f", client_id="c-1")),
    ("fedge/v3/f/update/c.1", TopicRef("update", "f", client_id="c.1")),
    ("fedge/v3/f/reply/C_1", TopicRef("reply", "f", client_id="C_1")),
    ("fedge/v3/f/stats/c-1", TopicRef("stats", "f", client_id="c-1")),
])
def test_parse_topic(topic: str, ref: TopicRef) -> None:
    assert parse_topic(topic) == ref
    assert Topics("f").parse(topic) == ref


@pytest.mark.parametrize("topic", [
    "other/v3/f/manifest", "fedge/v9/f/manifest", "fedge/v3/f/manifest/x", "fedge/v3/f/nope",
    "fedge/v3/f/weights/07/0", "fedge/v3/f/weights/-1/0", "fedge/v3/f/model/ABC/0",
    "fedge/v3/f/update/+", "fedge/v3/f/update/#", "fedge/v3/f/update/", "fedge/v3/f",
    "fedge/v3/f/presence/" + "x" * 65, "fedge/v3/-f/round", "fedge/v3/f/update/.hidden",
])
def test_parse_topic_rejects(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(topic)


def test_topics_reject_unsafe_ids_and_foreign_federations() -> None:
    for bad in ("a/b", "a+b", "#", "", "x" * 65, "é"):
        with pytest.raises(InvalidTopic, match="client_id"):
            Topics("f").update(bad)
    with pytest.raises(InvalidTopic, match="federation"):
        Topics("f/g")
    with pytest.raises(InvalidTopic, match="federation"):
        Topics("f").parse("fedge/v3/g/round")


@given(ids, ids, shas, st.integers(0, 10**15), st.integers(0, 10**15))
def test_topics_round_trip(fed: str, client: str, sha: str, version: int, index: int) -> None:
    topics = Topics(fed)
    for topic in (topics.presence(client), topics.update(client), topics.reply(client),
                  topics.stats(client)):
        assert topics.parse(topic).client_id == client
    assert topics.parse(topics.model_chunk(sha, index)) == TopicRef("model", fed, sha256=sha,
                                                                    index=index)
    assert topics.parse(topics.weights_chunk(version, index)) == TopicRef(
        "weights", fed, version=version, index=index)


# ------------------------------------------------------------------ ids


def test_update_transfer_ids_have_the_documented_format() -> None:
    """``u-{round}-{nonce hex}[-{attempt}]``, as in the golden chunk and docs/protocol.md."""
    golden = SAMPLES["chunk"]
    assert isinstance(golden, Chunk)
    assert update_transfer_id(8, bytes(range(8))) == golden.transfer_id
    assert update_transfer_id(8, NONCE, 0) == f"u-8-{NONCE.hex()}-0"
    assert update_transfer_id(2**53, NONCE, 12) == f"u-9007199254740992-{NONCE.hex()}-12"
    assert parse_update_transfer_id(f"u-8-{NONCE.hex()}-0") == (8, NONCE)
    assert parse_update_transfer_id(f"u-8-{NONCE.hex()}-a1b2c3") == (8, NONCE)  # any suffix


@pytest.mark.parametrize("text", [
    "", "weights-7", SHA_A, "u-8", "u-08-0001020304050607", "u-8-00010203040506",  # 7 bytes
    "u-8-0001020304050607X", "u-8-00010203040506070", "u-8-000102030405060A",
    "u-9007199254740993-0001020304050607", "u-99999999999999999-0001020304050607",
    "u--1-0001020304050607", "u-8-0001020304050607-a/b",
])
def test_a_transfer_id_naming_no_update_parses_to_none(text: str) -> None:
    assert parse_update_transfer_id(text) is None


@pytest.mark.parametrize(("args", "fragment"), [
    ((-1, NONCE, 0), "round_id"), ((2**53 + 1, NONCE, 0), "round_id"),
    ((True, NONCE, 0), "round_id"), ((1, bytes(7), 0), "nonce"), ((1, NONCE, -1), "attempt"),
    ((1, bytes(30), 0), "update transfer id"),  # 60 hex digits: longer than an id may be
])
def test_update_transfer_id_refuses_what_no_update_carries(args: tuple[Any, ...],
                                                           fragment: str) -> None:
    with pytest.raises(InvalidTopic, match=fragment):
        update_transfer_id(*args)


@given(st.integers(0, 2**53), st.binary(min_size=8, max_size=24),
       st.none() | st.integers(0, 10**6))
def test_update_transfer_ids_round_trip(round_id: int, nonce: bytes, attempt: int | None
                                        ) -> None:
    try:
        text = update_transfer_id(round_id, nonce, attempt)
    except InvalidTopic:  # a long nonce, a long round id and an attempt: over 64 characters
        assert len(f"u-{round_id}-{nonce.hex()}-{attempt}") > 64
        return
    assert is_id(text) and check_id(text) == text
    assert parse_update_transfer_id(text) == (round_id, nonce)


@pytest.mark.parametrize(("value", "ok"), [
    ("a", True), ("dev-1", True), ("c.1", True), ("A_b-c.d", True), ("9" * 64, True),
    ("-a", False), ("_a", False), (".", False), ("..", False), (".hidden", False),
    ("", False), ("a/b", False), ("a+b", False), ("#", False), ("$SYS", False),
    ("a\n", False), ("a b", False), ("é", False), ("x" * 65, False), (5, False),
])
def test_the_id_rule(value: Any, ok: bool) -> None:
    assert is_id(value) is ok
