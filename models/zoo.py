"""The fedge model zoo: small models that train on device with builtin TFLite ops only.

Plain Python and numpy (no TensorFlow), so shapes and initial weights are cheap.

- ``logreg``: one dense layer on the flattened input (the seed article's model).
- ``mlp``: tabular data; dense 32 → ReLU → dense 16 → ReLU → dense.
- ``cnn1d``: wearable windows given as ``(channels, time)``; two convolutions
  (16 filters, kernels 5 and 3) with ReLU and average pooling by 2, then dense.
- ``cnn2d``: small grayscale images given as ``(height, width)``; two 3×3
  convolutions (8 and 16 filters) with ReLU and 2×2 average pooling, then dense.

The task follows from ``classes``: 0 is regression (one output, MSE), 2 is
binary (one logit, sigmoid cross-entropy), K ≥ 3 is multiclass (K logits,
softmax cross-entropy). ``classes=1`` is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.architecture import (
    AddChannel,
    ArchitectureError,
    AvgPool1D,
    AvgPool2D,
    ChannelsLast,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    ReLU,
    Shape,
    Task,
    named_weight_shapes,
    place,
)

Array = npt.NDArray[Any]

#: The zoo's model names.
NAMES: tuple[str, ...] = ("logreg", "mlp", "cnn1d", "cnn2d")


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model configured for one input shape and task.

    Attributes:
        name: zoo name.
        input_shape: per-example input shape (no batch dimension).
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.
        layers: the layer stack, ending with the output dense layer.
    """

    name: str
    input_shape: Shape
    classes: int
    layers: tuple[Layer, ...]

    @property
    def task(self) -> Task:
        """The learning task implied by ``classes``."""
        return task_of(self.classes)

    @property
    def outputs(self) -> int:
        """Width of the last layer: 1 for regression and binary, K for multiclass."""
        return output_units(self.classes)

    def weight_shapes(self) -> dict[str, Shape]:
        """Weight names and shapes, in model order."""
        return named_weight_shapes(self.layers, self.input_shape)


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


def _body(name: str) -> tuple[Layer, ...]:
    bodies: dict[str, tuple[Layer, ...]] = {
        "logreg": (Flatten(),),
        "mlp": (Flatten(), Dense(32), ReLU(), Dense(16), ReLU()),
        "cnn1d": (
            ChannelsLast(),
            Conv1D(16, 5), ReLU(), AvgPool1D(2),
            Conv1D(16, 3), ReLU(), AvgPool1D(2),
            Flatten(),
        ),
        "cnn2d": (
            AddChannel(),
            Conv2D(8, 3), ReLU(), AvgPool2D(2),
            Conv2D(16, 3), ReLU(), AvgPool2D(2),
            Flatten(),
        ),
    }  # fmt: skip
    if name not in bodies:
        raise ArchitectureError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    return bodies[name]


def build(name: str, input_shape: Sequence[int], classes: int) -> ModelSpec:
    """Configure zoo model ``name`` for an input shape and number of classes.

    Args:
        name: one of :data:`NAMES`.
        input_shape: per-example shape: ``(features,)`` for logreg and mlp (any
            shape is flattened), ``(channels, time)`` for cnn1d, ``(height, width)``
            for cnn2d.
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.

    Raises:
        ArchitectureError: unknown name, bad classes, or an input shape of the
            wrong rank or too small for the model.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ArchitectureError(f"input shape must be non-empty and positive, got {shape}")
    layers = (*_body(name), Dense(output_units(classes)))
    try:
        place(layers, shape)  # validates ranks and sizes now, not at export time
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
    """Glorot-uniform kernels and zero biases, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    weights: dict[str, Array] = {}
    for name, shape in spec.weight_shapes().items():
        if name.endswith("_bias"):
            weights[name] = np.zeros(shape, np.float32)
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
        weights[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
    return weights
