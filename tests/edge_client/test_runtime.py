"""Choosing and driving a TFLite runtime (edge_client/runtime.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from import_block import BLOCK_TENSORFLOW

from edge_client.errors import ConfigError, ModelError
from edge_client.runtime import ENV_VAR, Interpreter, interpreter_class


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    from models.export import export_trainable

    return export_trainable("logreg", (3,), 2, 4)


@pytest.fixture
def no_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ai_edge_litert`` unimportable whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_environment_variable_forces_a_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "tensorflow")
    name, cls = interpreter_class()
    assert name == "tensorflow" and cls.__name__ == "Interpreter"


def test_argument_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "tensorflow")
    assert interpreter_class("tflite_runtime")[0] == "tflite_runtime"


def test_unknown_runtime_name_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "tflite")
    with pytest.raises(ConfigError, match=r"unknown TFLite runtime 'tflite'.*FEDGE_TFLITE_RUNTIME"):
        interpreter_class()


def test_forcing_a_missing_runtime_says_which(no_litert: None) -> None:
    with pytest.raises(ConfigError, match="'ai_edge_litert' was requested"):
        interpreter_class("ai_edge_litert")


def test_automatic_choice_falls_through_to_the_next_installed(
    no_litert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    assert interpreter_class()[0] == "tensorflow"


def test_no_runtime_at_all_is_a_config_error(
    no_litert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("tflite_runtime", "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match="no TFLite runtime installed"):
        interpreter_class()


def test_tflite_runtime_is_skipped_when_tensorflow_was_imported_first(
    no_litert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow  # noqa: F401  # the clash needs TensorFlow loaded first

    monkeypatch.delitem(sys.modules, "tflite_runtime.interpreter", raising=False)
    assert interpreter_class()[0] == "tensorflow"


def test_device_process_picks_a_lightweight_runtime(model_bytes: bytes, tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(model_bytes)
    code = (
        BLOCK_TENSORFLOW + "from edge_client.runtime import Interpreter\n"
        f"m = Interpreter(open({str(tmp_path / 'm.tflite')!r}, 'rb').read())\n"
        "print(m.runtime, sorted(m.signatures))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runtime, signatures = done.stdout.split(" ", 1)
    assert runtime in ("ai_edge_litert", "tflite_runtime")
    assert signatures.strip() == "['evaluate', 'get_weights', 'infer', 'set_weights', 'train']"


def test_signatures_and_tensor_specs_come_from_the_file(model_bytes: bytes) -> None:
    model = Interpreter(model_bytes, num_threads=1)
    assert set(model.signatures) == {"train", "infer", "evaluate", "get_weights", "set_weights"}
    inputs = model.inputs("train")
    assert {k: v.shape for k, v in inputs.items()} == {
        "x": (4, 3), "y": (4,), "mask": (4,), "lr": (), "mu": (),
    }  # fmt: skip
    assert inputs["x"].dtype == "float32"
    assert model.outputs("infer")["output"].shape == (4, 2)


def test_run_returns_named_copies(model_bytes: bytes) -> None:
    model = Interpreter(model_bytes)
    first = model.run("get_weights", {})
    first["dense0_kernel"][:] = 42.0
    assert not np.any(model.run("get_weights", {})["dense0_kernel"] == 42.0)


def test_garbage_bytes_are_a_model_error() -> None:
    with pytest.raises(ModelError, match="cannot load the model"):
        Interpreter(b"not a flatbuffer" * 10, runtime="tensorflow")


def test_unknown_signature_lists_the_real_ones(model_bytes: bytes) -> None:
    with pytest.raises(ModelError, match=r"no signature 'fit'; it has .*train"):
        Interpreter(model_bytes).run("fit", {})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.zeros((5, 3), np.float32)}, r"'x' must be float32 of shape \(4, 3\), got float"),
        ({"x": np.zeros((4, 3))}, r"'x' must be float32 of shape \(4, 3\), got float64"),
        ({}, r"takes inputs \['x'\], got \[\]"),
        ({"x": np.zeros((4, 3), np.float32), "y": np.zeros(4)}, r"got \['x', 'y'\]"),
    ],
)
def test_inputs_that_do_not_match_the_signature_are_refused(
    model_bytes: bytes, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        Interpreter(model_bytes).run("infer", inputs)
