"""Exported files: builtin ops only, self-describing, and usable by a device without TensorFlow."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from import_block import BLOCK_TENSORFLOW
from tensorflow.lite.tools import flatbuffer_utils

from edge_client.model import TrainableModel
from edge_client.runtime import Interpreter
from models import metadata
from models.export import ExportError, export_inference_int8, export_trainable
from models.zoo import weight_shapes

Array = npt.NDArray[Any]
NAMES = ["logreg", "mlp", "cnn1d", "cnn2d"]

# Runs on a "device": tensorflow and keras cannot be imported, the runtime is tflite_runtime.
DEVICE_SCRIPT = BLOCK_TENSORFLOW + r"""
import json, sys
import numpy as np
from edge_client.model import TrainableModel
from edge_client.runtime import Interpreter

job = sys.argv[1]
plan = json.load(open(f"{job}/plan.json"))
out = {}
for item in plan["trainable"]:
    name = item["name"]
    data = np.load(f"{job}/{name}.npz")
    for threads in plan.get("threads", [1]):
        key = f"{name}@{threads}"
        model = TrainableModel(f"{job}/{name}.tflite", num_threads=threads)
        model.set_weights({k[2:]: data[k] for k in data.files if k.startswith("w_")})
        rng = np.random.default_rng(0)
        losses = model.fit(data["x"], data["y"], epochs=plan["epochs"], lr=item["lr"], rng=rng)
        out[f"{key}/losses"] = np.array(losses)
        out.update({f"{key}/w/{k}": v for k, v in model.get_weights().items()})
        out[f"{key}/runtime"] = np.array(model.runtime)
for name in plan["inference"]:
    model = Interpreter(open(f"{job}/{name}.tflite", "rb").read())
    x = np.load(f"{job}/{name}.npz")["x"]
    rows = [model.run("infer", {"x": row[None]})["output"] for row in x]
    out[f"{name}/output"] = np.concatenate(rows)
