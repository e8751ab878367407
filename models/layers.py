"""Layers whose forward pass and gradients use TFLite builtin ops only.

Without the Flex delegate a training graph must avoid ops such as ``ReluGrad``,
``Conv2DBackpropFilter``, ``MaxPoolGrad``, ``AvgPoolGrad`` and ``StridedSliceGrad``. So:

- ReLU and LeakyReLU carry hand-written gradients (upstream × [x > 0] or its slope);
- convolutions are the builtin ``CONV_2D`` with a hand-written gradient of builtin
  ops: dx is ``TRANSPOSE_CONV``, dW a ``CONV_2D`` of transposed tensors (see
  :func:`_conv_valid`); a 1×1 convolution is a ``matmul``;
- strides never use a strided slice: a window of ``stride·n`` values is reshaped to
  ``(n, stride)`` and its first column sliced off;
- "same" padding is ``tf.pad`` (gradient: ``Slice``); max pooling pads with −∞;
- depthwise convolutions multiply each channels-last window by its kernel tap and sum
  (``add_n``);
- non-overlapping max pooling is the builtin ``MAX_POOL_2D`` with a ``Select``
  gradient; other pooling combines the same windows with ``maximum`` (gradient:
  ``Select``) or a sum; non-overlapping average pooling is reshape + ``reduce_mean``;
- dropout draws its mask with ``RANDOM_UNIFORM`` (seeded, new numbers at every step);
- batch normalisation takes masked batch statistics, so padded rows never count;
- an embedding is ``one_hot`` × table (a ``gather`` gradient would need a sparse op);
- LSTM and GRU are unrolled over the fixed time steps: per-step ``tf.slice`` and
  ``split`` (the gradient of Keras's own layers needs Flex: ``StridedSliceGrad``);
- every shape is static (fixed batch size), so no ``BroadcastGradientArgs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from models.architecture import (
    Activation,
    Add,
    AddChannel,
    BatchNorm,
    ChannelsLast,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Embedding,
    Flatten,
    GlobalPool,
    LayerNorm,
    LeakyReLU,
    NamedLayer,
    Pool,
    Recurrent,
    ReLU,
    Reshape,
    SeparableConv2D,
    pair,
    place,
    same_padding,
)
from models.zoo import ModelSpec

Tensor = Any  # tf.Tensor; TensorFlow ships no type stubs
Pair = tuple[int, int]


@tf.custom_gradient  # type: ignore[untyped-decorator]
def relu(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """ReLU whose gradient is ``upstream * cast(x > 0)`` instead of ``ReluGrad``."""

    def grad(upstream: Tensor) -> Tensor:
        return upstream * tf.cast(x > 0.0, x.dtype)

    return tf.maximum(x, 0.0), grad


def leaky_relu(x: Tensor, slope: float) -> Tensor:
    """``x`` where positive, else ``slope·x``; gradient without ``LeakyReluGrad``."""

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def leaky(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        positive = tf.cast(x > 0.0, x.dtype)

        def grad(upstream: Tensor) -> Tensor:
            return upstream * (positive + slope * (1.0 - positive))

        return x * (positive + slope * (1.0 - positive)), grad

    return leaky(x)


def activate(name: str, x: Tensor) -> Tensor:
    """Apply activation ``name`` (see :data:`models.architecture.ACTIVATIONS`)."""
    if name == "relu":
        return relu(x)
    if name == "sigmoid":
        return tf.sigmoid(x)
    if name == "tanh":
        return tf.tanh(x)
    if name == "softmax":
        return tf.nn.softmax(x, axis=-1)
    return x


def dense(x: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ kernel + bias`` on the last axis of ``x``."""
    if len(x.shape) == 2:
        out = tf.matmul(x, kernel)
    else:
        out = tf.reshape(tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel),
                         [*x.shape[:-1], kernel.shape[-1]])  # fmt: skip
    return out if bias is None else out + bias


def _pad_same(x: Tensor, kernel: Pair, strides: Pair, padding: str, value: float = 0.0) -> Tensor:
    """Pad ``(batch, h, w, c)`` as Keras's "same" padding does (nothing for "valid")."""
    if padding != "same":
        return x
    rows = same_padding(x.shape[1], kernel[0], strides[0])
    cols = same_padding(x.shape[2], kernel[1], strides[1])
    if rows == (0, 0) and cols == (0, 0):
        return x
    return tf.pad(x, [[0, 0], list(rows), list(cols), [0, 0]], constant_values=value)


