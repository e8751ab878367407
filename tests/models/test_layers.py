"""The builtin-kernel layers and their hand-written gradients against TensorFlow's autodiff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from models import layers


def _value_and_grads(f: Callable[..., Any], *values: np.ndarray) -> list[np.ndarray]:
    tensors = [tf.constant(v) for v in values]
    with tf.GradientTape() as tape:
        for t in tensors:
            tape.watch(t)
        out = f(*tensors)
        loss = tf.reduce_sum(tf.sin(out) * out)  # a non-constant upstream gradient
    return [out.numpy(), *(g.numpy() for g in tape.gradient(loss, tensors))]


@pytest.mark.parametrize(("size", "kernel", "strides", "padding"), [
    ((13, 13), (3, 3), (1, 1), "valid"),
    ((13, 12), (3, 3), (2, 2), "same"),   # odd rows: an unused stride tail in "valid" terms
    ((14, 15), (3, 2), (2, 3), "valid"),  # rows and columns the last window does not reach
    ((1, 20), (1, 5), (1, 2), "same"),    # a conv1d
])  # fmt: skip
def test_conv2d_and_its_gradient_match_tensorflow(
    size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], padding: str
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *size, 4)).astype(np.float32)
    k = rng.normal(size=(*kernel, 4, 5)).astype(np.float32)
    got = _value_and_grads(lambda x, k: layers.conv2d(x, k, None, strides, padding), x, k)
    want = _value_and_grads(
        lambda x, k: tf.nn.conv2d(x, k, [1, *strides, 1], padding.upper()), x, k)
    for name, g, w in zip(["output", "dx", "dW"], got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize(("size", "pool"), [((8, 8), (2, 2)), ((9, 7), (2, 2)), ((9, 9), (3, 1))])
def test_non_overlapping_max_pooling_and_its_gradient_match_tensorflow(
    size: tuple[int, int], pool: tuple[int, int]
) -> None:
    x = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
    got = _value_and_grads(lambda x: layers.pool2d(x, "max", pool, pool), x)
    want = _value_and_grads(lambda x: tf.nn.max_pool2d(x, pool, pool, "VALID"), x)
    for name, g, w in zip(["output", "dx"], got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=name)


def test_max_pooling_ties_at_zero_after_relu_give_relus_gradient() -> None:
    """A window of ReLU zeros ties; ReLU's own gradient is zero there, as in Keras."""
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype(np.float32)
    x[:, :2, :2, :] = -1.0  # a window whose ReLU output is all zeros: a four-way tie
    got = _value_and_grads(lambda x: layers.pool2d(layers.relu(x), "max", (2, 2), (2, 2)), x)
    want = _value_and_grads(lambda x: tf.nn.max_pool2d(tf.nn.relu(x), 2, 2, "VALID"), x)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
