"""The fedge model zoo: small models that train on device with builtin TFLite ops only.

Plain Python and numpy (no TensorFlow), so shapes and initial weights are cheap.

- ``logreg``: one dense layer on the flattened input (the seed article's model).
- ``mlp``: tabular data; dense 32 → ReLU → dense 16 → ReLU → dense (widths and
  dropout configurable).
- ``cnn1d``: wearable windows given as ``(channels, time)``; two convolutions
  (16 filters, kernels 5 and 3) with ReLU and average pooling by 2, then dense.
- ``cnn2d``: small images given as ``(height, width)`` (grayscale) or ``(height,
  width, channels)``; two 3×3 convolutions (8 and 16 filters) with ReLU and 2×2
  average pooling, then dense.
- ``imaging``: RGB images such as 64×64×3 dermatology or X-ray crops; a stride-2
  convolution stem and two depthwise-separable blocks with batch normalisation and
  max pooling, global average pooling, dropout 0.2, dense.

Every model is a stack of :mod:`models.architecture` layers, the same library a
Keras model is mapped onto (:mod:`models.keras_import`): one path to a file.

The task follows from ``classes``: 0 is regression (one output, MSE), 2 is
binary (one logit, sigmoid cross-entropy), K ≥ 3 is multiclass (K logits,
softmax cross-entropy). ``classes=1`` is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.architecture import (
    AddChannel,
    ArchitectureError,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    ChannelsLast,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    Graph,
    Layer,
    Pool,
    ReLU,
    SeparableConv2D,
    Shape,
    Task,
    named_weight_shapes,
    place,
)

Array = npt.NDArray[Any]

#: The zoo's model names.
NAMES: tuple[str, ...] = ("logreg", "mlp", "cnn1d", "cnn2d", "imaging")
#: mlp's hidden widths unless told otherwise
DEFAULT_HIDDEN: tuple[int, ...] = (32, 16)

#: What each zoo model takes, for ``fedge export --help``.
SHAPES: dict[str, str] = {
    "logreg": "any shape (flattened), e.g. 30",
    "mlp": "any shape (flattened), e.g. 30; --hidden (default 32,16), --dropout (default 0)",
    "cnn1d": "CHANNELS,TIME, e.g. 6,100",
    "cnn2d": "HEIGHT,WIDTH (grayscale) or HEIGHT,WIDTH,CHANNELS, e.g. 28,28 or 32,32,3",
    "imaging": "HEIGHT,WIDTH,CHANNELS, at least 8,8; made for 64,64,3 (there with --batch-size "
    "at most 27: the device bound on a file's tensors)",
}


@dataclass(frozen=True)
class ModelSpec:
    """A model configured for one input shape and task: a zoo model or an imported one.

    Attributes:
        name: zoo name (or the imported model's name).
        input_shape: per-example input shape (no batch dimension).
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.
        layers: the layers, the last one giving the logits (the output dense layer).
        inputs: what each layer reads (see :class:`models.architecture.Graph`); empty: a chain.
        frozen: indices of layers whose weights stay fixed (they never travel).
    """

    name: str
    input_shape: Shape
    classes: int
    layers: tuple[Layer, ...]
    inputs: tuple[tuple[int, ...], ...] = ()
    frozen: frozenset[int] = field(default_factory=frozenset)

    @property
    def graph(self) -> Graph:
        """The layers and their wiring."""
        return Graph(self.layers, self.inputs, self.frozen)

    @property
    def task(self) -> Task:
        """The learning task implied by ``classes``."""
        return task_of(self.classes)

    @property
    def outputs(self) -> int:
        """Width of the last layer: 1 for regression and binary, K for multiclass."""
        return output_units(self.classes)

    def weight_shapes(self) -> dict[str, Shape]:
        """Names and shapes of the weights that travel (all but frozen layers'), in model order."""
        return named_weight_shapes(self.graph, self.input_shape)

    def frozen_weight_shapes(self) -> dict[str, Shape]:
        """Names and shapes of the frozen layers' weights (kept in the model file)."""
        return named_weight_shapes(self.graph, self.input_shape, frozen=True)


def task_of(classes: int) -> Task:
    """Return the task for ``classes`` (0 regression, 2 binary, K ≥ 3 multiclass).

    Raises:
        ArchitectureError: for ``classes`` of 1 or below 0.
    """
    if classes == 0:
        return "regression"
    if classes == 2:
        return "binary"
    if classes >= 3:
        return "multiclass"
    raise ArchitectureError(
        f"classes must be 0 (regression), 2 (binary) or at least 3 (multiclass), got {classes}"
    )


def output_units(classes: int) -> int:
    """Return the number of model outputs for ``classes``."""
    return classes if task_of(classes) == "multiclass" else 1


def _body(name: str, shape: Shape, hidden: Sequence[int], dropout: float) -> tuple[Layer, ...]:
    if name == "logreg":
        return (Flatten(),)
    if name == "mlp":
        drop: tuple[Layer, ...] = (Dropout(dropout),) if dropout else ()
        return (Flatten(), *(x for units in hidden for x in (Dense(units), ReLU(), *drop)))
    if name == "cnn1d":
        return (
            ChannelsLast(),
            Conv1D(16, 5), ReLU(), AvgPool1D(2),
            Conv1D(16, 3), ReLU(), AvgPool1D(2),
            Flatten(),
        )  # fmt: skip
    if name == "cnn2d":
        gray: tuple[Layer, ...] = (AddChannel(),) if len(shape) == 2 else ()
        return (
            *gray,
            Conv2D(8, 3), ReLU(), AvgPool2D(2),
            Conv2D(16, 3), ReLU(), AvgPool2D(2),
            Flatten(),
        )  # fmt: skip
    if name == "imaging":
        # A stride-2 stem, two depthwise-separable blocks, global pooling: ~1.7 MFLOP an
        # example at 64×64×3 and about 4k weights, small enough for a Pi or a phone.
        return (
            Conv2D(16, 3, 2, "same"), BatchNorm(), ReLU(),
            SeparableConv2D(32, 3, padding="same"), BatchNorm(), ReLU(), Pool("max", 2, 2),
            SeparableConv2D(64, 3, padding="same"), BatchNorm(), ReLU(), Pool("max", 2, 2),
            GlobalPool("avg"), Dropout(0.2),
        )  # fmt: skip
    raise ArchitectureError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")


def build(
    name: str,
    input_shape: Sequence[int],
    classes: int,
    *,
    hidden: Sequence[int] | None = None,
    dropout: float = 0.0,
) -> ModelSpec:
    """Configure zoo model ``name`` for an input shape and number of classes.

    Args:
        name: one of :data:`NAMES`.
        input_shape: per-example shape: ``(features,)`` for logreg and mlp (any
            shape is flattened), ``(channels, time)`` for cnn1d, ``(height, width)``
            or ``(height, width, channels)`` for cnn2d, ``(height, width, channels)``
            for imaging.
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.
        hidden: mlp only: the hidden layers' widths (default :data:`DEFAULT_HIDDEN`).
        dropout: mlp only: dropout rate after each hidden layer (0: none).

    Raises:
        ArchitectureError: unknown name, bad classes, options for another model, or an
            input shape of the wrong rank or too small for the model.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ArchitectureError(f"input shape must be non-empty and positive, got {shape}")
    if name != "mlp" and (hidden is not None or dropout):
        raise ArchitectureError(f"hidden widths and dropout are mlp options, not {name}'s")
    widths = tuple(DEFAULT_HIDDEN if hidden is None else hidden)
    if any(int(w) != w or w < 1 for w in widths):
        raise ArchitectureError(f"hidden widths must be positive integers, got {widths}")
    layers = (*_body(name, shape, widths, dropout), Dense(output_units(classes)))
    try:
        place(Graph(layers), shape)  # validates ranks and sizes now, not at export time
    except ArchitectureError as exc:
        raise ArchitectureError(f"{name} cannot take input shape {shape}: {exc}") from None
    return ModelSpec(name, shape, classes, layers)


def weight_shapes(name: str, input_shape: Sequence[int], classes: int) -> dict[str, Shape]:
    """Return the ordered weight names and shapes of a zoo model, without TensorFlow.

    Example:
        >>> weight_shapes("logreg", (30,), 2)
        {'dense0_kernel': (30, 1), 'dense0_bias': (1,)}
    """
    return build(name, input_shape, classes).weight_shapes()


def initial_weights(spec: ModelSpec, seed: int) -> dict[str, Array]:
    """Initial travelling weights, reproducible from ``seed``, as Keras initialises them.

    Kernels Glorot uniform; biases, betas and moving means zero; gammas and moving
    variances one; embeddings uniform in ±0.05.
    """
    rng = np.random.default_rng(seed)
    weights: dict[str, Array] = {}
    for name, shape in spec.weight_shapes().items():
        if name.endswith(("_bias", "_beta", "_moving_mean")):
            weights[name] = np.zeros(shape, np.float32)
        elif name.endswith(("_gamma", "_moving_variance")):
            weights[name] = np.ones(shape, np.float32)
        elif name.endswith("_embeddings"):
            weights[name] = rng.uniform(-0.05, 0.05, size=shape).astype(np.float32)
        else:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
            weights[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
    return weights
