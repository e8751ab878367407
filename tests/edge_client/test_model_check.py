"""What a model file passes before an interpreter sees it (edge_client/model_check.py)."""

from __future__ import annotations

from typing import Any

import pytest
from model_kit import claiming_batch, document, flatbuffer, truncated, with_document

from edge_client import runtime
from edge_client.errors import ModelError
from edge_client.model import TrainableModel
from edge_client.model_check import ModelLimits, check_model_file
from edge_client.model_file import archive_start


@pytest.fixture
def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("an interpreter was created before the checks refused the file")

    monkeypatch.setattr(runtime, "interpreter_class", refuse)


def test_a_good_file_passes_and_only_its_flatbuffer_goes_to_the_interpreter(
        logreg_file: bytes) -> None:
    checked = check_model_file(logreg_file)
    assert checked.flatbuffer == logreg_file[: archive_start(logreg_file)]
    assert checked.metadata.batch_size == 8
    assert set(checked.structure.signatures) == set(checked.metadata.signatures)


def test_a_batch_size_of_67_million_is_refused_before_any_interpreter(
        logreg_file: bytes, no_interpreter: None) -> None:
    huge = claiming_batch(logreg_file, 67_108_864)
    message = "batch size 67,108,864 is above the bound of 65,536"
    with pytest.raises(ModelError, match=message):
        check_model_file(huge)
    with pytest.raises(ModelError, match=message):
        TrainableModel(huge)


def test_a_cut_flatbuffer_is_refused_before_any_interpreter(
        logreg_file: bytes, no_interpreter: None) -> None:
    for keep in (0.0, 0.1, 0.5, 0.9, 0.999):
        with pytest.raises(ModelError, match="not a valid TFLite flatbuffer: "):
            TrainableModel(truncated(logreg_file, keep))


@pytest.mark.parametrize(("limits", "message"), [
    (ModelLimits(max_file_bytes=1000), r"model file is 22,\d{3} bytes; the bound is 1,000"),
    (ModelLimits(max_batch_size=4), "batch size 8 is above the bound of 4"),
    (ModelLimits(max_tensor_bytes=100), r"tensor 'input' \[8, 4\] takes 128 bytes; the bound "
                                        "is 100"),
    (ModelLimits(max_weight_bytes=16), "the weights take 20 bytes; the bound is 16"),
    (ModelLimits(max_arena_bytes=2000), r"tensors take 2,\d{3} bytes together; the bound on "
                                        "its memory is 2,000"),
])  # fmt: skip
def test_each_bound_is_named_with_its_value(logreg_file: bytes, limits: ModelLimits,
                                            message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check_model_file(logreg_file, limits)


def _lying(model: bytes, change: Any) -> bytes:
    doc = document(model)
    change(doc)
    return with_document(flatbuffer(model), doc)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["signatures"].update(extra={"inputs": {}, "outputs": {}}),
     "the model metadata list signature 'extra'; the flatbuffer has evaluate, get_weights"),
    (lambda d: d["signatures"]["infer"]["outputs"]["output"].update(shape=[8, 3]),
     r"signature 'infer' outputs \{'output': \(\(8, 2\), 'float32'\)\} differ"),
    (lambda d: d["weights"][0].update(shape=[5, 1]),
     "signature 'get_weights' outputs differ from the weights the metadata declare"),
    (lambda d: d["input"].update(shape=[5]),
     r"signature 'evaluate' input 'x' has shape \(8, 4\); the metadata say batch size 8 of "
     r"\(5,\)"),
])  # fmt: skip
def test_metadata_that_disagree_with_the_flatbuffer_are_refused(
        logreg_file: bytes, no_interpreter: None, change: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check_model_file(_lying(logreg_file, change))
