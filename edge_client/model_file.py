"""The metadata of a fedge model file, read from the file bytes alone (no interpreter).

A fedge model file is a TFLite flatbuffer followed by a zip archive holding
``fedge.json`` (written by ``models.metadata``). :func:`read_metadata` reads and
validates that document strictly, so the aggregator can use it too.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ModelError
from edge_client.runtime import TensorSpec

FORMAT, FORMAT_VERSION, MEMBER = "fedge-model", 1, "fedge.json"
MAX_METADATA_BYTES = 1 << 20
SIGNATURES = ("train", "infer", "evaluate", "get_weights", "set_weights")
DTYPES = frozenset({"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"})

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class WeightSpec:
    """Name, per-tensor shape and dtype of one model weight."""

    name: str
    shape: tuple[int, ...]
    dtype: str


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
    weights: tuple[WeightSpec, ...]
    signatures: dict[str, dict[str, dict[str, TensorSpec]]]
    hyperparameters: dict[str, float] = field(default_factory=dict)
    quantization: str = "none"
    format_version: int = FORMAT_VERSION


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
        name: TensorSpec(_shape(t, f"{key} {name!r}"), np.dtype(_dtype(t)))
        for name, t in _get(doc, key, dict).items()
    }


def _weights(doc: Any) -> tuple[WeightSpec, ...]:
    specs = tuple(
        WeightSpec(_get(w, "name", str), _shape(w, "weight"), _dtype(w))
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
    return ModelMetadata(
        kind=_get(doc, "kind", str),
        model=_get(doc, "model", str),
        task=task,
        classes=classes,
        batch_size=batch_size,
        input_shape=_shape(_get(doc, "input", dict), "input"),
        output_shape=_shape(_get(doc, "output", dict), "output"),
        label_encoding=_get(_get(doc, "label", dict), "encoding", str),
        optimizer=optimizer,
        learning_rate=learning_rate,
        weights=_weights(doc),
        signatures=signatures,
        hyperparameters=hyperparameters,
        quantization=_get(doc, "quantization", str),
    )
