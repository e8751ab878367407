"""Every library layer against the Keras layer it stands for: one SGD and one Adam step.

Each case is a small Keras model built from the layers under test; it is exported
through :mod:`models.keras_import` (builtin ops only) and trained one step in the file
and in Keras with ``tf.GradientTape`` (:mod:`keras_kit`). No case has a bias right
before a normalisation: its gradient is zero in theory, round-off in practice, and
Adam's first step (``lr·g/|g|``) turns any round-off into a full step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers
from keras_kit import assert_one_step_parity, builtin_only, export_imported

from edge_client.runtime import Interpreter
from models.keras_import import convert

BATCH = 6


def _dense_stack() -> tuple[Any, str]:
    model = keras.Sequential([
        keras.Input((7,)),
        layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
        layers.Dense(8, activation="tanh"), layers.LeakyReLU(0.2),
        layers.Dense(6, activation="sigmoid"), layers.Activation("relu"), layers.ReLU(),
        layers.Dense(5, activation="softmax"), layers.Dense(4, use_bias=False),
        layers.Activation("tanh"), layers.Dense(3), layers.Softmax(),
    ])  # fmt: skip
    return model, "sparse_categorical_crossentropy"


def _conv2d_stack() -> tuple[Any, str]:
    model = keras.Sequential([
        keras.Input((9, 9, 3)),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(2, strides=1, padding="same"),
        layers.Conv2D(5, (2, 3), kernel_regularizer="l2"),
        layers.AveragePooling2D(2, padding="same"),
        layers.Conv2D(3, 1, activation="sigmoid"),
        layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    return model, "binary_crossentropy"


def _separable_stack() -> tuple[Any, str]:
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                               activation="relu"),
        layers.BatchNormalization(center=False),
        layers.SeparableConv2D(4, 3, padding="same", activation="relu"),
        layers.LayerNormalization(),
        layers.SeparableConv2D(3, 2, strides=2, use_bias=False),
        layers.AveragePooling2D(2, strides=1),
        layers.GlobalMaxPooling2D(), layers.Dense(1),
    ])  # fmt: skip
    return model, "mean_squared_error"


def _conv1d_stack() -> tuple[Any, str]:
    model = keras.Sequential([
        keras.Input((13, 3)),
        layers.Conv1D(4, 3, strides=2, padding="same", activation="relu"),
        layers.MaxPooling1D(2, padding="same"), layers.Conv1D(4, 2, activation="tanh"),
        layers.AveragePooling1D(2, strides=1, padding="same"),
        layers.BatchNormalization(), layers.GlobalAveragePooling1D(),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    return model, "sparse_categorical_crossentropy"


def _residual_text() -> tuple[Any, str]:
    codes = keras.Input((6,))
    h = layers.Embedding(11, 4)(codes)
    a = layers.Conv1D(4, 3, padding="same", activation="relu")(h)
    h = layers.Add()([h, a])
    b = layers.Dense(2)(h)
    h = layers.Concatenate()([h, b])
    h = layers.Reshape((3, -1))(h)
    h = layers.GlobalMaxPooling1D()(h)
    h = layers.Flatten()(h)
    out = layers.Dense(1)(layers.Dense(5, activation="relu")(h))
    return keras.Model(codes, out), "mean_squared_error"


def _recurrent_stack() -> tuple[Any, str]:
    model = keras.Sequential([
        keras.Input((5, 3)), layers.LSTM(4, return_sequences=True), layers.GRU(3),
        layers.Dense(1),
    ])  # fmt: skip
    return model, "mean_squared_error"


CASES: dict[str, Callable[[], tuple[Any, str]]] = {
    "dense": _dense_stack, "conv2d": _conv2d_stack, "separable": _separable_stack,
    "conv1d": _conv1d_stack, "residual-embedding": _residual_text, "recurrent": _recurrent_stack,
}  # fmt: skip


def _data(model: Any, loss: str, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    if any(isinstance(layer, layers.Embedding) for layer in model.layers):
        x = rng.integers(0, 11, (BATCH, *shape)).astype(np.float32)
    else:
        x = rng.normal(size=(BATCH, *shape)).astype(np.float32)
    if loss == "mean_squared_error":
        return x, rng.normal(size=BATCH).astype(np.float32)
    classes = 2 if loss == "binary_crossentropy" else int(model.outputs[0].shape[-1])
    return x, rng.integers(0, classes, BATCH).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("case", list(CASES))
def test_one_step_matches_keras_with_gradient_tape(case: str, optimizer: str) -> None:
    keras.utils.set_random_seed(3)
    model, loss = CASES[case]()
    x, y = _data(model, loss, seed=4)
    assert_one_step_parity(model, loss, optimizer, x, y)


@pytest.mark.parametrize("case", ["conv2d", "conv1d"])
def test_padded_rows_never_reach_the_batch_statistics(case: str) -> None:
    keras.utils.set_random_seed(9)
    model, loss = CASES[case]()  # both hold BatchNormalization
    x, y = _data(model, loss, seed=10)
    assert_one_step_parity(model, loss, "sgd", x, y, real=BATCH - 2)


def test_frozen_layers_keep_their_weights_and_never_travel() -> None:
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((5,)), layers.Dense(6, activation="relu", name="base"),
        layers.BatchNormalization(name="base_bn"), layers.Dense(1, name="head"),
    ])  # fmt: skip
    model.get_layer("base").trainable = False
    model.get_layer("base_bn").trainable = False  # Keras: inference mode, fixed statistics
    x, y = _data(model, "mean_squared_error", seed=6)
    before = {n: w.copy() for n, w in convert(model, loss="mse").constants.items()}
    data = assert_one_step_parity(model, "mean_squared_error", "adam", x, y)
    imported = convert(model, loss="mse")
    assert sorted(imported.weights) == ["dense1_bias", "dense1_kernel"]
    assert sorted(imported.constants) == sorted(before) == [
        "bn0_beta", "bn0_gamma", "bn0_moving_mean", "bn0_moving_variance",
        "dense0_bias", "dense0_kernel"]  # fmt: skip
    assert sorted(Interpreter(data).run("get_weights", {})) == ["dense1_bias", "dense1_kernel"]


def test_dropout_masks_in_train_only_and_changes_every_step() -> None:
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((40,)), layers.Dropout(0.5), layers.Dense(1)])
    data = export_imported(convert(model, loss="mse"), BATCH, "sgd")
    assert builtin_only(data) == []
    x, y = _data(model, "mean_squared_error", seed=8)
    interpreter = Interpreter(data)
    start = interpreter.run("get_weights", {})
    batch = {"x": x, "y": y, "mask": np.ones(BATCH, np.float32)}
    evaluated = {float(interpreter.run("evaluate", batch)["loss"]) for _ in range(3)}
    trained = []
    for _ in range(3):
        interpreter.run("set_weights", start)
        trained.append(float(interpreter.run("train", {**batch, "lr": np.float32(0.01),
                                                       "mu": np.float32(0.0)})["loss"]))
    assert len(evaluated) == 1, "dropout must be off in evaluate"
    assert len(set(trained)) == 3, f"a new mask every step, got losses {trained}"
    without_dropout = (x @ start["dense0_kernel"])[:, 0] + start["dense0_bias"][0]
    assert evaluated.pop() == pytest.approx(float(np.mean((without_dropout - y) ** 2)), rel=1e-5)
    interpreter.run("set_weights", start)
    predictions = interpreter.run("infer", {"x": x})["output"]
    np.testing.assert_allclose(predictions, without_dropout, rtol=1e-5, atol=1e-6)
