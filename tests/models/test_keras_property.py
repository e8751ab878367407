"""Random Keras models from the supported layers export builtin-only and step like Keras.

Hypothesis draws the input (vector, sequence or image), a stack of layers (kinds, sizes,
kernels, strides, paddings, activations), the loss and the optimizer; each model is
exported through :mod:`models.keras_import` and must hold only builtin ops and move every
weight as ``tf.GradientTape`` on the Keras model does (:mod:`keras_kit`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers
from keras_kit import assert_one_step_parity

BATCH = 4
ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh"]
PADDINGS = ["valid", "same"]


def _spatial_layer(draw: Any, rank: int, size: int) -> tuple[Any, int]:
    """One layer for a (time, ch) or (h, w, ch) input of side ``size``; its output side."""
    kind = draw(st.sampled_from(["conv", "conv", "pool", "norm", "act"] +
                                (["depthwise", "separable"] if rank == 2 else ["recurrent"])))
    if kind == "recurrent":
        return (draw(st.sampled_from([layers.LSTM, layers.GRU])),
                {"units": draw(st.integers(1, 3)), "return_sequences": True}), size
    if kind == "norm":
        return (draw(st.sampled_from([layers.BatchNormalization, layers.LayerNormalization])),
                {}), size
    if kind == "act":
        return draw(st.sampled_from([(layers.ReLU, {}), (layers.LeakyReLU, {"negative_slope": 0.2}),
                                     (layers.Activation, {"activation": "tanh"})])), size
    kernel = draw(st.integers(1, min(3, size)))
    stride = draw(st.integers(1, 2))
    padding = draw(st.sampled_from(PADDINGS))
    out = -(-size // stride) if padding == "same" else (size - kernel) // stride + 1
    if kind == "pool":
        pool = {1: [layers.MaxPooling1D, layers.AveragePooling1D],
                2: [layers.MaxPooling2D, layers.AveragePooling2D]}[rank]
        return (draw(st.sampled_from(pool)), {"pool_size": kernel, "strides": stride,
                                              "padding": padding}), out
    activation = draw(st.sampled_from(ACTIVATIONS))
    if kind == "depthwise":
        return (layers.DepthwiseConv2D, {"kernel_size": kernel, "strides": stride,
                                         "padding": padding, "activation": activation,
                                         "depth_multiplier": draw(st.integers(1, 2))}), out
    filters = draw(st.integers(1, 4))
    conv = {"conv": layers.Conv1D if rank == 1 else layers.Conv2D,
            "separable": layers.SeparableConv2D}[kind]
    return (conv, {"filters": filters, "kernel_size": kernel, "strides": stride,
                   "padding": padding, "activation": activation}), out


@st.composite
def keras_models(draw: Any) -> tuple[list[tuple[Any, dict[str, Any]]], str]:
    """Layers ``(class, options)`` for a Sequential model of supported layers, and its loss
    (the test builds them: Keras draws its initial weights from ``random``)."""
    kind = draw(st.sampled_from(["vector", "sequence", "image"]))
    stack: list[Any] = []
    if kind == "vector":
        stack.append((keras.Input, {"shape": (draw(st.integers(1, 6)),)}))
    else:
        rank = 1 if kind == "sequence" else 2
        size = draw(st.integers(3, 7))
        stack.append((keras.Input, {"shape": (size,) * rank + (draw(st.integers(1, 3)),)}))
        for _ in range(draw(st.integers(1, 3))):
            layer, size = _spatial_layer(draw, rank, size)
            stack.append(layer)
        pools = {1: [layers.GlobalAveragePooling1D, layers.GlobalMaxPooling1D],
                 2: [layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D]}[rank]
        stack.append((draw(st.sampled_from([layers.Flatten, *pools])), {}))
    for _ in range(draw(st.integers(0, 2))):
        stack.append((layers.Dense, {"units": draw(st.integers(1, 6)),
                                     "kernel_regularizer": draw(st.sampled_from([None, "l2"])),
                                     "activation": draw(st.sampled_from(ACTIVATIONS))}))
    loss = draw(st.sampled_from(["binary_crossentropy", "sparse_categorical_crossentropy",
                                 "mean_squared_error"]))
    head = {"binary_crossentropy": {"units": 1, "activation": "sigmoid"},
            "sparse_categorical_crossentropy": {"units": 3, "activation": "softmax"},
            "mean_squared_error": {"units": 1}}[loss]
    return [*stack, (layers.Dense, head)], loss


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=keras_models(), optimizer=st.sampled_from(["sgd", "adam"]),
       seed=st.integers(0, 2**16))
def test_random_keras_models_export_builtin_only_and_step_like_keras(
    drawn: tuple[list[tuple[Any, dict[str, Any]]], str], optimizer: str, seed: int
) -> None:
    stack, loss = drawn
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([kind(**options) for kind, options in stack])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, *model.inputs[0].shape[1:])).astype(np.float32)
    classes = {"binary_crossentropy": 2, "sparse_categorical_crossentropy": 3}.get(loss)
    y = (rng.integers(0, classes, BATCH) if classes else rng.normal(size=BATCH))
    assert_one_step_parity(model, loss, optimizer, x, y.astype(np.float32))
