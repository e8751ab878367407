"""The fedge.json format (version 1), pinned by a golden file; packing is reproducible."""

from __future__ import annotations

import json
from pathlib import Path

from models import metadata, zoo

GOLDEN = Path(__file__).parent / "golden" / "fedge-logreg-3-binary-b4.json"
SGD = {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9}


def test_document_matches_the_golden_file() -> None:
    # A change here changes the file format: bump FORMAT_VERSION and the reader with it.
    spec = zoo.build("logreg", (3,), 2)
    document = metadata.describe(spec, 4, kind="trainable", optimizer=SGD, seed=0)
    assert document == json.loads(GOLDEN.read_text())


def test_packing_is_reproducible_and_leaves_the_flatbuffer_first() -> None:
    document = json.loads(GOLDEN.read_text())
    flatbuffer = b"\x1c\x00\x00\x00TFL3" + bytes(range(200))
    first, second = metadata.attach(flatbuffer, document), metadata.attach(flatbuffer, document)
    assert first == second
    assert first.startswith(flatbuffer)
    assert metadata.read(first) == document


def test_inference_files_list_only_infer_and_no_optimizer() -> None:
    spec = zoo.build("cnn2d", (12, 12), 5)
    document = metadata.describe(spec, 1, kind="inference", optimizer=None, quantization="int8")
    assert list(document["signatures"]) == ["infer"]
    assert document["signatures"]["infer"]["outputs"]["output"]["shape"] == [1, 5]
    assert (document["optimizer"], document["quantization"]) == (None, "int8")


def test_regression_labels_are_targets_and_outputs_are_values() -> None:
    document = metadata.describe(zoo.build("mlp", (7,), 0), 8, kind="trainable", optimizer=SGD)
    assert document["label"]["encoding"] == "target"
    assert document["output"] == {"name": "output", "shape": [], "dtype": "float32",
                                  "meaning": "prediction"}  # fmt: skip
    assert document["signatures"]["infer"]["outputs"]["output"]["shape"] == [8]
