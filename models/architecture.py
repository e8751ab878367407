"""Layer specifications and shape inference, in plain Python (no TensorFlow).

A model is a tuple of small frozen layer specs, optionally wired as a graph (each
layer names the layers it reads; ``-1`` is the model input). This module knows every
layer's output shape and weight shapes, so weight names and shapes can be computed
cheaply (for codecs, metadata and validation) without importing TensorFlow.
Shapes here exclude the batch dimension; every layer is channels-last.

Weight names are ``<kind><index>_<param>``, numbered per kind in model order:
``conv0_kernel``, ``conv0_bias``, ``dense0_kernel``, ``bn0_moving_mean``... Kernels
follow the Keras layouts: dense ``(in, out)``, conv1d ``(k, in, filters)``, conv2d
``(kh, kw, in, filters)``, depthwise ``(kh, kw, in, multiplier)``, pointwise
``(1, 1, in·multiplier, filters)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Shape = tuple[int, ...]
Task = Literal["regression", "binary", "multiclass"]
Padding = Literal["valid", "same"]

#: activations every layer with an ``activation`` option accepts
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
#: weights that travel with the model but change by a running average, not a gradient
STATE_PARAMS = ("moving_mean", "moving_variance")


class ArchitectureError(ValueError):
    """A model cannot be built for the requested name, input shape or classes."""


def pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    """``(n, n)`` for an int, else the pair itself."""
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ArchitectureError(f"expected an int or a pair, got {value!r}")
    return (int(value[0]), int(value[1]))


def _last(value: int | tuple[int, ...]) -> int:
    return int(value if isinstance(value, int) else value[-1])


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ArchitectureError(
            f"activation {activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )


@dataclass(frozen=True)
class Dense:
    """Fully connected layer ``activation(x @ kernel + bias)`` on the last axis."""

    units: int
    activation: str = "linear"
    use_bias: bool = True
    l2: float = 0.0  # kernel L2 regulariser: adds l2·Σkernel² to the objective

    def __post_init__(self) -> None:
        _check_activation(self.activation)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation (one of :data:`ACTIVATIONS`)."""

    name: str

    def __post_init__(self) -> None:
        _check_activation(self.name)


@dataclass(frozen=True)
class ReLU:
    """Rectified linear unit."""


@dataclass(frozen=True)
class LeakyReLU:
    """``x`` for ``x > 0``, else ``slope·x`` (Keras 3 default slope 0.3)."""

    slope: float = 0.3


