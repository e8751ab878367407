"""``fedge export --keras``: a saved Keras model becomes a trainable file with its own weights;
unsupported layers and options stop the export with the layer, class, option and list named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from edge_client.model import TrainableModel
from models import metadata
from tools import export as cli

ROOT = Path(__file__).resolve().parents[3]
SEED_MODEL = ROOT / "examples" / "seed.keras"


def _save(model: Any, path: Path, **compile_args: Any) -> Path:
    if compile_args:
        model.compile(**compile_args)
    model.save(path)
    return path


def test_the_seed_articles_model_exports_with_its_weights_loss_and_optimizer(
    tmp_path: Path,
) -> None:
    out = tmp_path / "seed.tflite"
    assert cli.main(["--keras", str(SEED_MODEL), "--batch-size", "32", "--out", str(out)]) == 0
    meta = metadata.read(out.read_bytes())
    assert (meta["task"], meta["classes"], meta["input"]["shape"]) == ("binary", 2, [2])
    assert meta["optimizer"] == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.0}
    keras_model = keras.saving.load_model(SEED_MODEL)
    kernel, bias = keras_model.get_weights()
    model = TrainableModel(out.read_bytes())
    np.testing.assert_array_equal(model.get_weights()["dense0_kernel"], kernel)
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    probabilities = model.predict(x)[:, 1]
    np.testing.assert_allclose(probabilities, keras_model.predict(x, verbose=0)[:, 0], atol=1e-6)
    np.testing.assert_array_equal(bias, model.get_weights()["dense0_bias"])


def test_flags_override_the_compiled_optimizer_and_loss(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), layers.Dense(4, activation="relu"),
                              layers.Dense(1)])
    path = _save(model, tmp_path / "m.keras")  # not compiled: --loss is needed
    out = tmp_path / "m.tflite"
    args = ["--keras", str(path), "--batch-size", "8", "--out", str(out)]
    assert cli.main([*args, "--loss", "mse", "--optimizer", "adam", "--lr", "0.003"]) == 0
    meta = metadata.read(out.read_bytes())
    assert (meta["task"], meta["optimizer"]["name"], meta["optimizer"]["learning_rate"]) == (
        "regression", "adam", 0.003)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: [layers.Reshape((3, 1)), layers.SimpleRNN(4, name="rnn"), layers.Dense(1)],
         "layer 'rnn' (SimpleRNN) is not supported; supported layers: Dense, Activation, ReLU"),
        (lambda: [layers.Reshape((3, 1)), layers.GRU(4, go_backwards=True, name="g"),
                  layers.Dense(1)],
         "layer 'g' (GRU): go_backwards=True is not supported; supported: False"),
        (lambda: [layers.Reshape((3, 1)), layers.Conv1D(2, 2, dilation_rate=2, name="c"),
                  layers.Flatten(), layers.Dense(1)],
         "layer 'c' (Conv1D): dilation_rate=(2,) is not supported; supported: (1,) or 1"),
        (lambda: [layers.Dense(2, activation="elu", name="d"), layers.Dense(1)],
         "layer 'd' (Dense): activation='elu' is not supported; supported: linear, relu, "
         "sigmoid, tanh, softmax"),
        (lambda: [layers.Dense(1, name="out")],
         "output layer 'out' (Dense) ends in 'linear', but loss binary_crossentropy needs "
         "'sigmoid' there"),
    ],
)
def test_unsupported_layers_and_options_are_named(
    build: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = keras.Sequential([keras.Input((3,)), *build()])
    path = _save(model, tmp_path / "bad.keras", optimizer="sgd", loss="binary_crossentropy")
    code = cli.main(["--keras", str(path), "--batch-size", "4", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_keras_flags_are_checked_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.tflite")
    assert cli.main(["--keras", str(SEED_MODEL), "--out", out]) == 2
    assert "--keras needs --batch-size B" in capsys.readouterr().err
    assert cli.main(["--keras", str(SEED_MODEL), "--batch-size", "4", "--model", "mlp",
                     "--out", out]) == 2
    assert "leave out --model" in capsys.readouterr().err
    assert cli.main(["--keras", str(tmp_path / "none.keras"), "--batch-size", "4",
                     "--out", out]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_int8_model_of_the_keras_model_with_its_weights(tmp_path: Path) -> None:
    out, int8 = tmp_path / "seed.tflite", tmp_path / "seed-int8.tflite"
    np.savez(tmp_path / "rep.npz", x=np.random.default_rng(0).normal(size=(64, 2)))
    assert cli.main(["--keras", str(SEED_MODEL), "--batch-size", "8", "--out", str(out),
                     "--inference-int8", str(int8), "--representative",
                     str(tmp_path / "rep.npz")]) == 0
    meta = metadata.read(int8.read_bytes())
    assert (meta["quantization"], meta["model"]) == ("int8", "seed")
    assert metadata.read(out.read_bytes())["kind"] == "trainable"