def _out_size(x: Tensor, kernel: Pair, strides: Pair) -> Pair:
    return ((x.shape[1] - kernel[0]) // strides[0] + 1, (x.shape[2] - kernel[1]) // strides[1] + 1)


def conv2d(x: Tensor, kernel: Tensor, bias: Tensor | None = None, strides: Pair = (1, 1),
           padding: str = "valid") -> Tensor:  # fmt: skip
    """Convolution of ``(batch, h, w, in)`` with ``(kh, kw, in, filters)``."""
    kh, kw, channels, filters = kernel.shape
    if (kh, kw, *strides) == (1, 1, 1, 1):
        return dense(x, tf.reshape(kernel, [channels, filters]), bias)
    out = _conv_valid(_pad_same(x, (kh, kw), strides, padding), kernel, strides)
    return out if bias is None else out + bias


def _conv_valid(x: Tensor, kernel: Tensor, strides: Pair) -> Tensor:
    """Builtin ``CONV_2D`` ("valid") with a gradient of builtin ops (measured op by op
    with ``tflite_runtime`` 2.14, one thread, against the patch-and-matmul convolution
    this replaces: 2.3× faster for the imaging stem, 1.7× for cnn2d's second layer):

    - dx is ``TRANSPOSE_CONV`` of dy with the same kernel and strides;
    - dW is a ``CONV_2D`` of the transposed tensors: x as ``(in, h, w, batch)`` convolved
      with dy as a ``(rows, cols, batch, filters)`` filter dilated by the strides gives
      ``(in, kh, kw, filters)`` (rows beyond the kernel, from an unused stride tail, are
      sliced off).
    """
    batch, height, width, channels = x.shape
    kh, kw, _, filters = kernel.shape
    (sh, sw) = strides

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def conv(x: Tensor, kernel: Tensor) -> tuple[Tensor, Callable[[Tensor], Any]]:
        def grad(dy: Tensor) -> tuple[Tensor, Tensor]:
            dx = tf.nn.conv2d_transpose(dy, kernel, [batch, height, width, channels],
                                        [1, sh, sw, 1], "VALID")  # fmt: skip
            dw = tf.nn.conv2d(tf.transpose(x, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]),
                              [1, 1, 1, 1], "VALID", dilations=[1, sh, sw, 1])  # fmt: skip
            if dw.shape[1:3] != (kh, kw):
                dw = tf.slice(dw, [0, 0, 0, 0], [channels, kh, kw, filters])
            return dx, tf.transpose(dw, [1, 2, 0, 3])

        return tf.nn.conv2d(x, kernel, [1, sh, sw, 1], "VALID"), grad

    return conv(x, kernel)


def conv1d(x: Tensor, kernel: Tensor, bias: Tensor | None = None, stride: int = 1,
           padding: str = "valid") -> Tensor:  # fmt: skip
    """Convolution of ``(batch, time, in)`` with ``(k, in, filters)``: a conv2d of height 1."""
    out = conv2d(tf.expand_dims(x, 1), tf.expand_dims(kernel, 0), bias, (1, stride), padding)
    return tf.reshape(out, [out.shape[0], out.shape[2], out.shape[3]])


def _channels_last_windows(x: Tensor, kernel: Pair, strides: Pair, out: Pair) -> list[Tensor]:
    """Every kernel tap's strided window ``(batch, rows, cols, c)`` of ``x``, row-major taps."""
    batch, height, width, channels = x.shape
    (kh, kw), (sh, sw), (rows, cols) = kernel, strides, out
    grow_h, grow_w = max(kh - 1 + sh * rows - height, 0), max(kw - 1 + sw * cols - width, 0)
    if grow_h or grow_w:  # room for the last window's unused stride tail
        x = tf.pad(x, [[0, 0], [0, grow_h], [0, grow_w], [0, 0]])
    result = []
    for i in range(kh):
        for j in range(kw):
            window = tf.slice(x, [0, i, j, 0], [batch, sh * rows, sw * cols, channels])
            if sh > 1:
                window = tf.reshape(window, [batch * rows, sh, sw * cols * channels])
                window = tf.slice(window, [0, 0, 0], [batch * rows, 1, sw * cols * channels])
            if sw > 1:
                window = tf.reshape(window, [batch * rows * cols, sw, channels])
                window = tf.slice(window, [0, 0, 0], [batch * rows * cols, 1, channels])
            result.append(tf.reshape(window, [batch, rows, cols, channels]))
    return result


