"""A bounds-checked reader of the TFLite flatbuffer (schema version 3), in pure Python.

The TFLite runtimes' Python interpreters build a model from its bytes **without** running
the flatbuffer verifier: an offset that points past the end of a truncated or hostile file
is followed, and the process dies of SIGSEGV. :func:`read_flatbuffer` walks what the
runtime walks when it builds the interpreter, before any interpreter exists, and checks
every offset, vector and string against the flatbuffer's length (found from the fedge
archive after it, never from the runtime):

* the header: the root offset inside the buffer and the file identifier ``TFL3``;
* the model: schema version 3, operator codes (builtin ops only), buffers (inline data or
  an ``offset``/``size`` inside the file), metadata entries, signature definitions (their
  subgraph and tensor indices);
* each subgraph: its tensors (shape, type, buffer index, name, quantization vectors, a
  constant's data size equal to what its shape needs), inputs, outputs and operators
  (operator-code index, input, output and intermediate tensor indices, option tables).

Option tables are checked as tables (their vtable and size inside the buffer); inside
them, only the offsets and subgraph indices of the options fedge's models use are
checked (:data:`_OPTIONS`): a kernel reading a nonsensical option value is caught by the
crash-proof probe (:mod:`edge_client.probe`), not here. Work is bounded: at most
:data:`MAX_TABLES` tables (the flatbuffers verifier's own default), so a hostile file
cannot keep a device busy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from edge_client.errors import ModelError
from edge_client.protocol import TensorSpec

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
MAX_TABLES = 1_000_000  # the flatbuffers Verifier's default max_tables
CUSTOM = 32  # BuiltinOperator.CUSTOM: an op the builtin resolver does not have
#: TensorType → (name, bytes per element); 0 for types without a fixed size
TENSOR_TYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
    5: ("string", 0), 6: ("bool", 1), 7: ("int16", 2), 8: ("complex64", 8), 9: ("int8", 1),
    10: ("float64", 8), 11: ("complex128", 16), 12: ("uint64", 8), 13: ("resource", 0),
    14: ("variant", 0), 15: ("uint32", 4), 16: ("uint16", 2), 17: ("int4", 1),
    18: ("bfloat16", 2), 19: ("int2", 1), 20: ("uint4", 1),
}  # fmt: skip
_PACKED = frozenset({"int4", "int2", "uint4", "string", "resource", "variant"})
#: BuiltinOptions type → the fields of its table that hold offsets or subgraph indices,
#: checked like the model's own (VarHandleOptions' strings are in every trainable file:
#: a bad offset there segfaulted the runtime in fuzzing)
_OPTIONS: dict[int, tuple[tuple[str, int], ...]] = {
    17: (("ints", 0),),  # ReshapeOptions.new_shape
    30: (("ints", 0),),  # SqueezeOptions.squeeze_dims
    92: (("subgraph", 0), ("subgraph", 1)),  # IfOptions: then, else
    93: (("subgraph", 0), ("subgraph", 1)),  # WhileOptions: cond, body
    103: (("subgraph", 0),),  # CallOnceOptions.init_subgraph_index
    111: (("string", 0), ("string", 1)),  # VarHandleOptions: container, shared_name
}


@dataclass(frozen=True)
class FlatTensor:
    """One tensor of a subgraph, as the flatbuffer declares it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int  # bytes per element; 0 for string, resource and variant tensors

    @property
    def nbytes(self) -> int:
        """Bytes its data takes (an upper bound for packed types)."""
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class FlatSignature:
    """A signature definition: names → tensor indices of one subgraph."""

    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass(frozen=True)
class FlatModel:
    """What :func:`read_flatbuffer` found: enough to bound memory and compare metadata."""

    length: int
    subgraphs: tuple[tuple[FlatTensor, ...], ...]
    signatures: dict[str, FlatSignature]
    operators: int

    def tensor_bytes(self) -> int:
        """The bytes of every tensor of every subgraph: an upper bound on the arena the
        runtime allocates for a model with fixed shapes (it reuses memory, never more)."""
        return sum(t.nbytes for tensors in self.subgraphs for t in tensors)

    def specs(self, signature: str, side: str) -> dict[str, TensorSpec]:
        """The ``"inputs"`` or ``"outputs"`` of ``signature`` as specs, by name."""
        sig = self.signatures[signature]
        tensors = self.subgraphs[sig.subgraph]
        names = sig.inputs if side == "inputs" else sig.outputs
        return {name: TensorSpec(name, tensors[i].shape, tensors[i].dtype)
                for name, i in names.items()}


