"""Layers whose forward pass and gradients use TFLite builtin ops only.

Without the Flex delegate a training graph must avoid ops such as ``ReluGrad``,
``Conv2DBackpropFilter``, ``AvgPoolGrad`` and ``StridedSliceGrad``. So:

- ReLU carries a hand-written gradient (upstream × [x > 0]);
- convolutions are patch extraction (a concat of ``tf.slice`` windows, whose
  gradient is ``Pad``) followed by one ``matmul``. Windows are cut from
  channel-major planes so each slice copies long contiguous runs: TFLite's
  ``SLICE`` and ``CONCATENATION`` copy the innermost dimension in one piece,
  and a channels-last layout with one input channel made them copy single
  floats (cnn2d at 28×28: inference 3× faster, training 1.5×, measured with
  ``tflite_runtime`` 2.14). The builtin ``CONV_2D`` is no alternative: with a
  filter that changes between calls, ``tflite_runtime`` 2.14 drifted from
  ``tf.lite`` from the second training step on;
- average pooling is reshape + ``reduce_mean`` (gradient: tile + scale);
- every shape is static (fixed batch size), so no ``BroadcastGradientArgs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from models.architecture import (
    AddChannel,
    AvgPool1D,
    AvgPool2D,
    ChannelsLast,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    ReLU,
    place,
)
from models.zoo import ModelSpec

Tensor = Any  # tf.Tensor; TensorFlow ships no type stubs


@tf.custom_gradient  # type: ignore[untyped-decorator]
def relu(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """ReLU whose gradient is ``upstream * cast(x > 0)`` instead of ``ReluGrad``."""

    def grad(upstream: Tensor) -> Tensor:
        return upstream * tf.cast(x > 0.0, x.dtype)

    return tf.maximum(x, 0.0), grad


def dense(x: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """``x @ kernel + bias`` for ``x`` of shape ``(batch, in)``."""
    return tf.matmul(x, kernel) + bias


def conv1d(x: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """Valid, stride-1 convolution of ``(batch, time, in)`` with ``(k, in, filters)``."""
    batch, time, channels = x.shape
    size, _, filters = kernel.shape
    steps = time - size + 1
    # Channel-major planes make every window slice a long contiguous run.
    planes = tf.reshape(tf.transpose(x, [2, 0, 1]), [channels * batch, time])
    windows = [
        tf.reshape(tf.slice(planes, [0, j], [channels * batch, steps]), [channels, -1])
        for j in range(size)
    ]
    flat = _patch_matmul(tf.concat(windows, axis=0), tf.reshape(kernel, [-1, filters]))
    return tf.reshape(flat, [batch, steps, filters]) + bias


def conv2d(x: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """Valid, stride-1 convolution of ``(batch, h, w, in)`` with ``(k, k, in, filters)``."""
    batch, height, width, channels = x.shape
    size, _, _, filters = kernel.shape
    rows, cols = height - size + 1, width - size + 1
    planes = tf.reshape(tf.transpose(x, [3, 0, 1, 2]), [channels * batch, height, width])
    windows = [
        tf.reshape(tf.slice(planes, [0, i, j], [channels * batch, rows, cols]), [channels, -1])
        for i in range(size)
        for j in range(size)
    ]
    flat = _patch_matmul(tf.concat(windows, axis=0), tf.reshape(kernel, [-1, filters]))
    return tf.reshape(flat, [batch, rows, cols, filters]) + bias


def _patch_matmul(patches: Tensor, kernel: Tensor) -> Tensor:
    """``patches.T @ kernel`` for channel-major ``patches`` of shape ``(k·in, positions)``.

    Rows of ``patches`` are ordered (window offset, input channel), which is the
    row order of the kernel reshaped to ``(k·in, filters)``.
    """
    return tf.matmul(patches, kernel, transpose_a=True)


def avg_pool1d(x: Tensor, pool: int) -> Tensor:
    """Average non-overlapping windows of ``pool`` steps of ``(batch, time, ch)``."""
    batch, time, channels = x.shape
    steps = time // pool
    x = tf.slice(x, [0, 0, 0], [batch, steps * pool, channels])
    return tf.reduce_mean(tf.reshape(x, [batch, steps, pool, channels]), axis=2)


def avg_pool2d(x: Tensor, pool: int) -> Tensor:
    """Average non-overlapping ``pool``×``pool`` windows of ``(batch, h, w, ch)``."""
    batch, height, width, channels = x.shape
    rows, cols = height // pool, width // pool
    x = tf.slice(x, [0, 0, 0, 0], [batch, rows * pool, cols * pool, channels])
    # Two 4-D means keep every tensor within the ranks all TFLite kernels accept.
    x = tf.reduce_mean(tf.reshape(x, [batch * rows, pool, cols * pool * channels]), axis=1)
    x = tf.reduce_mean(tf.reshape(x, [batch * rows, cols, pool, channels]), axis=2)
    return tf.reshape(x, [batch, rows, cols, channels])


def flatten(x: Tensor) -> Tensor:
    """Reshape ``(batch, ...)`` to ``(batch, features)``."""
    return tf.reshape(x, [x.shape[0], -1])


@tf.autograph.experimental.do_not_convert  # type: ignore[untyped-decorator]
def forward(spec: ModelSpec, weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Run ``spec`` on a batch ``x``; return the outputs of the last layer (logits).

    Args:
        spec: the configured zoo model.
        weights: tensors or variables by weight name.
        x: a batch of shape ``(batch, *spec.input_shape)`` with a static batch size.
    """
    placed, _ = place(spec.layers, spec.input_shape)
    for named in placed:
        params = [weights[name] for name in named.weight_names]
        x = _apply(named.layer, params, x)
    return x


def _apply(layer: object, params: list[Tensor], x: Tensor) -> Tensor:
    match layer:
        case Dense():
            return dense(x, *params)
        case Conv1D():
            return conv1d(x, *params)
        case Conv2D():
            return conv2d(x, *params)
        case ReLU():
            return relu(x)
        case AvgPool1D(pool):
            return avg_pool1d(x, pool)
        case AvgPool2D(pool):
            return avg_pool2d(x, pool)
        case Flatten():
            return flatten(x)
        case ChannelsLast():
            return tf.transpose(x, [0, 2, 1])
        case AddChannel():
            return tf.expand_dims(x, -1)
    raise TypeError(f"unknown layer {layer!r}")