def depthwise_conv2d(x: Tensor, kernel: Tensor, bias: Tensor | None = None,
                     strides: Pair = (1, 1), padding: str = "valid") -> Tensor:  # fmt: skip
    """Per-channel convolution of ``(batch, h, w, in)`` with ``(kh, kw, in, multiplier)``.

    Channels-last: each tap's window times that tap's weights, a per-channel vector (the
    broadcast TFLite's ``MUL`` does fastest), summed with ``add_n``. A multiplier > 1
    first repeats every channel (a matmul with a 0/1 matrix), so output channel
    ``c·multiplier + q`` reads input channel ``c``, as in Keras.
    """
    kh, kw, channels, multiplier = kernel.shape
    if multiplier > 1:
        repeat = np.kron(np.eye(channels, dtype=np.float32), np.ones((1, multiplier), np.float32))
        x = dense(x, tf.constant(repeat))
    depth = channels * multiplier
    x = _pad_same(x, (kh, kw), strides, padding)
    windows = _channels_last_windows(x, (kh, kw), strides, _out_size(x, (kh, kw), strides))
    taps = tf.reshape(kernel, [kh * kw, depth])
    terms = [window * tf.reshape(tf.slice(taps, [tap, 0], [1, depth]), [depth])
             for tap, window in enumerate(windows)]
    out = terms[0] if len(terms) == 1 else tf.add_n(terms)
    return out if bias is None else out + bias


def separable_conv2d(x: Tensor, depthwise: Tensor, pointwise: Tensor, bias: Tensor | None = None,
                     strides: Pair = (1, 1), padding: str = "valid") -> Tensor:  # fmt: skip
    """Depthwise then pointwise (1×1) convolution, as Keras's SeparableConv2D."""
    out = depthwise_conv2d(x, depthwise, None, strides, padding)
    return dense(out, tf.reshape(pointwise, [out.shape[-1], pointwise.shape[-1]]), bias)


def pool2d(x: Tensor, op: str, pool: Pair, strides: Pair, padding: str = "valid") -> Tensor:
    """Max or average pooling of ``(batch, h, w, c)``, as Keras's pooling layers."""
    if padding == "valid" and pool == strides:
        return _max_pool_tiles(x, pool) if op == "max" else _pool_tiles(x, pool, tf.reduce_mean)
    height, width = x.shape[1], x.shape[2]
    x = _pad_same(x, pool, strides, padding, -math.inf if op == "max" else 0.0)
    rows, cols = _out_size(x, pool, strides)
    windows = _channels_last_windows(x, pool, strides, (rows, cols))
    if op == "max":
        out = windows[0]
        for window in windows[1:]:
            out = tf.maximum(out, window)
        return out
    counts = _window_counts((height, width), pool, strides, padding)
    return tf.add_n(windows) / tf.reshape(counts, [rows, cols, 1])


def _window_counts(size: Pair, pool: Pair, strides: Pair, padding: str) -> Any:
    """How many input positions each output window covers (padding left out)."""
    ones = np.ones(size, np.float32)
    if padding == "same":
        pads = [same_padding(n, k, s) for n, k, s in zip(size, pool, strides, strict=True)]
        ones = np.pad(ones, pads)
    rows = (ones.shape[0] - pool[0]) // strides[0] + 1
    cols = (ones.shape[1] - pool[1]) // strides[1] + 1
    counts = np.array([[ones[r * strides[0]:r * strides[0] + pool[0],
                             c * strides[1]:c * strides[1] + pool[1]].sum()
                        for c in range(cols)] for r in range(rows)], np.float32)  # fmt: skip
    return tf.constant(counts)


def _whole_tiles(x: Tensor, pool: Pair) -> tuple[Tensor, int, int]:
    """``x`` without the ragged edges that no whole ``pool`` window covers, and how many
    windows fit down and across."""
    batch, height, width, channels = x.shape
    rows, cols = height // pool[0], width // pool[1]
    if (rows * pool[0], cols * pool[1]) != (height, width):
        x = tf.slice(x, [0, 0, 0, 0], [batch, rows * pool[0], cols * pool[1], channels])
    return x, rows, cols