def _fail(what: str) -> NoReturn:
    raise ModelError(f"not a valid TFLite flatbuffer: {what} (the file is truncated or damaged)")


class _Buffer:
    """The flatbuffer's bytes and the table budget."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.tables = data, len(data), 0

    def unpack(self, fmt: str, pos: int, what: str) -> int:
        if pos < 0 or pos + struct.calcsize(fmt) > self.size:
            _fail(f"{what} at byte {pos} is outside the flatbuffer ({self.size} bytes)")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def target(self, pos: int, what: str) -> int:
        """Where the uoffset at ``pos`` points, checked to lie inside the buffer."""
        to = pos + self.unpack("<I", pos, what)
        if to % 4 or to + 4 > self.size:
            _fail(f"{what} points to byte {to}, outside the flatbuffer ({self.size} bytes) "
                  "or unaligned")
        return to

    def table(self, pos: int, what: str) -> _Table:
        self.tables += 1
        if self.tables > MAX_TABLES:
            _fail(f"more than {MAX_TABLES:,} tables")
        return _Table(self, pos, what)

    def vector(self, pos: int, itemsize: int, what: str) -> tuple[int, int]:
        """(first element's position, count) of the vector at ``pos``, all inside."""
        count = self.unpack("<I", pos, what)
        if count * itemsize > self.size - pos - 4:
            _fail(f"{what} claims {count:,} elements, past the end of the flatbuffer")
        return pos + 4, count


class _Table:
    """A table whose vtable and inline fields lie inside the buffer."""

    def __init__(self, buf: _Buffer, pos: int, what: str) -> None:
        self.buf, self.pos, self.what = buf, pos, what
        vtable = pos - struct.unpack_from("<i", buf.data, pos)[0] if pos + 4 <= buf.size else -1
        if vtable < 0 or vtable % 2:
            _fail(f"{what}: its vtable is outside the flatbuffer or unaligned")
        self.vtable = vtable
        self.vsize = buf.unpack("<H", vtable, f"{what} vtable")
        self.tsize = buf.unpack("<H", vtable + 2, f"{what} vtable")
        if self.vsize < 4 or self.vsize % 2 or vtable + self.vsize > buf.size:
            _fail(f"{what}: its vtable ({self.vsize} bytes) runs past the flatbuffer")
        if self.tsize < 4 or pos + self.tsize > buf.size:
            _fail(f"{what}: the table ({self.tsize} bytes) runs past the flatbuffer")

    def _field(self, index: int, size: int) -> int | None:
        entry = 4 + 2 * index
        if entry + 2 > self.vsize:
            return None
        offset = self.buf.unpack("<H", self.vtable + entry, f"{self.what} vtable")
        if offset == 0:
            return None
        if offset + size > self.tsize:
            _fail(f"{self.what}: field {index} runs past its table")
        return self.pos + offset

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        pos = self._field(index, struct.calcsize(fmt))
        return default if pos is None else self.buf.unpack(fmt, pos, self.what)

    def table(self, index: int, what: str) -> _Table | None:
        pos = self._field(index, 4)
        return None if pos is None else self.buf.table(self.buf.target(pos, what), what)

    def vector(self, index: int, itemsize: int, what: str) -> tuple[int, int]:
        pos = self._field(index, 4)
        return (0, 0) if pos is None else self.buf.vector(self.buf.target(pos, what),
                                                          itemsize, what)

    def ints(self, index: int, what: str, fmt: str = "<i4") -> list[int]:
        start, count = self.vector(index, np.dtype(fmt).itemsize, what)
        values: list[int] = np.frombuffer(self.buf.data, fmt, count, start).tolist()
        return values

    def string(self, index: int, what: str) -> str:
        start, count = self.vector(index, 1, what)
        if count and (start + count >= self.buf.size or self.buf.data[start + count] != 0):
            _fail(f"{what} is not a terminated string")
        try:
            return self.buf.data[start : start + count].decode()
        except UnicodeDecodeError:
            _fail(f"{what} is not UTF-8")

    def tables(self, index: int, what: str) -> Iterator[_Table]:
        start, count = self.vector(index, 4, what)
        for i in range(count):
            pos = start + 4 * i
            yield self.buf.table(self.buf.target(pos, f"{what}[{i}]"), f"{what}[{i}]")


def _index(value: int, count: int, what: str, *, optional: bool = False) -> int:
    if not (-1 if optional else 0) <= value < count:
        _fail(f"{what} {value} is out of range (0..{count - 1})")
    return value


def _operator_codes(model: _Table) -> int:
    count = 0
    for code in model.tables(1, "operator code"):
        builtin = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
        custom = code.string(1, "custom op name")
        if custom or builtin == CUSTOM:
            raise ModelError(f"the model uses the custom op {custom!r}: fedge model files use "
                             "TFLite builtin ops only (see models/)")
        count += 1
    return count


def _buffers(model: _Table, length: int) -> list[int]:
    """Data bytes of each buffer (inline, or an offset/size range inside the file)."""
    sizes = []
    for i, buffer in enumerate(model.tables(4, "buffer")):
        _, inline = buffer.vector(0, 1, f"buffer {i} data")
        offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
        if offset > 1 and offset + size > length:
            _fail(f"buffer {i} ({size:,} bytes at {offset:,}) lies outside the model")
        sizes.append(size if offset > 1 else inline)
    return sizes


def _tensor(t: _Table, buffers: list[int], where: str) -> FlatTensor:
    name = t.string(3, f"{where} name")
    shape = t.ints(0, f"{where} shape")
    t.ints(7, f"{where} shape signature")
    if any(d < 0 for d in shape):
        _fail(f"tensor {name!r} has a negative dimension in its shape {shape}")
    kind = t.scalar(1, "<b")
    if kind not in TENSOR_TYPES:
        _fail(f"tensor {name!r} has an unknown type {kind}")
    dtype, itemsize = TENSOR_TYPES[kind]
    data = buffers[_index(t.scalar(2, "<I"), len(buffers), f"tensor {name!r} buffer")]
    tensor = FlatTensor(name, tuple(shape), dtype, itemsize)
    if data and dtype not in _PACKED and data != tensor.nbytes:
        _fail(f"constant tensor {name!r} {dtype}{list(shape)} needs {tensor.nbytes:,} bytes; "
              f"its buffer holds {data:,}")
    quantization = t.table(4, f"{where} quantization")
    if quantization is not None:
        for index, size in ((0, 4), (1, 4), (2, 4), (3, 8)):
            quantization.vector(index, size, f"{where} quantization")
        quantization.table(5, f"{where} quantization details")
    if t.table(6, f"{where} sparsity") is not None:
        raise ModelError(f"tensor {name!r} is sparse: fedge model files have dense tensors")
    return tensor


def _options(op: _Table, subgraphs: int, where: str) -> None:
    options = op.table(4, f"{where} options")
    if options is None:
        return
    for kind, field in _OPTIONS.get(op.scalar(3, "<B"), ()):
        if kind == "string":
            options.string(field, f"{where} option {field}")
        elif kind == "ints":
            options.ints(field, f"{where} option {field}")
        else:
            _index(options.scalar(field, "<i"), subgraphs, f"{where} subgraph index")


def _operator(op: _Table, codes: int, tensors: int, subgraphs: int, length: int,
              where: str) -> None:
    _index(op.scalar(0, "<I"), codes, f"{where} operator code")
    for i in op.ints(1, f"{where} inputs"):
        _index(i, tensors, f"{where} input tensor", optional=True)
    for field, what in ((2, "output"), (8, "intermediate")):
        for i in op.ints(field, f"{where} {what}s"):
            _index(i, tensors, f"{where} {what} tensor")
    _options(op, subgraphs, where)
    op.table(12, f"{where} options")
    op.vector(5, 1, f"{where} custom options")
    op.vector(7, 1, f"{where} mutating inputs")
    offset, size = op.scalar(9, "<Q"), op.scalar(10, "<Q")
    if offset > 1 and offset + size > length:
        _fail(f"{where} custom options lie outside the model")


def _subgraph(g: _Table, index: int, codes: int, buffers: list[int], subgraphs: int,
              length: int) -> tuple[tuple[FlatTensor, ...], int]:
    where = f"subgraph {index}"
    tensors = tuple(_tensor(t, buffers, f"{where} tensor {i}")
                    for i, t in enumerate(g.tables(0, f"{where} tensors")))
    for field, what in ((1, "input"), (2, "output")):
        for i in g.ints(field, f"{where} {what}s"):
            _index(i, len(tensors), f"{where} {what} tensor")
    operators = 0
    for i, op in enumerate(g.tables(3, f"{where} operators")):
        _operator(op, codes, len(tensors), subgraphs, length, f"{where} operator {i}")
        operators += 1
    g.string(4, f"{where} name")
    return tensors, operators


def _signature(s: _Table, subgraphs: tuple[tuple[FlatTensor, ...], ...]
               ) -> tuple[str, FlatSignature]:
    key = s.string(2, "signature key")
    graph = _index(s.scalar(4, "<I"), len(subgraphs), f"signature {key!r} subgraph")
    maps: list[dict[str, int]] = []
    for field in (0, 1):
        names: dict[str, int] = {}
        for entry in s.tables(field, f"signature {key!r} tensor map"):
            name = entry.string(0, f"signature {key!r} tensor name")
            names[name] = _index(entry.scalar(1, "<I"), len(subgraphs[graph]),
                                 f"signature {key!r} tensor {name!r} index")
        maps.append(names)
    return key, FlatSignature(graph, maps[0], maps[1])


def read_flatbuffer(data: bytes) -> FlatModel:
    """Check the TFLite flatbuffer ``data`` (exactly the flatbuffer: no trailing archive)
    and return its tensors and signatures (see the module docstring).

    Raises:
        ModelError: anything outside the buffer, out of range or malformed (named), a
            file identifier other than ``TFL3``, another schema version, a custom op or
            a sparse tensor.
    """
    buf = _Buffer(data)
    if len(data) < 8:
        _fail(f"{len(data)} bytes, too short for a header")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelError(f"not a TFLite model: the flatbuffer's file identifier is "
                         f"{bytes(data[4:8])!r}, not {FILE_IDENTIFIER!r}")
    model = buf.table(buf.target(0, "the root table offset"), "the model table")
    if (version := model.scalar(0, "<I")) != SCHEMA_VERSION:
        raise ModelError(f"TFLite schema version {version}; the runtime reads version "
                         f"{SCHEMA_VERSION}")
    codes = _operator_codes(model)
    buffers = _buffers(model, len(data))
    _, count = model.vector(2, 4, "subgraphs")
    graphs = [_subgraph(g, i, codes, buffers, count, len(data))
              for i, g in enumerate(model.tables(2, "subgraphs"))]
    if not graphs:
        _fail("the model has no subgraph")
    model.string(3, "the description")
    for i in model.ints(5, "metadata buffers"):
        _index(i, len(buffers), "metadata buffer")
    for entry in model.tables(6, "metadata"):
        entry.string(0, "metadata name")
        _index(entry.scalar(1, "<I"), len(buffers), "metadata buffer")
    subgraphs = tuple(tensors for tensors, _ in graphs)
    signatures: dict[str, FlatSignature] = {}
    for s in model.tables(7, "signature"):
        key, signature = _signature(s, subgraphs)
        if key in signatures:
            _fail(f"two signatures named {key!r}")
        signatures[key] = signature
    return FlatModel(len(data), subgraphs, signatures, sum(n for _, n in graphs))


def operator_codes(data: bytes) -> list[tuple[int, str]]:
    """The operator codes of the TFLite flatbuffer ``data`` as ``(builtin code, custom name)``.

    Bounds-checked like :func:`read_flatbuffer` but without refusing custom ops: a
    conformance check names them (``custom name`` is "" for a builtin op; a custom op has
    builtin code :data:`CUSTOM`).

    Raises:
        ModelError: a header, offset or string outside the buffer, or not a TFLite model.
    """
    buf = _Buffer(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError(f"not a TFLite model: no {FILE_IDENTIFIER!r} file identifier")
    model = buf.table(buf.target(0, "the root table offset"), "the model table")
    return [(max(code.scalar(0, "<b"), code.scalar(3, "<i")), code.string(1, "custom op name"))
            for code in model.tables(1, "operator code")]
