"""``fedge check-model``: passes on every zoo file, fails naming the ops of a Flex model,
and runs its train step where TensorFlow cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from import_block import blocked_env

from models.export import export_trainable
from models.zoo import build

ZOO = {"logreg": ((8,), 2), "mlp": ((6,), 0), "cnn1d": ((3, 16), 3), "cnn2d": ((10, 10, 3), 4),
       "imaging": ((16, 16, 3), 5)}  # fmt: skip


def _check(path: Path, *flags: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools", "check-model", str(path), *flags],
                          capture_output=True, text=True, timeout=300, check=False, env=env)


def test_check_model_itself_runs_on_a_device_without_tensorflow(tmp_path: Path) -> None:
    path = tmp_path / "logreg.tflite"
    path.write_bytes(export_trainable("logreg", (8,), 2, 4))
    done = _check(path, env=blocked_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: trains on the plain TFLite runtime" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_file_passes(name: str, tmp_path: Path) -> None:
    shape, classes = ZOO[name]
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(export_trainable(name, shape, classes, 4, "adam"))
    done = _check(path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["runtime"] == "tflite_runtime" and result["tensorflow_importable"] is False
    assert result["custom_ops"] == [] and "ASSIGN_VARIABLE" in result["ops"]
    assert result["weights"] == len(build(name, shape, classes).weight_shapes())
    assert 0 < result["step_ms"] < 10_000 and 0 < result["peak_rss_mb"] < 2_000


def _flex_model(path: Path) -> None:
    """A train signature whose gradient is tf.nn.relu's ReluGrad: converts only with Flex."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 2]))

    @tf.function(input_signature=[tf.TensorSpec([4, 3], tf.float32)])
    def train(x: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.relu(x @ module.w))
        module.w.assign_sub(0.1 * tape.gradient(loss, module.w))
        return {"loss": loss}

    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={"train": train.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        converter.experimental_enable_resource_variables = True
        path.write_bytes(converter.convert())


def test_a_flex_model_fails_with_its_op_names(tmp_path: Path) -> None:
    path = tmp_path / "flex.tflite"
    _flex_model(path)
    done = _check(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL: needs non-builtin ops FlexReluGrad" in done.stdout, done.stdout


def test_a_file_that_is_not_a_model_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"not a model at all")
    done = _check(path)
    assert done.returncode == 2 and "not a TFLite model" in done.stderr, done.stderr
    assert _check(tmp_path / "missing.tflite").returncode == 2


@pytest.mark.slow
def test_a_file_devices_would_refuse_fails_the_check_and_the_export(tmp_path: Path) -> None:
    """imaging at 64×64×3 and batch 32 declares 631 MB of tensors, over the 512 MiB bound."""
    from tools import export as export_cli

    path = tmp_path / "big.tflite"
    path.write_bytes(export_trainable("imaging", (64, 64, 3), 7, 32))
    done = _check(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL: fedge devices and the aggregator refuse this file: the model's tensors" in (
        done.stdout)
    out = tmp_path / "refused.tflite"
    code = export_cli.main(["--model", "imaging", "--input-shape", "64,64,3", "--classes", "7",
                            "--batch-size", "32", "--out", str(out)])
    assert code == 2 and not out.exists()
