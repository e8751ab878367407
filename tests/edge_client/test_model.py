"""TrainableModel and read_metadata (edge_client/model.py) on real exported files."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_client import runtime
from edge_client.errors import ConfigError, ModelError
from edge_client.model import TrainableModel, read_metadata

Array = npt.NDArray[Any]
BATCH = 8
DOCUMENT_KEYS = {
    "format", "format_version", "kind", "model", "task", "classes", "batch_size", "input",
    "label", "output", "optimizer", "quantization", "weights", "signatures", "seed",
}  # fmt: skip


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Small files per task: binary logreg, multiclass mlp (Adam), regression mlp."""
    from models.export import export_trainable

    return {
        "binary": export_trainable("logreg", (4,), 2, BATCH, "sgd"),
        "multiclass": export_trainable("mlp", (5,), 3, BATCH, "adam", seed=1),
        "regression": export_trainable("mlp", (5,), 0, BATCH, "sgd"),
    }


def _data(task: str, n: int, seed: int = 0) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    features = 4 if task == "binary" else 5
    x = rng.normal(size=(n, features)).astype(np.float32)
    if task == "regression":
        return x, (x @ np.linspace(-1.0, 1.0, features)).astype(np.float32)
    classes = 2 if task == "binary" else 3
    return x, np.argmax(x[:, :classes], axis=1).astype(np.float32)