def _pool_tiles(x: Tensor, pool: Pair, reduce: Callable[..., Tensor]) -> Tensor:
    """Reduce non-overlapping windows (the mean: a max would share the gradient between
    equal maxima, where Keras's MaxPooling gives it to one); ragged edges are dropped."""
    x, rows, cols = _whole_tiles(x, pool)
    batch, _, _, channels = x.shape
    ph, pw = pool
    # Two 3-D reductions keep every tensor within the ranks all TFLite kernels accept.
    if ph > 1:
        x = reduce(tf.reshape(x, [batch * rows, ph, cols * pw * channels]), axis=1)
    if pw > 1:
        x = reduce(tf.reshape(x, [batch * rows * cols, pw, channels]), axis=1)
    return tf.reshape(x, [batch, rows, cols, channels])


def _max_pool_tiles(x: Tensor, pool: Pair) -> Tensor:
    """Max over non-overlapping windows: builtin ``MAX_POOL_2D`` (3.5× faster with its
    gradient than a ``maximum`` of sliced windows, measured with ``tflite_runtime`` 2.14).

    The gradient goes to the input positions equal to their window's maximum: the window
    max and dy are broadcast back over each window, then a ``SELECT``. A window whose
    maximum occurs more than once passes dy to each copy, where Keras picks one; with
    real-valued inputs such ties are exact zeros left by a ReLU or dropout before the
    pooling, whose own gradient is zero there, so the result is the same.
    """
    x, rows, cols = _whole_tiles(x, pool)
    batch, _, _, channels = x.shape
    tiles = [batch * rows, pool[0], cols, pool[1], channels]

    def spread(t: Tensor) -> Tensor:  # (batch, rows, cols, c) over each window
        shaped = tf.reshape(t, [batch * rows, 1, cols, 1, channels])
        return tf.reshape(tf.broadcast_to(shaped, tiles), x.shape)

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def max_pool(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        out = tf.nn.max_pool2d(x, pool, pool, "VALID")

        def grad(dy: Tensor) -> Tensor:
            return tf.where(tf.equal(x, spread(out)), spread(dy), tf.zeros_like(x))

        return out, grad

    return max_pool(x)


def pool1d(x: Tensor, op: str, pool: int, stride: int, padding: str = "valid") -> Tensor:
    """Max or average pooling of ``(batch, time, c)``: a 2-D pooling of height 1."""
    out = pool2d(tf.expand_dims(x, 1), op, (1, pool), (1, stride), padding)
    return tf.reshape(out, [out.shape[0], out.shape[2], out.shape[3]])


def global_pool(x: Tensor, op: str) -> Tensor:
    """Mean or max over every axis but the first (batch) and last (channels)."""
    axes = list(range(1, len(x.shape) - 1))
    return tf.reduce_max(x, axis=axes) if op == "max" else tf.reduce_mean(x, axis=axes)


def flatten(x: Tensor) -> Tensor:
    """Reshape ``(batch, ...)`` to ``(batch, features)``."""
    return tf.reshape(x, [x.shape[0], -1])


def dropout(x: Tensor, rate: float, seed: int) -> Tensor:
    """Keep each value with probability ``1 − rate``, scaled by ``1/(1 − rate)`` (Keras rule)."""
    keep = tf.cast(tf.random.uniform(x.shape, seed=seed) >= rate, x.dtype)
    return x * keep * (1.0 / (1.0 - rate))


def embedding(x: Tensor, table: Tensor) -> Tensor:
    """Codes ``(batch, T)`` given as floats to ``(batch, T, dim)``: ``one_hot(codes) @ table``."""
    vocab, dim = table.shape
    codes = tf.one_hot(tf.cast(x, tf.int32), vocab, dtype=table.dtype)
    return tf.reshape(tf.matmul(tf.reshape(codes, [-1, vocab]), table), [*x.shape, dim])


def _step(inputs: Tensor, t: int) -> Tensor:
    """Time step ``t`` of ``(batch, time, n)`` as ``(batch, n)``: a slice, not a strided one."""
    batch, _, width = inputs.shape
    return tf.reshape(tf.slice(inputs, [0, t, 0], [batch, 1, width]), [batch, width])


def lstm(x: Tensor, kernel: Tensor, recurrent: Tensor, bias: Tensor, sequences: bool) -> Tensor:
    """Keras's LSTM (gates i, f, c, o; sigmoid and tanh) unrolled over the time steps."""
    batch, steps, _ = x.shape
    units = recurrent.shape[0]
    inputs = dense(x, kernel, bias)  # every step's input projection in one matmul
    h = c = tf.zeros([batch, units])
    outputs = []
    for t in range(steps):
        i, f, g, o = tf.split(_step(inputs, t) + tf.matmul(h, recurrent), 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outputs.append(h)
    return tf.stack(outputs, axis=1) if sequences else h


def gru(x: Tensor, kernel: Tensor, recurrent: Tensor, bias: Tensor, sequences: bool) -> Tensor:
    """Keras's GRU with ``reset_after`` (gates z, r, h; bias rows: input, recurrent)."""
    batch, steps, _ = x.shape
    units = recurrent.shape[0]
    input_bias, recurrent_bias = tf.unstack(bias)
    inputs = dense(x, kernel, input_bias)
    h = tf.zeros([batch, units])
    outputs = []
    for t in range(steps):
        x_z, x_r, x_h = tf.split(_step(inputs, t), 3, axis=1)
        h_z, h_r, h_h = tf.split(tf.matmul(h, recurrent) + recurrent_bias, 3, axis=1)
        z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
        h = z * h + (1.0 - z) * tf.tanh(x_h + r * h_h)
        outputs.append(h)
    return tf.stack(outputs, axis=1) if sequences else h


def _normalise(x: Tensor, mean: Tensor, variance: Tensor, epsilon: float,
               params: Mapping[str, Tensor]) -> Tensor:  # fmt: skip
    inverse = tf.math.rsqrt(variance + epsilon)
    if "gamma" in params:
        inverse *= params["gamma"]
    out = x * inverse - mean * inverse
    return out + params["beta"] if "beta" in params else out


def batch_norm(x: Tensor, layer: BatchNorm, params: Mapping[str, Tensor], training: bool,
               mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """Batch normalisation; in training, masked batch statistics and the new moving ones."""
    if not training:
        return _normalise(x, params["moving_mean"], params["moving_variance"], layer.epsilon,
                          params), {}  # fmt: skip
    axes = list(range(len(x.shape) - 1))
    rows = tf.ones([x.shape[0]]) if mask is None else mask
    weight = tf.reshape(rows, [x.shape[0], *[1] * (len(x.shape) - 1)])
    count = tf.maximum(tf.reduce_sum(rows), 1.0) * float(math.prod(x.shape[1:-1]))
    mean = tf.reduce_sum(x * weight, axis=axes) / count
    variance = tf.reduce_sum(tf.square(x - mean) * weight, axis=axes) / count
    keep = layer.momentum
    moving = {
        "moving_mean": params["moving_mean"] * keep + mean * (1.0 - keep),
        "moving_variance": params["moving_variance"] * keep + variance * (1.0 - keep),
    }
    return _normalise(x, mean, variance, layer.epsilon, params), moving


def layer_norm(x: Tensor, layer: LayerNorm, params: Mapping[str, Tensor]) -> Tensor:
    """Layer normalisation over the last axis."""
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
    return _normalise(x, mean, variance, layer.epsilon, params)


@dataclass
class Pass:
    """One run through a model: training or not, the batch mask, new batch-norm statistics."""

    training: bool = False
    mask: Tensor | None = None
    updates: dict[str, Tensor] = field(default_factory=dict)


@tf.autograph.experimental.do_not_convert  # type: ignore[untyped-decorator]
def run(spec: ModelSpec, weights: Mapping[str, Tensor], x: Tensor, step: Pass) -> Tensor:
    """Run ``spec`` on a batch ``x``; return the outputs of the last layer (logits).

    Args:
        spec: the configured model.
        weights: tensors or variables by weight name: travelling and frozen ones.
        x: a batch of shape ``(batch, *spec.input_shape)`` with a static batch size.
        step: training or inference; collects new batch-norm statistics by weight name.
    """
    placed, _ = place(spec.graph, spec.input_shape)
    outputs: list[Tensor] = []
    for index, named in enumerate(placed):
        inputs = [x if s == -1 else outputs[s] for s in named.sources]
        params = {name.split("_", 1)[1]: weights[name] for name in named.weight_names}
        out, updates = _apply(named, params, inputs, step, seed=index + 1)
        prefix = named.weight_names[0].split("_", 1)[0] if named.weight_names else ""
        step.updates.update({f"{prefix}_{k}": v for k, v in updates.items()})
        outputs.append(out)
    return outputs[-1]


@tf.autograph.experimental.do_not_convert  # type: ignore[untyped-decorator]
def forward(spec: ModelSpec, weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Inference: the logits of ``spec`` on ``x`` (dropout off, moving batch statistics)."""
    return run(spec, weights, x, Pass())


@tf.autograph.experimental.do_not_convert  # type: ignore[untyped-decorator]
def regularisation(spec: ModelSpec, weights: Mapping[str, Tensor]) -> Tensor:
    """Σ l2·Σkernel² over the kernels of trainable layers with an L2 regulariser (Keras's L2)."""
    terms = []
    for named in place(spec.graph, spec.input_shape)[0]:
        rate = getattr(named.layer, "l2", 0.0)
        if named.frozen or not rate:
            continue
        kernels = [n for n in named.weight_names if n.endswith("kernel")]
        terms += [rate * tf.reduce_sum(tf.square(weights[n])) for n in kernels]
    return tf.add_n(terms) if terms else tf.constant(0.0)


def _apply(named: NamedLayer, p: Mapping[str, Tensor], inputs: Sequence[Tensor], step: Pass,
           seed: int) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    layer, x = named.layer, inputs[0]
    match layer:
        case BatchNorm():
            return batch_norm(x, layer, p, step.training and not named.frozen, step.mask)
        case Add():
            return tf.add_n(list(inputs)), {}
        case Concatenate():
            return tf.concat(list(inputs), axis=-1), {}
        case Dropout(rate):
            return (dropout(x, rate, seed) if step.training and rate else x), {}
    return _elementwise_or_weighted(layer, p, x), {}


def _elementwise_or_weighted(layer: object, p: Mapping[str, Tensor], x: Tensor) -> Tensor:
    bias = p.get("bias")
    match layer:
        case Dense(activation=activation):
            return activate(activation, dense(x, p["kernel"], bias))
        case Conv1D(stride=stride, padding=padding, activation=activation):
            return activate(activation, conv1d(x, p["kernel"], bias, stride, padding))
        case Conv2D(strides=strides, padding=padding, activation=activation):
            return activate(activation, conv2d(x, p["kernel"], bias, pair(strides), padding))
        case DepthwiseConv2D(strides=strides, padding=padding, activation=activation):
            out = depthwise_conv2d(x, p["kernel"], bias, pair(strides), padding)
            return activate(activation, out)
        case SeparableConv2D(strides=strides, padding=padding, activation=activation):
            out = separable_conv2d(x, p["depthwise_kernel"], p["pointwise_kernel"], bias,
                                   pair(strides), padding)  # fmt: skip
            return activate(activation, out)
        case Pool(op, 1, pool, strides, padding):
            return pool1d(x, op, pool[1], strides[1], padding)  # type: ignore[index]
        case Pool(op, 2, pool, strides, padding):
            return pool2d(x, op, pool, strides, padding)  # type: ignore[arg-type]
        case GlobalPool(op):
            return global_pool(x, op)
        case LayerNorm():
            return layer_norm(x, layer, p)
        case Embedding():
            return embedding(x, p["embeddings"])
        case Recurrent(cell, _, sequences):
            unrolled = lstm if cell == "lstm" else gru
            return unrolled(x, p["kernel"], p["recurrent_kernel"], p["bias"], sequences)
        case ReLU():
            return relu(x)
        case Activation(name):
            return activate(name, x)
        case LeakyReLU(slope):
            return leaky_relu(x, slope)
        case Flatten():
            return flatten(x)
        case Reshape(target):
            return tf.reshape(x, [x.shape[0], *target])
        case ChannelsLast():
            return tf.transpose(x, [0, 2, 1])
        case AddChannel():
            return tf.expand_dims(x, -1)
    raise TypeError(f"unknown layer {layer!r}")
