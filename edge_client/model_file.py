"""The metadata (and embedded weights) of a fedge model file, from its bytes alone.

A fedge model file is a TFLite flatbuffer followed by a zip archive holding
``fedge.json`` (written by ``models.metadata``) and, in a file that carries trained
weights, ``weights.npz`` (float32 arrays by weight name). :func:`read_metadata` reads and
validates the document strictly, so the aggregator can use it too; :func:`embed_weights`
and :func:`embedded_weights` write and read the weights (numpy and ``zipfile`` only: no
interpreter, no TensorFlow). The flatbuffer ends where the archive starts, found from the
archive's End-Of-Central-Directory record (:func:`archive_start`), never guessed.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, ModelError
from edge_client.protocol import TensorSpec
from edge_client.schema import Schema, load_schema, schema_from_dict

FORMAT, FORMAT_VERSION, MEMBER = "fedge-model", 1, "fedge.json"
WEIGHTS_MEMBER = "weights.npz"  # trained weights inside the file (embed_weights)
MAX_METADATA_BYTES = 1 << 20
_EOCD, _EOCD_SIZE, _MAX_COMMENT = b"PK\x05\x06", 22, 0xFFFF  # the zip's end record
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same weights give the same bytes
_NPY: Any = np.lib.format  # the .npy reader and writer (untyped in numpy)
SIGNATURES = ("train", "infer", "evaluate", "get_weights", "set_weights")
DTYPES = frozenset({"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"})

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ModelMetadata:
    """What a fedge model file says about itself (``fedge.json``, format version 1)."""

    kind: str
    model: str
    task: str
    classes: int
    batch_size: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    label_encoding: str
    optimizer: str | None
    learning_rate: float | None
    weights: tuple[TensorSpec, ...]
    signatures: dict[str, dict[str, dict[str, TensorSpec]]]
    hyperparameters: dict[str, float] = field(default_factory=dict)
    quantization: str = "none"
    format_version: int = FORMAT_VERSION
    schema: Schema | None = None  # the federation's data schema, when exported with one


def read_metadata(data: bytes) -> ModelMetadata:
    """Read and validate the metadata of a fedge model file, without an interpreter.

    Raises:
        ModelError: no metadata, unreadable or oversized JSON, wrong format or
            version, or a missing or ill-typed field (the message names it).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo(MEMBER)
            if info.file_size > MAX_METADATA_BYTES:
                raise ModelError(f"model metadata {MEMBER} is {info.file_size} bytes; limit 1 MiB")
            doc = json.loads(archive.read(info))
    except ModelError:
        raise
    except Exception as exc:  # zipfile and json raise a dozen types on bad input
        raise ModelError(f"not a fedge model file: cannot read {MEMBER} ({exc})") from exc
    return _parse(doc)


