"""Layer specifications and shape inference, in plain Python (no TensorFlow).

A model is a tuple of small frozen layer specs. This module knows every layer's
output shape and weight shapes, so weight names and shapes can be computed
cheaply (for codecs, metadata and validation) without importing TensorFlow.
Shapes here exclude the batch dimension.

Weight names are ``<kind><index>_<param>``, numbered per kind in model order:
``conv0_kernel``, ``conv0_bias``, ``dense0_kernel``, ``dense1_bias``... Kernels
follow the TensorFlow layouts: dense ``(in, out)``, conv1d ``(k, in, filters)``,
conv2d ``(k, k, in, filters)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Shape = tuple[int, ...]
Task = Literal["regression", "binary", "multiclass"]


class ArchitectureError(ValueError):
    """A model cannot be built for the requested name, input shape or classes."""


@dataclass(frozen=True)
class Dense:
    """Fully connected layer ``x @ kernel + bias`` on a flat input."""

    units: int


@dataclass(frozen=True)
class ReLU:
    """Rectified linear unit."""


@dataclass(frozen=True)
class Conv1D:
    """1-D convolution, stride 1, "valid" padding, on ``(time, channels)``."""

    filters: int
    kernel: int


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution, stride 1, "valid" padding, on ``(height, width, channels)``."""

    filters: int
    kernel: int


@dataclass(frozen=True)
class AvgPool1D:
    """Non-overlapping average pooling over time; a ragged tail is dropped."""

    pool: int


@dataclass(frozen=True)
class AvgPool2D:
    """Non-overlapping average pooling over height and width; ragged edges are dropped."""

    pool: int


@dataclass(frozen=True)
class Flatten:
    """Reshape every example to a vector."""


@dataclass(frozen=True)
class ChannelsLast:
    """Transpose a ``(channels, time)`` window to ``(time, channels)``."""


@dataclass(frozen=True)
class AddChannel:
    """Give a ``(height, width)`` grayscale image one channel: ``(height, width, 1)``."""


Layer = Dense | ReLU | Conv1D | Conv2D | AvgPool1D | AvgPool2D | Flatten | ChannelsLast | AddChannel


@dataclass(frozen=True)
class NamedLayer:
    """A layer placed in a model: its input shape and the names of its weights."""

    layer: Layer
    input_shape: Shape
    weight_names: tuple[str, ...]


def output_shape(layer: Layer, shape: Shape) -> Shape:
    """Return the per-example output shape of ``layer`` for input ``shape``.

    Raises:
        ArchitectureError: if the input has the wrong rank or is too small.
    """
    match layer:
        case Dense(units):
            _require_rank(layer, shape, 1)
            return (units,)
        case Conv1D(filters, kernel):
            _require_rank(layer, shape, 2)
            return (_shrink(layer, shape[0], kernel), filters)
        case Conv2D(filters, kernel):
            _require_rank(layer, shape, 3)
            return (_shrink(layer, shape[0], kernel), _shrink(layer, shape[1], kernel), filters)
        case AvgPool1D(pool):
            _require_rank(layer, shape, 2)
            return (_pooled(layer, shape[0], pool), shape[1])
        case AvgPool2D(pool):
            _require_rank(layer, shape, 3)
            return (_pooled(layer, shape[0], pool), _pooled(layer, shape[1], pool), shape[2])
        case Flatten():
            return (math.prod(shape),)
        case ChannelsLast():
            _require_rank(layer, shape, 2)
            return (shape[1], shape[0])
        case AddChannel():
            _require_rank(layer, shape, 2)
            return (*shape, 1)
        case ReLU():
            return shape


def weight_shapes(layer: Layer, shape: Shape) -> tuple[tuple[str, Shape], ...]:
    """Return ``(param, shape)`` pairs of the weights ``layer`` owns for input ``shape``."""
    match layer:
        case Dense(units):
            return (("kernel", (shape[0], units)), ("bias", (units,)))
        case Conv1D(filters, kernel):
            return (("kernel", (kernel, shape[1], filters)), ("bias", (filters,)))
        case Conv2D(filters, kernel):
            return (("kernel", (kernel, kernel, shape[2], filters)), ("bias", (filters,)))
        case _:
            return ()


def _kind(layer: Layer) -> str:
    return "dense" if isinstance(layer, Dense) else "conv"


def place(layers: tuple[Layer, ...], input_shape: Shape) -> tuple[list[NamedLayer], Shape]:
    """Name every layer's weights and infer shapes through the whole stack.

    Returns:
        The placed layers and the per-example output shape of the last one.
    """
    placed: list[NamedLayer] = []
    counters: dict[str, int] = {}
    shape = input_shape
    for layer in layers:
        params = weight_shapes(layer, shape) if _has_weights(layer) else ()
        names: tuple[str, ...] = ()
        if params:
            kind = _kind(layer)
            index = counters.get(kind, 0)
            counters[kind] = index + 1
            names = tuple(f"{kind}{index}_{param}" for param, _ in params)
        placed.append(NamedLayer(layer, shape, names))
        shape = output_shape(layer, shape)
    return placed, shape


def named_weight_shapes(layers: tuple[Layer, ...], input_shape: Shape) -> dict[str, Shape]:
    """Return every weight's name and shape, in model order."""
    result: dict[str, Shape] = {}
    for named in place(layers, input_shape)[0]:
        params = weight_shapes(named.layer, named.input_shape)
        for name, (_, shape) in zip(named.weight_names, params, strict=True):
            result[name] = shape
    return result


def _has_weights(layer: Layer) -> bool:
    return isinstance(layer, Dense | Conv1D | Conv2D)


def _require_rank(layer: Layer, shape: Shape, rank: int) -> None:
    if len(shape) != rank:
        raise ArchitectureError(
            f"{type(layer).__name__} needs a {rank}-D input per example, got shape {shape}"
        )


def _shrink(layer: Layer, size: int, kernel: int) -> int:
    if size < kernel:
        raise ArchitectureError(
            f"{type(layer).__name__} with kernel {kernel} needs an input of at least {kernel}, "
            f"got {size}: the input shape is too small for this model"
        )
    return size - kernel + 1


def _pooled(layer: Layer, size: int, pool: int) -> int:
    if size < pool:
        raise ArchitectureError(
            f"{type(layer).__name__} with pool {pool} needs an input of at least {pool}, "
            f"got {size}: the input shape is too small for this model"
        )
    return size // pool
