"""The bounds-checked TFLite flatbuffer reader (edge_client/flatbuffer.py) on real files."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_kit import flatbuffer

from edge_client import flatbuffer as fb
from edge_client.errors import ModelError
from edge_client.flatbuffer import read_flatbuffer
from edge_client.model import TrainableModel


def test_an_exported_file_reads_with_the_signatures_the_runtime_sees(logreg_file: bytes) -> None:
    flat = read_flatbuffer(flatbuffer(logreg_file))
    interpreter = TrainableModel(logreg_file)._interpreter
    assert set(flat.signatures) == set(interpreter.signatures)
    for name in flat.signatures:
        assert flat.specs(name, "inputs") == interpreter.inputs(name), name
        assert flat.specs(name, "outputs") == interpreter.outputs(name), name
    assert 0 < flat.tensor_bytes() < 10_000 and flat.operators > 0


def test_every_truncation_of_the_flatbuffer_is_refused(logreg_file: bytes) -> None:
    flat = flatbuffer(logreg_file)
    for n in range(len(flat)):
        with pytest.raises(ModelError, match="TFLite"):
            read_flatbuffer(flat[:n])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                min_size=1, max_size=6))
def test_damaged_bytes_give_a_model_error_or_a_model_never_another_error(
        logreg_file: bytes, changes: list[tuple[float, int]]) -> None:
    flat = bytearray(flatbuffer(logreg_file))
    for where, value in changes:
        flat[int(where * len(flat))] = value
    with contextlib.suppress(ModelError):  # any other exception fails the test
        read_flatbuffer(bytes(flat))


def test_a_file_that_is_not_tflite_is_named(logreg_file: bytes) -> None:
    flat = bytearray(flatbuffer(logreg_file))
    flat[4:8] = b"ABCD"
    with pytest.raises(ModelError, match=r"file identifier is b'ABCD', not b'TFL3'"):
        read_flatbuffer(bytes(flat))
    flat[4:8] = b"TFL3"
    struct.pack_into("<I", flat, 0, len(flat) + 40)
    with pytest.raises(ModelError, match=r"root table offset points to byte \d+, outside"):
        read_flatbuffer(bytes(flat))


def _table_field(flat: bytes, table: int, index: int) -> int:
    """The absolute position of field ``index`` of the table at ``table``."""
    vtable = table - struct.unpack_from("<i", flat, table)[0]
    return table + struct.unpack_from("<H", flat, vtable + 4 + 2 * index)[0]


def test_another_schema_version_is_refused(logreg_file: bytes) -> None:
    flat = bytearray(flatbuffer(logreg_file))
    root = struct.unpack_from("<I", flat, 0)[0]
    struct.pack_into("<I", flat, _table_field(flat, root, 0), 2)
    with pytest.raises(ModelError, match="schema version 2; the runtime reads version 3"):
        read_flatbuffer(bytes(flat))


def test_a_custom_op_is_refused(logreg_file: bytes) -> None:
    from tensorflow.lite.python import schema_py_generated as schema

    flat = bytearray(flatbuffer(logreg_file))
    root = schema.Model.GetRootAsModel(flat, 0)
    code = next(root.OperatorCodes(i) for i in range(root.OperatorCodesLength())
                if root.OperatorCodes(i).DeprecatedBuiltinCode() < fb.CUSTOM)
    struct.pack_into("<i", flat, code._tab.Pos + code._tab.Offset(10), fb.CUSTOM)
    with pytest.raises(ModelError, match="custom op '': fedge model files use TFLite builtin"):
        read_flatbuffer(bytes(flat))


def test_the_work_on_a_file_is_bounded(logreg_file: bytes, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    monkeypatch.setattr(fb, "MAX_TABLES", 20)
    with pytest.raises(ModelError, match="more than 20 tables"):
        read_flatbuffer(flatbuffer(logreg_file))
