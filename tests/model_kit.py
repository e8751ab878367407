"""Damaged and hostile fedge model files, made from a good one (no TensorFlow needed).

A fedge model file is a TFLite flatbuffer followed by a zip archive holding ``fedge.json``
(edge_client/model_file.py). These helpers change one part and keep the other, so each
file reaches the check it is meant for: a cut flatbuffer with intact metadata reaches the
flatbuffer checks (and, on the code before them, the TFLite runtime, where it segfaults).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from edge_client.model_file import MEMBER, archive_start


def document(model: bytes) -> dict[str, Any]:
    """The ``fedge.json`` document of ``model``."""
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        doc: dict[str, Any] = json.loads(archive.read(MEMBER))
        return doc


def with_document(flatbuffer: bytes, doc: dict[str, Any]) -> bytes:
    """``flatbuffer`` followed by an archive holding ``doc`` as ``fedge.json``."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(MEMBER, date_time=(1980, 1, 1, 0, 0, 0)),
                    json.dumps(doc, sort_keys=True).encode())
    return flatbuffer + archive.getvalue()


def flatbuffer(model: bytes) -> bytes:
    """The TFLite flatbuffer of ``model`` (everything before its archive)."""
    return model[: archive_start(model)]


def truncated(model: bytes, keep: float = 0.5) -> bytes:
    """``model`` with its flatbuffer cut to ``keep`` of its length, the metadata intact
    (what an interrupted copy or a hostile sender produces)."""
    flat = flatbuffer(model)
    return with_document(flat[: int(len(flat) * keep)], document(model))


def claiming_batch(model: bytes, batch: int) -> bytes:
    """``model`` whose metadata claims a fixed batch size of ``batch`` (and signature shapes
    to match); the flatbuffer is unchanged."""
    doc = document(model)
    old = doc["batch_size"]
    doc["batch_size"] = batch
    for name, signature in doc["signatures"].items():
        if name in ("get_weights", "set_weights"):  # weights have no batch dimension
            continue
        for tensors in signature.values():
            for tensor in tensors.values():
                if tensor["shape"][:1] == [old]:
                    tensor["shape"][0] = batch
    return with_document(flatbuffer(model), doc)


def crashing(model: bytes) -> bytes:
    """``model`` with one shape changed so that it passes every check of
    edge_client/model_check.py but segfaults the TFLite runtime (tflite_runtime 2.14;
    found by fuzzing): the last tensor that a READ_VARIABLE of the ``train`` signature
    reads a kernel into (before the optimizer's update) claims 4,194,304 columns, and the
    runtime copies that much out of the variable. Needs TensorFlow's schema module.
    """
    import struct

    from tensorflow.lite.python import schema_py_generated as schema

    flat = bytearray(flatbuffer(model))
    root = schema.Model.GetRootAsModel(flat, 0)
    train = next(root.SignatureDefs(i) for i in range(root.SignatureDefsLength())
                 if root.SignatureDefs(i).SignatureKey() == b"train")
    graph = root.Subgraphs(train.SubgraphIndex())
    read = schema.BuiltinOperator.READ_VARIABLE
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    tensor = [graph.Tensors(op.Outputs(0)) for op in ops
              if root.OperatorCodes(op.OpcodeIndex()).BuiltinCode() == read
              and graph.Tensors(op.Outputs(0)).ShapeLength() >= 2][-1]
    field = tensor._tab.Offset(4)  # Tensor.shape
    start, rank = tensor._tab.Vector(field), tensor._tab.VectorLen(field)
    struct.pack_into("<i", flat, start + 4 * (rank - 1), 1 << 22)
    return with_document(bytes(flat), document(model))
