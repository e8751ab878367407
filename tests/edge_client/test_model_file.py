"""Weights inside a model file (edge_client/model_file.py): embed, read back, train, refuse."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from import_block import BLOCK_TENSORFLOW

from edge_client.errors import ModelError
from edge_client.model import TrainableModel, embed_weights, embedded_weights, read_metadata
from edge_client.model_file import MEMBER, WEIGHTS_MEMBER, archive_start

Array = npt.NDArray[Any]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plain() -> bytes:
    """A trainable mlp (5 features, 3 classes, batch 8) as exported: no embedded weights."""
    from models.export import export_trainable

    return export_trainable("mlp", (5,), 3, 8, "sgd", seed=1)


def _weights(model_file: bytes, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(size=w.shape).astype(np.float32)
            for w in read_metadata(model_file).weights}


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_embedded_weights_round_trip_and_the_flatbuffer_and_metadata_stay(plain: bytes) -> None:
    weights = _weights(plain, 0)
    data = embed_weights(plain, weights)
    got = embedded_weights(data)
    assert got is not None and list(got) == list(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(got[name], value)
        assert got[name].dtype == np.float32
    assert data[: archive_start(data)] == plain[: archive_start(plain)]
    assert _members(data)[MEMBER] == _members(plain)[MEMBER]
    assert sorted(_members(data)) == [MEMBER, WEIGHTS_MEMBER]
    assert read_metadata(data) == read_metadata(plain)
    assert embed_weights(plain, weights) == data  # reproducible: same weights, same bytes


def test_a_plain_file_has_no_embedded_weights_and_new_weights_replace_old(plain: bytes) -> None:
    assert embedded_weights(plain) is None
    first, second = _weights(plain, 1), _weights(plain, 2)
    again = embed_weights(embed_weights(plain, first), second)
    assert again == embed_weights(plain, second)


def test_the_archive_start_is_the_exported_flatbuffer_length(plain: bytes) -> None:
    from models import metadata

    document = metadata.read(plain)
    assert archive_start(plain) == len(plain) - len(metadata.attach(b"", document))


def test_the_model_starts_from_embedded_weights(plain: bytes) -> None:
    weights = _weights(plain, 3)
    model = TrainableModel(embed_weights(plain, weights))
    assert model.has_embedded_weights and not TrainableModel(plain).has_embedded_weights
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, weights[name])


DEVICE = BLOCK_TENSORFLOW + r"""
import sys
import numpy as np
from edge_client.model import TrainableModel
model = TrainableModel(sys.argv[1])
expected = np.load(sys.argv[2])
start = model.get_weights()
same = all(np.array_equal(start[k], expected[k]) for k in expected.files)
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 5)).astype(np.float32)
y = np.argmax(x[:, :3], axis=1).astype(np.float32)
losses = model.fit(x, y, epochs=3, lr=0.05, rng=rng)
moved = any(not np.array_equal(model.get_weights()[k], start[k]) for k in start)
print(model.runtime, same, moved, "tensorflow" in sys.modules)
"""


def test_a_file_with_embedded_weights_trains_under_tflite_runtime(
    plain: bytes, tmp_path: Path
) -> None:
    weights = _weights(plain, 4)
    (tmp_path / "m.tflite").write_bytes(embed_weights(plain, weights))
    np.savez(tmp_path / "w.npz", **weights)
    env = {**os.environ, "FEDGE_TFLITE_RUNTIME": "tflite_runtime"}
    done = subprocess.run([sys.executable, "-c", DEVICE, str(tmp_path / "m.tflite"),
                           str(tmp_path / "w.npz")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["tflite_runtime", "True", "True", "False"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: {k: v for k, v in w.items() if k != "dense1_bias"},
         r"missing \['dense1_bias'\]"),
        (lambda w: {**w, "extra": np.zeros(1, np.float32)}, r"unexpected \['extra'\]"),
        (lambda w: {**w, "dense0_bias": np.zeros(31, np.float32)},
         r"'dense0_bias' must have shape \(32,\), got \(31,\)"),
        (lambda w: {**w, "dense0_bias": np.zeros(32, np.int32)},
         "'dense0_bias' must be floating point, got int32"),
        (lambda w: {**w, "dense0_bias": np.full(32, np.inf, np.float32)},
         "'dense0_bias' holds NaN or infinite values"),
    ],
)  # fmt: skip
def test_weights_that_do_not_fit_the_metadata_are_refused(
    plain: bytes, change: Any, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        embed_weights(plain, change(_weights(plain, 5)))


def test_float64_weights_are_embedded_as_float32(plain: bytes) -> None:
    weights = {k: v.astype(np.float64) for k, v in _weights(plain, 6).items()}
    got = embedded_weights(embed_weights(plain, weights))
    assert got is not None and {v.dtype for v in got.values()} == {np.dtype(np.float32)}


def _with_archive(plain: bytes, members: dict[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return plain[: archive_start(plain)] + archive.getvalue()


def _npz(**arrays: Array) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_an_embedded_npz_that_lies_about_its_weights_is_refused(plain: bytes) -> None:
    document = _members(plain)[MEMBER]
    weights = _weights(plain, 7)
    wrong_shape = {**weights, "dense0_bias": np.zeros(3, np.float32)}
    cases = {
        r"npz does not fit model 'mlp': missing \['dense0_bias.npy'\], unexpected \[\]": _npz(
            **{k: v for k, v in weights.items() if k != "dense0_bias"}),
        r"'dense0_bias' is float32 \(3,\); the metadata says float32 \(32,\)": _npz(**wrong_shape),
        r"'dense0_bias' is float64": _npz(**{**weights, "dense0_bias": np.zeros(32)}),
        "is unreadable": b"not a zip at all",
    }
    for message, npz in cases.items():
        bad = _with_archive(plain, {MEMBER: document, WEIGHTS_MEMBER: npz})
        with pytest.raises(ModelError, match=message):
            embedded_weights(bad)
        with pytest.raises(ModelError, match=message):
            TrainableModel(bad)


def test_a_member_larger_than_the_file_is_refused_before_reading(plain: bytes) -> None:
    data = bytearray(embed_weights(plain, _weights(plain, 8)))
    entry = data.rfind(b"PK\x01\x02")  # the central directory entry of weights.npz (last)
    assert data[entry + 46 : entry + 46 + len(WEIGHTS_MEMBER)] == WEIGHTS_MEMBER.encode()
    struct.pack_into("<I", data, entry + 24, len(data) + 1)  # its uncompressed size
    with pytest.raises(ModelError, match=f"{WEIGHTS_MEMBER} is {len(data) + 1} bytes; limit"):
        embedded_weights(bytes(data))


@pytest.mark.parametrize("cut", [1, 22, 100, 700])
def test_a_truncated_file_is_a_model_error(plain: bytes, cut: int) -> None:
    data = embed_weights(plain, _weights(plain, 9))
    with pytest.raises(ModelError):
        embedded_weights(data[:-cut])
    with pytest.raises(ModelError):
        embed_weights(data[:-cut], _weights(plain, 9))


def test_bytes_after_the_archive_are_refused(plain: bytes) -> None:
    with pytest.raises(ModelError, match="no zip archive"):
        embedded_weights(embed_weights(plain, _weights(plain, 10)) + b"trailing")


@settings(max_examples=60, deadline=None)
@given(tail=st.binary(max_size=400))
def test_a_garbage_tail_is_a_model_error(plain: bytes, tail: bytes) -> None:
    flatbuffer = plain[: archive_start(plain)]
    with pytest.raises(ModelError):
        embedded_weights(flatbuffer + tail)
    with pytest.raises(ModelError):
        embed_weights(flatbuffer + tail, {})


def test_a_schema_in_the_metadata_is_parsed_strictly_and_must_fit_the_input(plain: bytes
                                                                            ) -> None:
    from model_kit import document, flatbuffer, with_document

    from edge_client.schema import Feature, Schema

    assert read_metadata(plain).schema is None  # exported without one
    five = Schema((Feature("age"), Feature("sex", kind="categorical",
                                           categories=("F", "M", "X")),
                   Feature("bmi")), "outcome", ("a", "b", "c"))
    doc = document(plain)
    fits = with_document(flatbuffer(plain), {**doc, "schema": five.to_dict()})
    assert read_metadata(fits).schema == five
    narrow = five.with_features(five.features[:2])
    with pytest.raises(ModelError, match="the schema makes 4 inputs, the model's input shape "
                                         r"is \[5\]"):
        read_metadata(with_document(flatbuffer(plain), {**doc, "schema": narrow.to_dict()}))
    broken = {**five.to_dict(), "feature": [{"name": "age", "kind": "text"}]}
    with pytest.raises(ModelError, match='model metadata: schema: feature "age": kind'):
        read_metadata(with_document(flatbuffer(plain), {**doc, "schema": broken}))


def test_with_schema_rewrites_only_the_metadatas_schema(plain: bytes) -> None:
    from edge_client.model import with_schema
    from edge_client.schema import Feature, Schema

    weights = _weights(plain, 2)
    data = embed_weights(plain, weights)
    schema = Schema(tuple(Feature(f"v{i}", mean=float(i), std=2.0) for i in range(5)), "y",
                    ("a", "b", "c"), scaling="shared")
    out = with_schema(data, schema)
    assert read_metadata(out).schema == schema
    assert out[: archive_start(out)] == plain[: archive_start(plain)]  # same flatbuffer
    got = embedded_weights(out)
    assert got is not None and all(np.array_equal(got[k], v) for k, v in weights.items())
    narrow = Schema((Feature("v0"),), "y", ("a", "b", "c"))
    with pytest.raises(ModelError, match="schema makes 1"):
        with_schema(plain, narrow)  # one input for a model of five