def _get(doc: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise ModelError(f"model metadata: field {key!r} is missing")
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ModelError(f"model metadata: field {key!r} has a bad value {value!r}")
    return value


def _shape(doc: Any, where: str) -> tuple[int, ...]:
    value = _get(doc, "shape", list)
    if not all(type(d) is int and d >= 0 for d in value):
        raise ModelError(f"model metadata: {where} shape must be a list of sizes, got {value!r}")
    return tuple(value)


def _dtype(doc: Any) -> str:
    dtype = _get(doc, "dtype", str)
    if dtype not in DTYPES:
        raise ModelError(f"model metadata: unsupported dtype {dtype!r}")
    return str(dtype)


def _tensors(doc: Any, key: str) -> dict[str, TensorSpec]:
    return {
        name: TensorSpec(name, _shape(t, f"{key} {name!r}"), _dtype(t))
        for name, t in _get(doc, key, dict).items()
    }


def _weights(doc: Any) -> tuple[TensorSpec, ...]:
    specs = tuple(
        TensorSpec(_get(w, "name", str), _shape(w, "weight"), _dtype(w))
        for w in _get(doc, "weights", list)
    )
    if len({w.name for w in specs}) != len(specs):
        raise ModelError("model metadata: weight names are not unique")
    return specs


def _optimizer(doc: Any) -> tuple[str | None, float | None, dict[str, float]]:
    settings = _get(doc, "optimizer", (dict, type(None)))
    if settings is None:
        return None, None, {}
    numbers = {k: float(_get(settings, k, (int, float))) for k in settings if k != "name"}
    rate = float(_get(settings, "learning_rate", (int, float)))
    del numbers["learning_rate"]
    return _get(settings, "name", str), rate, numbers


def _task(doc: Any) -> tuple[str, int]:
    task, classes = _get(doc, "task", str), _get(doc, "classes", int)
    expected = {0: "regression", 2: "binary"}.get(classes, "multiclass" if classes > 2 else None)
    if task != expected:
        raise ModelError(f"model metadata: task {task!r} does not fit {classes} classes")
    return task, classes


def _schema(doc: Any, input_shape: tuple[int, ...]) -> Schema | None:
    if "schema" not in doc:
        return None
    try:
        schema = schema_from_dict(doc["schema"], "model metadata: schema")
    except ConfigError as e:
        raise ModelError(str(e)) from None
    if input_shape != (len(schema.encoded_names),):
        raise ModelError(f"model metadata: the schema makes {len(schema.encoded_names)} "
                         f"inputs, the model's input shape is {list(input_shape)}")
    return schema


def read_schema(path: Path) -> Schema:
    """A schema from a TOML file, or the one a model file (``.tflite``) carries.

    Raises:
        ConfigError: unreadable file, invalid schema, or a model without a schema.
        ModelError: a ``.tflite`` that is not a fedge model file.
    """
    if path.suffix.lower() != ".tflite":
        return load_schema(path)
    try:
        schema = read_metadata(path.read_bytes()).schema
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if schema is None:
        raise ConfigError(f"{path}: the model file carries no schema (exported without "
                          "--schema)")
    return schema


def _parse(doc: Any) -> ModelMetadata:
    if _get(doc, "format", str) != FORMAT or _get(doc, "format_version", int) != FORMAT_VERSION:
        raise ModelError(
            f"unsupported model format {doc['format']!r} version {doc['format_version']!r}; "
            f"this client reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    task, classes = _task(doc)
    batch_size = _get(doc, "batch_size", int)
    if batch_size < 1:
        raise ModelError(f"model metadata: batch_size must be at least 1, got {batch_size}")
    optimizer, learning_rate, hyperparameters = _optimizer(doc)
    signatures = {
        name: {"inputs": _tensors(sig, "inputs"), "outputs": _tensors(sig, "outputs")}
        for name, sig in _get(doc, "signatures", dict).items()
    }
    input_shape = _shape(_get(doc, "input", dict), "input")
    return ModelMetadata(
        schema=_schema(doc, input_shape),
        kind=_get(doc, "kind", str),
        model=_get(doc, "model", str),
        task=task,
        classes=classes,
        batch_size=batch_size,
        input_shape=input_shape,
        output_shape=_shape(_get(doc, "output", dict), "output"),
        label_encoding=_get(_get(doc, "label", dict), "encoding", str),
        optimizer=optimizer,
        learning_rate=learning_rate,
        weights=_weights(doc),
        signatures=signatures,
        hyperparameters=hyperparameters,
        quantization=_get(doc, "quantization", str),
    )


# ---------------------------------------------------------------- embedded weights


def _end_record(data: bytes) -> int:
    """Offset of the zip's End-Of-Central-Directory record: the last one whose comment
    length reaches exactly to the end of ``data``."""
    lowest = max(0, len(data) - _EOCD_SIZE - _MAX_COMMENT)
    pos = len(data) - _EOCD_SIZE
    while pos >= lowest:
        pos = data.rfind(_EOCD, lowest, pos + len(_EOCD))
        if pos < 0:
            break
        (comment,) = struct.unpack_from("<H", data, pos + 20)
        if pos + _EOCD_SIZE + comment == len(data):
            return pos
        pos -= 1
    raise ModelError("not a fedge model file: no zip archive (end record) after the flatbuffer")


def archive_start(data: bytes) -> int:
    """Offset of the metadata archive in a model file, i.e. the length of the flatbuffer.

    The archive's End-Of-Central-Directory record gives the central directory's size and
    its offset from the archive's own start, so the archive starts at the record's offset
    minus both.

    Raises:
        ModelError: no end record, a multi-disk or ZIP64 archive, or offsets that point
            outside the file or not at a zip entry.
    """
    end = _end_record(data)
    disk, cd_disk, here, entries, cd_size, cd_offset = struct.unpack_from("<HHHHII", data, end + 4)
    if disk or cd_disk or here != entries:
        raise ModelError("not a fedge model file: a multi-disk zip archive")
    if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ModelError("not a fedge model file: a ZIP64 archive (fedge writes small ones)")
    start = int(end - cd_size - cd_offset)
    if start < 0 or (entries and data[start : start + 4] != b"PK\x03\x04"):
        raise ModelError(
            "not a fedge model file: the archive's end record points outside the file "
            "(truncated or damaged)"
        )
    return start


def _raw_member(data: bytes, name: str, limit: int) -> bytes | None:
    """The bytes of archive member ``name`` (None when absent), refused above ``limit``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if name not in archive.namelist():
                return None
            info = archive.getinfo(name)
            if info.file_size > limit:
                raise ModelError(f"model file member {name} is {info.file_size} bytes; "
                                 f"limit {limit}")
            return archive.read(info)
    except ModelError:
        raise
    except Exception as exc:  # zipfile raises a dozen types on bad input
        raise ModelError(f"not a fedge model file: cannot read {name} ({exc})") from exc


def _checked_weights(meta: ModelMetadata, weights: Mapping[str, Any],
                     where: str) -> dict[str, Array]:
    """``weights`` as arrays of the metadata's dtype, in metadata order, or a ModelError."""
    expected = [w.name for w in meta.weights]
    missing = [n for n in expected if n not in weights]
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ModelError(f"{where} do not fit model {meta.model!r}: missing {missing}, "
                         f"unexpected {extra}")
    out = {}
    for spec in meta.weights:
        value = np.asarray(weights[spec.name])
        if value.dtype.kind != "f":
            raise ModelError(f"{where}: {spec.name!r} must be floating point, got {value.dtype}")
        if value.shape != spec.shape:
            raise ModelError(f"{where}: {spec.name!r} must have shape {spec.shape}, "
                             f"got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ModelError(f"{where}: {spec.name!r} holds NaN or infinite values")
        out[spec.name] = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
    return out


def _npz_bytes(arrays: Mapping[str, Array]) -> bytes:
    """An ``.npz`` (one ``NAME.npy`` per array, stored) with fixed timestamps."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            _NPY.write_array(member, array, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), member.getvalue())
    return archive.getvalue()


def embed_weights(data: bytes, weights: Mapping[str, Array]) -> bytes:
    """The same model file carrying ``weights``: its flatbuffer, then a new archive holding
    the same ``fedge.json`` and ``weights.npz`` (float32 arrays by weight name).

    Weights already embedded in ``data`` are replaced. The result is reproducible: the
    same file and weights give the same bytes.

    Raises:
        ModelError: ``data`` is not a fedge model file, or ``weights`` miss or add a name,
            or have a wrong shape, a non-float dtype or a non-finite value (named).
    """
    meta = read_metadata(data)
    document = _raw_member(data, MEMBER, MAX_METADATA_BYTES)
    assert document is not None  # read_metadata read it
    arrays = _checked_weights(meta, weights, "weights to embed")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(MEMBER, date_time=_ZIP_DATE), document)
        zf.writestr(zipfile.ZipInfo(WEIGHTS_MEMBER, date_time=_ZIP_DATE), _npz_bytes(arrays))
    return data[: archive_start(data)] + archive.getvalue()


def with_schema(data: bytes, schema: Schema) -> bytes:
    """The same model file whose metadata carries ``schema`` (e.g. with the federation's
    shared statistics): the flatbuffer and any embedded weights unchanged.

    Raises:
        ModelError: ``data`` is not a fedge model file, or ``schema`` makes another input
            width than the model takes.
    """
    read_metadata(data)
    raw = _raw_member(data, MEMBER, MAX_METADATA_BYTES)
    assert raw is not None  # read_metadata read it
    doc = json.loads(raw)
    doc["schema"] = schema.to_dict()
    document = json.dumps(doc, sort_keys=True, indent=1).encode()
    weights = _raw_member(data, WEIGHTS_MEMBER, len(data))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(MEMBER, date_time=_ZIP_DATE), document)
        if weights is not None:
            zf.writestr(zipfile.ZipInfo(WEIGHTS_MEMBER, date_time=_ZIP_DATE), weights)
    out = data[: archive_start(data)] + archive.getvalue()
    read_metadata(out)  # the schema must fit the model's input
    return out


def _read_npy(npz: zipfile.ZipFile, spec: TensorSpec) -> Array:
    """One weight of an embedded ``weights.npz``; its header is checked before any read."""
    where = f"embedded {WEIGHTS_MEMBER}: {spec.name!r}"
    with npz.open(f"{spec.name}.npy") as f:
        version = _NPY.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ModelError(f"{where}: unsupported .npy version {version}")
        read_header = (_NPY.read_array_header_1_0 if version == (1, 0)
                       else _NPY.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if shape != spec.shape or dtype != np.dtype(spec.dtype):
            raise ModelError(f"{where} is {dtype} {shape}; the metadata says "
                             f"{spec.dtype} {spec.shape}")
        size = math.prod(shape) * dtype.itemsize
        raw = f.read(size + 1)
    if len(raw) != size:
        raise ModelError(f"{where}: {len(raw)} bytes of data, expected {size}")
    array = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
    if not np.all(np.isfinite(array)):
        raise ModelError(f"{where} holds NaN or infinite values")
    return np.ascontiguousarray(array).copy()


def embedded_weights(data: bytes) -> dict[str, Array] | None:
    """The weights embedded in a model file by :func:`embed_weights`, in metadata order;
    None when the file carries none (a file as exported: its initial weights only).

    Raises:
        ModelError: bad metadata, bytes after the archive, or an embedded ``weights.npz``
            that is larger than the file, unreadable, or does not match the metadata's
            weight names, shapes and dtypes.
    """
    meta = read_metadata(data)
    archive_start(data)  # zipfile tolerates bytes after the archive; a model file may not
    blob = _raw_member(data, WEIGHTS_MEMBER, len(data))
    if blob is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as npz:
            names = set(npz.namelist())
            expected = {f"{w.name}.npy" for w in meta.weights}
            if names != expected:
                raise ModelError(f"embedded {WEIGHTS_MEMBER} does not fit model "
                                 f"{meta.model!r}: missing {sorted(expected - names)}, "
                                 f"unexpected {sorted(names - expected)}")
            return {spec.name: _read_npy(npz, spec) for spec in meta.weights}
    except ModelError:
        raise
    except Exception as exc:  # zipfile and numpy raise many types on bad input
        raise ModelError(f"embedded {WEIGHTS_MEMBER} is unreadable ({exc})") from exc