@dataclass(frozen=True)
class Conv1D:
    """1-D convolution on ``(time, channels)``."""

    filters: int
    kernel: int
    stride: int = 1
    padding: Padding = "valid"
    activation: str = "linear"
    use_bias: bool = True
    l2: float = 0.0

    def __post_init__(self) -> None:
        _check_activation(self.activation)


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution on ``(height, width, channels)``; ints mean square kernels/strides."""

    filters: int
    kernel: tuple[int, int] | int
    strides: tuple[int, int] | int = 1
    padding: Padding = "valid"
    activation: str = "linear"
    use_bias: bool = True
    l2: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", pair(self.kernel))
        object.__setattr__(self, "strides", pair(self.strides))
        _check_activation(self.activation)


@dataclass(frozen=True)
class DepthwiseConv2D:
    """Per-channel 2-D convolution: channel ``c`` gives outputs ``c·multiplier + q``."""

    kernel: tuple[int, int] | int
    strides: tuple[int, int] | int = 1
    padding: Padding = "valid"
    multiplier: int = 1
    activation: str = "linear"
    use_bias: bool = True
    l2: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", pair(self.kernel))
        object.__setattr__(self, "strides", pair(self.strides))
        _check_activation(self.activation)


@dataclass(frozen=True)
class SeparableConv2D:
    """A depthwise convolution (no bias) followed by a pointwise (1×1) one with bias."""

    filters: int
    kernel: tuple[int, int] | int
    strides: tuple[int, int] | int = 1
    padding: Padding = "valid"
    multiplier: int = 1
    activation: str = "linear"
    use_bias: bool = True
    l2: float = 0.0  # on both kernels, as Keras's depthwise/pointwise regularisers

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", pair(self.kernel))
        object.__setattr__(self, "strides", pair(self.strides))
        _check_activation(self.activation)


@dataclass(frozen=True)
class Pool:
    """Max or average pooling over time (``rank`` 1) or height and width (``rank`` 2).

    ``strides`` None means the pool size (Keras's default). Average pooling with "same"
    padding averages only the positions inside the input, as Keras does.
    """

    op: Literal["max", "avg"]
    rank: Literal[1, 2]
    pool: tuple[int, int] | int
    strides: tuple[int, int] | int | None = None
    padding: Padding = "valid"

    def __post_init__(self) -> None:
        if self.rank == 1:  # stored as 2-D windows of height 1
            pool = (1, _last(self.pool))
            strides = pool if self.strides is None else (1, _last(self.strides))
        else:
            pool = pair(self.pool)
            strides = pool if self.strides is None else pair(self.strides)
        object.__setattr__(self, "pool", pool)
        object.__setattr__(self, "strides", strides)


def AvgPool1D(pool: int) -> Pool:
    """Non-overlapping average pooling over time; a ragged tail is dropped."""
    return Pool("avg", 1, pool)


def AvgPool2D(pool: int) -> Pool:
    """Non-overlapping average pooling over height and width; ragged edges are dropped."""
    return Pool("avg", 2, pool)


@dataclass(frozen=True)
class GlobalPool:
    """Mean or max over every axis but the channels: ``(..., C)`` to ``(C,)``."""

    op: Literal["max", "avg"]


@dataclass(frozen=True)
class Flatten:
    """Reshape every example to a vector."""


@dataclass(frozen=True)
class Reshape:
    """Reshape every example to ``target`` (same number of values)."""

    target: Shape


@dataclass(frozen=True)
class Dropout:
    """Zero each value with probability ``rate`` in ``train`` (scaling the rest); off otherwise."""

    rate: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ArchitectureError(f"Dropout rate must be in [0, 1), got {self.rate}")


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation over the last axis (Keras defaults: momentum 0.99, epsilon 1e-3)."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation over the last axis (Keras default epsilon 1e-3)."""

    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True


@dataclass(frozen=True)
class Embedding:
    """Integer codes ``(T,)`` (fed as float32) to vectors ``(T, dim)``; codes ≥ vocab give 0."""

    vocab: int
    dim: int


@dataclass(frozen=True)
class Recurrent:
    """One LSTM or GRU layer on ``(time, features)``, unrolled over the fixed time steps.

    Keras's defaults only: tanh and sigmoid activations, a bias, GRU with ``reset_after``;
    starts from zero state; returns the last output, or every step's (``sequences``).
    """

    cell: Literal["lstm", "gru"]
    units: int
    sequences: bool = False


@dataclass(frozen=True)
class Add:
    """Elementwise sum of inputs of one shape (residual connections)."""


@dataclass(frozen=True)
class Concatenate:
    """Join inputs along the last axis."""


@dataclass(frozen=True)
class ChannelsLast:
    """Transpose a ``(channels, time)`` window to ``(time, channels)``."""


@dataclass(frozen=True)
class AddChannel:
    """Give a ``(height, width)`` grayscale image one channel: ``(height, width, 1)``."""


Layer = (
    Dense | Activation | ReLU | LeakyReLU | Conv1D | Conv2D | DepthwiseConv2D | SeparableConv2D
    | Pool | GlobalPool | Flatten | Reshape | Dropout | BatchNorm | LayerNorm | Embedding | Add
    | Concatenate | ChannelsLast | AddChannel | Recurrent
)  # fmt: skip
MERGES = (Add, Concatenate)


@dataclass(frozen=True)
class Graph:
    """Layers and their wiring: ``inputs[i]`` lists what layer ``i`` reads (``-1``: the input).

    An empty ``inputs`` is a chain (each layer reads the one before). ``frozen`` holds the
    indices of layers whose weights stay fixed (Keras ``trainable=False``).
    """

    layers: tuple[Layer, ...]
    inputs: tuple[tuple[int, ...], ...] = ()
    frozen: frozenset[int] = field(default_factory=frozenset)

    def sources(self, index: int) -> tuple[int, ...]:
        """What layer ``index`` reads."""
        return self.inputs[index] if self.inputs else (index - 1,)


@dataclass(frozen=True)
class NamedLayer:
    """A layer placed in a model: its input shapes, weight names and whether it is frozen."""

    layer: Layer
    input_shapes: tuple[Shape, ...]
    weight_names: tuple[str, ...]
    sources: tuple[int, ...]
    frozen: bool = False

    @property
    def input_shape(self) -> Shape:
        """The (first) input's shape."""
        return self.input_shapes[0]


def _out_len(size: int, kernel: int, stride: int, padding: Padding, layer: Layer) -> int:
    if padding == "same":
        return -(-size // stride)
    if size < kernel:
        raise ArchitectureError(
            f"{_name(layer)} with {'pool' if isinstance(layer, Pool) else 'kernel'} {kernel} "
            f"needs an input of at least {kernel}, got {size}: the input shape is too small for "
            "this model"
        )
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow "same" padding before and after an axis of ``size``."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _name(layer: Layer) -> str:
    if isinstance(layer, Pool):
        return f"{'Max' if layer.op == 'max' else 'Avg'}Pool{layer.rank}D"
    return type(layer).__name__


def _spatial(layer: Layer, shape: Shape, kernel: tuple[int, int], strides: tuple[int, int],
             padding: Padding) -> tuple[int, int]:
    return (_out_len(shape[0], kernel[0], strides[0], padding, layer),
            _out_len(shape[1], kernel[1], strides[1], padding, layer))  # fmt: skip


def output_shape(layer: Layer, shape: Shape, *others: Shape) -> Shape:
    """Return the per-example output shape of ``layer`` for input ``shape`` (and merges' others).

    Raises:
        ArchitectureError: if the input has the wrong rank or is too small.
    """
    match layer:
        case Dense(units):
            _require_rank(layer, shape, 1, at_least=True)
            return (*shape[:-1], units)
        case Conv1D(filters, kernel, stride, padding):
            _require_rank(layer, shape, 2)
            return (_out_len(shape[0], kernel, stride, padding, layer), filters)
        case Conv2D() | DepthwiseConv2D() | SeparableConv2D():
            _require_rank(layer, shape, 3)
            rows, cols = _spatial(layer, shape, pair(layer.kernel), pair(layer.strides),
                                  layer.padding)  # fmt: skip
            channels = (shape[2] * layer.multiplier if isinstance(layer, DepthwiseConv2D)
                        else layer.filters)  # fmt: skip
            return (rows, cols, channels)
        case Pool(_, rank, pool, strides, padding):
            _require_rank(layer, shape, rank + 1)
            view = (1, *shape) if rank == 1 else shape
            rows, cols = _spatial(layer, view, pair(pool), pair(strides or 1), padding)
            return (cols, shape[-1]) if rank == 1 else (rows, cols, shape[-1])
        case GlobalPool():
            _require_rank(layer, shape, 2, at_least=True)
            return shape[-1:]
        case Flatten():
            return (math.prod(shape),)
        case Reshape(target):
            if math.prod(target) != math.prod(shape):
                raise ArchitectureError(f"Reshape to {target} cannot take input shape {shape}")
            return target
        case Embedding(_, dim):
            _require_rank(layer, shape, 1)
            return (*shape, dim)
        case Recurrent(_, units, sequences):
            _require_rank(layer, shape, 2)
            return (shape[0], units) if sequences else (units,)
        case Add():
            if any(o != shape for o in others):
                raise ArchitectureError(f"Add needs inputs of one shape, got {[shape, *others]}")
            return shape
        case Concatenate():
            if any(o[:-1] != shape[:-1] or len(o) != len(shape) for o in others):
                raise ArchitectureError(
                    f"Concatenate needs inputs that differ only in the last axis, got "
                    f"{[shape, *others]}"
                )
            return (*shape[:-1], shape[-1] + sum(o[-1] for o in others))
        case ChannelsLast():
            _require_rank(layer, shape, 2)
            return (shape[1], shape[0])
        case AddChannel():
            _require_rank(layer, shape, 2)
            return (*shape, 1)
    return shape  # elementwise: activations, dropout, normalisations


def weight_shapes(layer: Layer, shape: Shape) -> tuple[tuple[str, Shape], ...]:
    """Return ``(param, shape)`` pairs of the weights ``layer`` owns for input ``shape``."""
    bias: tuple[tuple[str, Shape], ...] = ()
    match layer:
        case Dense(units, _, use_bias):
            bias = (("bias", (units,)),) if use_bias else ()
            return (("kernel", (shape[-1], units)), *bias)
        case Conv1D(filters, kernel, use_bias=use_bias):
            bias = (("bias", (filters,)),) if use_bias else ()
            return (("kernel", (kernel, shape[1], filters)), *bias)
        case Conv2D(filters, kernel, use_bias=use_bias):
            bias = (("bias", (filters,)),) if use_bias else ()
            return (("kernel", (*pair(kernel), shape[2], filters)), *bias)
        case DepthwiseConv2D(kernel, multiplier=multiplier, use_bias=use_bias):
            bias = (("bias", (shape[2] * multiplier,)),) if use_bias else ()
            return (("kernel", (*pair(kernel), shape[2], multiplier)), *bias)
        case SeparableConv2D(filters, kernel, multiplier=multiplier, use_bias=use_bias):
            bias = (("bias", (filters,)),) if use_bias else ()
            depth = shape[2] * multiplier
            return (("depthwise_kernel", (*pair(kernel), shape[2], multiplier)),
                    ("pointwise_kernel", (1, 1, depth, filters)), *bias)  # fmt: skip
        case BatchNorm(_, _, center, scale) | LayerNorm(_, center, scale):
            channels = (shape[-1],)
            affine = ((("gamma", channels),) if scale else ()) + (
                (("beta", channels),) if center else ())
            if isinstance(layer, LayerNorm):
                return affine
            return (*affine, ("moving_mean", channels), ("moving_variance", channels))
        case Embedding(vocab, dim):
            return (("embeddings", (vocab, dim)),)
        case Recurrent(cell, units):
            gates = (4 if cell == "lstm" else 3) * units
            biases: Shape = (gates,) if cell == "lstm" else (2, gates)  # GRU: input, recurrent
            return (("kernel", (shape[-1], gates)), ("recurrent_kernel", (units, gates)),
                    ("bias", biases))  # fmt: skip
    return ()


_KINDS: dict[type, str] = {
    Dense: "dense", Conv1D: "conv", Conv2D: "conv", DepthwiseConv2D: "dwconv",
    SeparableConv2D: "sepconv", BatchNorm: "bn", LayerNorm: "ln", Embedding: "embedding",
    Recurrent: "rnn",
}  # fmt: skip


def place(graph: Graph, input_shape: Shape) -> tuple[list[NamedLayer], Shape]:
    """Name every layer's weights and infer shapes through the whole graph.

    Returns:
        The placed layers and the per-example output shape of the last one.
    """
    placed: list[NamedLayer] = []
    counters: dict[str, int] = {}
    shapes: list[Shape] = []
    for index, layer in enumerate(graph.layers):
        sources = graph.sources(index)
        if any(not -1 <= s < index for s in sources) or not sources:
            raise ArchitectureError(f"layer {index} reads {sources}: only earlier layers or -1")
        if len(sources) > 1 and not isinstance(layer, MERGES):
            raise ArchitectureError(f"{_name(layer)} takes one input, got {len(sources)}")
        in_shapes = tuple(input_shape if s == -1 else shapes[s] for s in sources)
        out = output_shape(layer, *in_shapes)  # checks ranks before weights are sized
        params = weight_shapes(layer, in_shapes[0])
        names: tuple[str, ...] = ()
        if params:
            kind = _KINDS[type(layer)]
            counters[kind] = counters.get(kind, -1) + 1
            names = tuple(f"{kind}{counters[kind]}_{param}" for param, _ in params)
        placed.append(NamedLayer(layer, in_shapes, names, sources, index in graph.frozen))
        shapes.append(out)
    return placed, shapes[-1] if shapes else input_shape


def named_weight_shapes(
    graph: Graph, input_shape: Shape, *, frozen: bool = False
) -> dict[str, Shape]:
    """Return the weights' names and shapes in model order: the travelling ones, or the frozen."""
    result: dict[str, Shape] = {}
    for named in place(graph, input_shape)[0]:
        if named.frozen != frozen:
            continue
        params = weight_shapes(named.layer, named.input_shape)
        for name, (_, shape) in zip(named.weight_names, params, strict=True):
            result[name] = shape
    return result


def is_state(weight_name: str) -> bool:
    """Whether a weight changes by a running average (batch-norm statistics), not a gradient."""
    return weight_name.endswith(tuple(f"_{p}" for p in STATE_PARAMS))


def _require_rank(layer: Layer, shape: Shape, rank: int, *, at_least: bool = False) -> None:
    if len(shape) != rank and not (at_least and len(shape) >= rank):
        raise ArchitectureError(
            f"{_name(layer)} needs a {rank}-D input per example{' or more' if at_least else ''}, "
            f"got shape {shape}"
        )
