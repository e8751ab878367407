"""The metadata a fedge model file carries about itself (writer side, no TensorFlow).

A fedge ``.tflite`` file is the TFLite flatbuffer followed by a small zip
archive holding one member, ``fedge.json`` (the way TFLite Support's
MetadataPopulator packs associated files). Interpreters read the flatbuffer
from the start of the buffer and ignore the tail; ``zipfile`` finds the archive
from the end of the file. So the file alone tells a client everything.

``fedge.json`` (format version 1)::

    {
      "format": "fedge-model", "format_version": 1,
      "kind": "trainable" | "inference",
      "model": "cnn1d", "task": "multiclass", "classes": 4, "batch_size": 32,
      "input": {"name": "x", "shape": [6, 100], "dtype": "float32"},
      "label": {"name": "y", "dtype": "float32", "shape": [],
                "encoding": "class_index", "min": 0, "max": 3},
      "output": {"name": "output", "shape": [4], "dtype": "float32",
                 "meaning": "probabilities"},
      "optimizer": {"name": "adam", "learning_rate": 0.001,
                    "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07} | null,
      "quantization": "none" | "int8",
      "weights": [{"name": "conv0_kernel", "shape": [5, 6, 16], "dtype": "float32"}, ...],
      "signatures": {"train": {"inputs": {"x": {"shape": [32, 6, 100], "dtype": "float32"},
                                          ...},
                               "outputs": {"loss": {"shape": [], "dtype": "float32"}}},
                     ...},
      "seed": 0,
      "schema": {"format": "fedge-schema/1", "label": {...}, "feature": [...]},  (optional)
      "class_weights": [0.6, 2.9]  (optional: train's loss weight per class)
    }

Shapes in ``input``, ``label``, ``output`` and ``weights`` exclude the batch
dimension; shapes under ``signatures`` include it. Labels are float32 for every
task: ``class_index`` (0..classes-1; binary uses 0/1) or ``target`` (regression,
``min``/``max`` null). ``learning_rate`` is the default the client feeds to ``lr``.
``schema`` (present when exported with one) is the federation's data schema
(``edge_client.schema``): which CSV columns become the input, and how.
``class_weights`` (present when exported with them) weight ``train``'s loss by class.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

from models.zoo import ModelSpec

FORMAT = "fedge-model"
FORMAT_VERSION = 1
MEMBER = "fedge.json"
Json = dict[str, Any]


def _tensor(shape: Sequence[int]) -> Json:
    return {"shape": [int(d) for d in shape], "dtype": "float32"}


def _signatures(spec: ModelSpec, batch: int, kind: str, dp_sgd: bool = False) -> Json:
    x = _tensor([batch, *spec.input_shape])
    vector, scalar = _tensor([batch]), _tensor([])
    output = _tensor([batch, spec.classes] if spec.classes else [batch])
    infer = {"inputs": {"x": x}, "outputs": {"output": output}}
    if kind == "inference":
        return {"infer": infer}
    weights = {n: _tensor(s) for n, s in spec.weight_shapes().items()}
    signatures: Json = {
        "train": {
            "inputs": {"x": x, "y": vector, "mask": vector, "lr": scalar, "mu": scalar},
            "outputs": {"loss": scalar},
        },
        "infer": infer,
        "evaluate": {
            "inputs": {"x": x, "y": vector, "mask": vector},
            "outputs": {"loss": scalar, "correct": scalar},
        },
        "get_weights": {"inputs": {}, "outputs": weights},
        "set_weights": {"inputs": weights, "outputs": {"ok": scalar}},
    }
    if dp_sgd:
        noise = {f"noise_{n}": t for n, t in weights.items()}
        signatures["train_dp"] = {
            "inputs": {"x": x, "y": vector, "mask": vector, "lr": scalar, "mu": scalar,
                       "clip": scalar, "denominator": scalar, **noise},
            "outputs": {"loss": scalar, "clipped": scalar},
        }
    return signatures


def _label(spec: ModelSpec) -> Json:
    label: Json = {"name": "y", "dtype": "float32", "shape": []}
    if spec.task == "regression":
        return {**label, "encoding": "target", "min": None, "max": None}
    return {**label, "encoding": "class_index", "min": 0, "max": spec.classes - 1}


def describe(
    spec: ModelSpec,
    batch_size: int,
    *,
    kind: str,
    optimizer: Mapping[str, Any] | None,
    quantization: str = "none",
    seed: int | None = None,
    dp_sgd: bool = False,
    schema: Mapping[str, Any] | None = None,
    class_weights: Sequence[float] | None = None,
) -> Json:
    """Build the ``fedge.json`` document of a model file.

    Args:
        spec: the configured zoo model.
        batch_size: the fixed batch size of every signature.
        kind: "trainable" or "inference".
        optimizer: name, default learning rate and hyperparameters, or None.
        quantization: "none" or "int8".
        seed: the seed of the initial weights, if any.
        dp_sgd: the file also has the ``train_dp`` signature (record-level DP-SGD).
        schema: the federation's data schema as a dict (``Schema.to_dict()``), or None.
        class_weights: ``train``'s loss weight per class, or None (unweighted).
    """
    classification = spec.task != "regression"
    extra: Json = {} if schema is None else {"schema": dict(schema)}
    if class_weights is not None:
        extra["class_weights"] = [float(w) for w in class_weights]
    return {
        **extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": spec.name,
        "task": spec.task,
        "classes": spec.classes,
        "batch_size": batch_size,
        "input": {"name": "x", **_tensor(spec.input_shape)},
        "label": _label(spec),
        "output": {
            "name": "output",
            **_tensor([spec.classes] if classification else []),
            "meaning": "probabilities" if classification else "prediction",
        },
        "optimizer": dict(optimizer) if optimizer is not None else None,
        "quantization": quantization,
        "weights": [{"name": n, **_tensor(s)} for n, s in spec.weight_shapes().items()],
        "signatures": _signatures(spec, batch_size, kind, dp_sgd),
        "seed": seed,
    }


def attach(flatbuffer: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Append ``metadata`` as ``fedge.json`` in a zip archive after ``flatbuffer``.

    The archive is byte-for-byte reproducible (fixed timestamp, sorted keys).
    """
    document = json.dumps(metadata, sort_keys=True, indent=1).encode()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(MEMBER, date_time=(1980, 1, 1, 0, 0, 0)), document)
    return flatbuffer + archive.getvalue()


def read(data: bytes) -> Json:
    """Return the ``fedge.json`` document of a model file (no validation).

    Raises:
        ValueError: the file carries no fedge metadata.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            result: Json = json.loads(zf.read(MEMBER))
            return result
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"no readable {MEMBER} in the model file: {exc}") from exc