def _split(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The flatbuffer and the metadata document of a file."""
    from models import metadata

    doc = metadata.read(data)
    return data[: len(data) - len(metadata.attach(b"", doc))], doc


def _with_metadata(data: bytes, **changes: Any) -> bytes:
    from models import metadata

    flatbuffer, doc = _split(data)
    return metadata.attach(flatbuffer, {**doc, **changes})


def test_metadata_is_read_without_any_interpreter(
    files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_runtime(*_: object) -> None:
        raise AssertionError("read_metadata must not load an interpreter")

    monkeypatch.setattr(runtime, "interpreter_class", no_runtime)
    meta = read_metadata(files["multiclass"])
    assert (meta.kind, meta.model, meta.task) == ("trainable", "mlp", "multiclass")
    assert (meta.classes, meta.input_shape, meta.output_shape) == (3, (5,), (3,))
    assert (meta.batch_size, meta.optimizer, meta.learning_rate) == (BATCH, "adam", 0.001)
    assert meta.label_encoding == "class_index"
    assert meta.hyperparameters == {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    first = [(w.name, w.shape, w.dtype) for w in meta.weights][:2]
    assert first == [("dense0_kernel", (5, 32), "float32"), ("dense0_bias", (32,), "float32")]
    assert meta.signatures["train"]["inputs"]["x"].shape == (BATCH, 5)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: _split(d)[0], "not a fedge model file: cannot read fedge.json"),
        (lambda d: d[:-30], "not a fedge model file"),
        (lambda d: _with_metadata(d, format_version=2), "version 2; this client reads .* 1"),
        (lambda d: _with_metadata(d, batch_size="8"), "field 'batch_size' has a bad value '8'"),
        (lambda d: _with_metadata(d, task="ranking"), "task 'ranking' does not fit 2 classes"),
        (lambda d: _with_metadata(d, task="multiclass"), "task 'multiclass' does not fit 2"),
        (lambda d: _with_metadata(d, batch_size=0), "batch_size must be at least 1, got 0"),
        (lambda d: _with_metadata(d, optimizer={"name": "sgd"}), "'learning_rate' is missing"),
        (
            lambda d: _with_metadata(d, optimizer={"name": "sgd", "learning_rate": 0.1, "m": "x"}),
            "field 'm' has a bad value 'x'",
        ),
        (
            lambda d: _with_metadata(d, weights=[{"name": "w", "shape": [1], "dtype": "object"}]),
            "unsupported dtype 'object'",
        ),
        (
            lambda d: _with_metadata(d, weights=[{"name": "w", "shape": [], "dtype": "int8"}] * 2),
            "weight names are not unique",
        ),
        (lambda d: _with_metadata(d, input={"name": "x"}), "field 'shape' is missing"),
    ],
)
def test_bad_metadata_is_rejected_with_the_reason(
    files: dict[str, bytes], mangle: Any, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        read_metadata(mangle(files["binary"]))


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
NESTED_KEYS = ["shape", "dtype", "name", "encoding", "learning_rate", "train", "inputs"]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(sorted(DOCUMENT_KEYS)),
    nested=st.none() | st.sampled_from(NESTED_KEYS),
    value=JSON,
    drop=st.booleans(),
)
def test_corrupted_metadata_never_raises_anything_but_model_error(
    files: dict[str, bytes], key: str, nested: str | None, value: Any, drop: bool
) -> None:
    from models import metadata

    _, doc = _split(files["binary"])
    if nested is not None and isinstance(doc[key], dict):
        doc[key] = {**doc[key], nested: value}
    else:
        doc = {k: v for k, v in doc.items() if k != key} if drop else {**doc, key: value}
    with contextlib.suppress(ModelError):
        read_metadata(metadata.attach(b"", doc))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_model_error(data: bytes) -> None:
    with pytest.raises(ModelError):
        read_metadata(data)


def test_oversized_metadata_is_refused_before_reading() -> None:
    from models import metadata

    with pytest.raises(ModelError, match="limit 1 MiB"):
        read_metadata(metadata.attach(b"TFL3", {"padding": "x" * (1 << 20)}))


def test_model_loads_from_path_and_bytes_alike(files: dict[str, bytes], tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(files["binary"])
    from_path = TrainableModel(tmp_path / "m.tflite")
    assert from_path.metadata == TrainableModel(files["binary"]).metadata
    with pytest.raises(ModelError, match=r"cannot read model file '.*missing\.tflite'"):
        TrainableModel(tmp_path / "missing.tflite")


def test_files_whose_metadata_lies_are_refused(files: dict[str, bytes]) -> None:
    _, doc = _split(files["binary"])
    signatures = json.loads(json.dumps(doc["signatures"]))
    signatures["infer"]["inputs"]["x"]["shape"] = [16, 4]
    with pytest.raises(ModelError, match=r"signature 'infer' inputs .* differ from the metadata"):
        TrainableModel(_with_metadata(files["binary"], signatures=signatures))
    with pytest.raises(ModelError, match="of kind 'inference'; only 'trainable' files train"):
        TrainableModel(_with_metadata(files["binary"], kind="inference"))
    signatures = json.loads(json.dumps(doc["signatures"]))  # only the one lie below
    del signatures["evaluate"]
    with pytest.raises(ModelError, match="metadata lists no signature evaluate"):
        TrainableModel(_with_metadata(files["binary"], signatures=signatures))


def test_weights_round_trip_exactly_in_metadata_order(files: dict[str, bytes]) -> None:
    model = TrainableModel(files["multiclass"])
    rng = np.random.default_rng(5)
    new = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in model.get_weights().items()}
    model.set_weights(new)
    got = model.get_weights()
    assert list(got) == [w.name for w in model.metadata.weights]
    for name, value in new.items():
        np.testing.assert_array_equal(got[name], value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dense1_bias": None}, r"missing \['dense1_bias'\]"),
        ({"dense9_bias": np.zeros(1, np.float32)}, r"unexpected \['dense9_bias'\]"),
        ({"dense0_bias": np.zeros(31, np.float32)}, r"shape \(32,\), got \(31,\)"),
        ({"dense0_bias": np.zeros(32)}, "'dense0_bias' must be a float32 array, got float64"),
        ({"dense0_bias": [0.0] * 32}, "'dense0_bias' must be a float32 array, got list"),
        ({"dense0_bias": np.full(32, np.nan, np.float32)}, "'dense0_bias' holds NaN"),
    ],
)
def test_set_weights_refuses_weights_that_do_not_fit_and_changes_nothing(
    files: dict[str, bytes], change: dict[str, Any], message: str
) -> None:
    model = TrainableModel(files["multiclass"])
    before = model.get_weights()
    merged = {**{k: np.ones_like(v) for k, v in before.items()}, **change}
    bad = {k: v for k, v in merged.items() if v is not None}
    with pytest.raises(ModelError, match=message):
        model.set_weights(bad)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fit_lowers_the_loss_of_a_learnable_task(files: dict[str, bytes], task: str) -> None:
    model = TrainableModel(files[task])
    x, y = _data(task, 61)  # not a multiple of the batch size: the last batch is padded
    lr = 0.01 if task == "multiclass" else 0.05
    losses = model.fit(x, y, epochs=8, lr=lr, rng=np.random.default_rng(0))
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]


def test_fit_is_reproducible_from_the_generator(files: dict[str, bytes]) -> None:
    x, y = _data("binary", 30)
    runs = []
    for seed in (1, 1, 2):
        model = TrainableModel(files["binary"])
        runs.append(model.fit(x, y, epochs=2, rng=np.random.default_rng(seed)))
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_fedprox_pulls_towards_the_weights_last_set(files: dict[str, bytes]) -> None:
    x, y = _data("multiclass", 40)
    drift = {}
    for mu in (0.0, 10.0):
        model = TrainableModel(files["multiclass"])
        start = model.get_weights()
        model.set_weights(start)
        model.fit(x, y, epochs=5, lr=0.01, mu=mu, rng=np.random.default_rng(0))
        after = model.get_weights()
        drift[mu] = sum(float(np.sum((after[k] - start[k]) ** 2)) for k in start)
    assert drift[10.0] < 0.5 * drift[0.0]


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_evaluate_and_predict_agree_on_every_example(files: dict[str, bytes], task: str) -> None:
    model = TrainableModel(files[task])
    x, y = _data(task, 21, seed=3)
    probabilities = model.predict(x)
    classes = model.metadata.classes
    assert probabilities.shape == (21, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    loss, accuracy = model.evaluate(x, y)
    picked = probabilities[np.arange(21), y.astype(int)]
    assert loss == pytest.approx(float(np.mean(-np.log(picked))), rel=1e-4)
    assert accuracy == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == y)))


def test_regression_predicts_values_and_reports_no_accuracy(files: dict[str, bytes]) -> None:
    model = TrainableModel(files["regression"])
    x, y = _data("regression", 13)
    predictions = model.predict(x)
    assert predictions.shape == (13,)
    loss, accuracy = model.evaluate(x, y)
    assert loss == pytest.approx(float(np.mean((predictions - y) ** 2)), rel=1e-4)
    assert np.isnan(accuracy)


@pytest.mark.parametrize(
    ("task", "x", "y", "message"),
    [
        ("binary", np.zeros((10, 5)), np.zeros(10), r"shape \(N, 4\), got data of shape \(10, 5\)"),
        ("binary", np.zeros(4), None, r"expects data of shape \(N, 4\), got data of shape \(4,\)"),
        ("binary", np.zeros((10, 4)), np.zeros(9), r"labels must have shape \(10,\) to match x"),
        ("binary", np.zeros((3, 4)), np.array([0, 1, 2]), r"2 classes, so .* 0..1; found label 2"),
        ("multiclass", np.zeros((3, 5)), np.array([0, 0.5, 2]), "0..2; found label 0.5"),
        ("multiclass", np.zeros((2, 5)), np.array([-1, 0]), "found label -1"),
        ("binary", np.full((2, 4), np.nan), np.zeros(2), "x holds NaN or infinite values"),
        ("regression", np.zeros((2, 5)), np.array([1.0, np.inf]), "y holds NaN or infinite values"),
        ("binary", np.array([["a"] * 4]), None, "x must be numeric"),
        ("binary", np.zeros((0, 4)), np.zeros(0), "x holds no examples"),
    ],
)  # fmt: skip
def test_check_data_explains_model_data_mismatch(
    files: dict[str, bytes], task: str, x: Array, y: Array | None, message: str
) -> None:
    model = TrainableModel(files[task])
    with pytest.raises(ModelError, match=message):
        model.check_data(x, y)
    if y is not None:
        with pytest.raises(ModelError, match=message):
            model.fit(x, y, rng=np.random.default_rng(0))


def test_regression_accepts_any_real_targets(files: dict[str, bytes]) -> None:
    TrainableModel(files["regression"]).check_data(np.zeros((2, 5)), np.array([-3.5, 1e6]))


@pytest.mark.parametrize("settings", [{"epochs": 0}, {"lr": 0.0}, {"lr": -1.0}, {"mu": -0.1}])
def test_fit_rejects_bad_training_settings(
    files: dict[str, bytes], settings: dict[str, Any]
) -> None:
    x, y = _data("binary", 8)
    model = TrainableModel(files["binary"])
    with pytest.raises(ConfigError, match="need epochs ≥ 1, lr > 0, mu ≥ 0"):
        model.fit(x, y, rng=np.random.default_rng(0), **settings)