out["tensorflow_loaded"] = np.array("tensorflow" in sys.modules)
np.savez(f"{job}/out.npz", **out)
"""


def _run_on_device(
    job: Path, trainable: list[dict[str, Any]], inference: list[str], **plan: Any
) -> Any:
    """Run DEVICE_SCRIPT on the files in ``job``; return the arrays it saved."""
    plan.update(trainable=trainable, inference=inference)
    (job / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "FEDGE_TFLITE_RUNTIME": "tflite_runtime"}
    done = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT, str(job)], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(job / "out.npz")


def _operators(data: bytes) -> list[tuple[str, str | None]]:
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    return [
        (str(flatbuffer_utils.opcode_to_name(model, i)), c.customCode and c.customCode.decode())
        for i, c in enumerate(model.operatorCodes)
    ]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", NAMES)
def test_exported_file_uses_only_builtin_ops(
    name: str, optimizer: str, exported: Callable[[str, str], bytes]
) -> None:
    operators = _operators(exported(name, optimizer))
    assert [op for op in operators if op[0] == "CUSTOM" or op[1]] == []
    assert ("ASSIGN_VARIABLE", None) in operators  # training really is in the graph


@pytest.mark.parametrize("name", NAMES)
def test_file_describes_itself(
    name: str,
    configs: dict[str, tuple[tuple[int, ...], int]],
    exported: Callable[[str, str], bytes],
) -> None:
    data = exported(name, "adam")
    shape, classes = configs[name]
    meta = metadata.read(data)
    assert (meta["model"], meta["classes"], meta["batch_size"]) == (name, classes, 8)
    assert tuple(meta["input"]["shape"]) == shape
    assert meta["optimizer"]["name"] == "adam" and meta["optimizer"]["learning_rate"] == 0.001
    listed = {w["name"]: tuple(w["shape"]) for w in meta["weights"]}
    assert list(listed.items()) == list(weight_shapes(name, shape, classes).items())
    actual = Interpreter(data).run("get_weights", {})
    assert {k: v.shape for k, v in actual.items()} == listed
    assert set(meta["signatures"]) == set(Interpreter(data).signatures)


def test_device_without_tensorflow_trains_every_model_like_tf_lite(
    tmp_path: Path,
    configs: dict[str, tuple[tuple[int, ...], int]],
    exported: Callable[[str, str], bytes],
    make_data: Callable[..., tuple[Array, Array]],
) -> None:
    epochs, rates, expected = 4, {"sgd": 0.05, "adam": 0.02}, {}
    for name, optimizer in itertools.product(NAMES, rates):
        shape, classes = configs[name]
        x, y = make_data(shape, classes, 40, 21)
        job = f"{name}-{optimizer}"
        (tmp_path / f"{job}.tflite").write_bytes(exported(name, optimizer))
        model = TrainableModel(exported(name, optimizer))  # in this process: tf.lite
        start = {k: v + 0.01 for k, v in model.get_weights().items()}
        np.savez(tmp_path / f"{job}.npz", x=x, y=y, **{f"w_{k}": v for k, v in start.items()})
        model.set_weights(start)
        losses = model.fit(x, y, epochs=epochs, lr=rates[optimizer], rng=np.random.default_rng(0))
        expected[job] = (losses, model.get_weights(), rates[optimizer])
    plan = [{"name": job, "lr": lr} for job, (_, _, lr) in expected.items()]
    # Two threads as well: a kernel that caches a transformed copy of its weights (as
    # TFLite's multithreaded CONV_2D may) would drift from the second step on there.
    device = _run_on_device(tmp_path, plan, [], epochs=epochs, threads=[1, 2])
    assert not device["tensorflow_loaded"]
    for (job, (losses, weights, _)), threads in itertools.product(expected.items(), [1, 2]):
        key = f"{job}@{threads}"
        assert str(device[f"{key}/runtime"]) == "tflite_runtime"
        got = device[f"{key}/losses"]
        assert got[-1] < 0.7 * got[0], f"{key} did not learn: {got}"
        np.testing.assert_allclose(got, losses, rtol=1e-4, err_msg=key)
        for k, v in weights.items():
            np.testing.assert_allclose(device[f"{key}/w/{k}"], v, atol=1e-4, err_msg=f"{key} {k}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_int8_model_predicts_like_the_float_model_on_a_device(
    name: str, tmp_path: Path, make_data: Callable[..., tuple[Array, Array]]
) -> None:
    shape, classes = {"mlp": ((6,), 3), "cnn1d": ((3, 16), 3)}[name]
    x, y = make_data(shape, classes, 200, 8)
    trainable = TrainableModel(export_trainable(name, shape, classes, 20, "adam"))
    trainable.fit(x, y, epochs=15, rng=np.random.default_rng(0))
    weights = trainable.get_weights()
    data = export_inference_int8(name, shape, classes, weights, representative_x=x[:100])
    operators = _operators(data)
    assert [op for op in operators if op[0] == "CUSTOM" or op[1]] == []
    assert metadata.read(data)["quantization"] == "int8"
    assert len(data) < 0.5 * len(export_trainable(name, shape, classes, 20, "adam"))
    (tmp_path / "int8.tflite").write_bytes(data)
    np.savez(tmp_path / "int8.npz", x=x[100:])
    got = _run_on_device(tmp_path, [], ["int8"])["int8/output"]
    want = trainable.predict(x[100:])
    assert np.abs(got - want).max() < 0.1
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95


def test_export_rejects_bad_arguments_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        export_trainable("resnet", (4,), 2, 8)
    with pytest.raises(ValueError, match="batch size must be a positive integer"):
        export_trainable("logreg", (4,), 2, 0)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        export_trainable("logreg", (4,), 2, 8, "rmsprop")
    with pytest.raises(ValueError, match="bad hyperparameter for sgd"):
        export_trainable("logreg", (4,), 2, 8, "sgd", beta_1=0.5)
    with pytest.raises(ValueError, match=r"learning rate must be positive, got -0\.1"):
        export_trainable("logreg", (4,), 2, 8, learning_rate=-0.1)
    with pytest.raises(ValueError, match="momentum must be in"):
        export_trainable("logreg", (4,), 2, 8, "sgd", momentum=1.5)


def test_int8_export_rejects_weights_or_examples_that_do_not_fit() -> None:
    weights = {"dense0_kernel": np.zeros((4, 1), np.float32), "dense0_bias": np.zeros(1)}
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match=r"missing \['dense0_bias'\]"):
        export_inference_int8("logreg", (4,), 2, {"dense0_kernel": weights["dense0_kernel"]}, x)
    with pytest.raises(ValueError, match="'dense0_kernel' must have shape \\(4, 1\\)"):
        export_inference_int8("logreg", (4,), 2, {**weights, "dense0_kernel": np.zeros((4, 2))}, x)
    with pytest.raises(ValueError, match=r"representative_x must have shape \(N, 4\)"):
        export_inference_int8("logreg", (4,), 2, weights, np.zeros((10, 5), np.float32))


def test_export_error_is_raised_for_graphs_that_need_flex(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from models import layers

    # tf.nn.relu's gradient is ReluGrad, which only the Flex delegate provides.
    monkeypatch.setattr(layers, "relu", tf.nn.relu)
    with pytest.raises(ExportError, match="mlp"):
        export_trainable("mlp", (4,), 2, 8)
