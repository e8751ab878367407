"""In-graph optimizers: the update is plain variable assignments inside ``train``.

Keras optimizers bring ops the TFLite builtins lack; these reproduce the Keras 3
update rules exactly (same formulas, same defaults), so a Keras optimizer is a
faithful reference in tests. The learning rate is a tensor fed at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.layers import Tensor

DEFAULT_LEARNING_RATE: dict[str, float] = {"sgd": 0.01, "adam": 0.001}


def _slots(variables: Sequence[Any], suffix: str) -> list[Any]:
    return [
        tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"{_base(v)}_{suffix}")
        for v in variables
    ]


def _base(variable: Any) -> str:
    return str(variable.name).split(":")[0]


class SGD(tf.Module):  # type: ignore[misc]
    """SGD with momentum: ``v ← momentum·v − lr·g``; ``w ← w + v`` (Keras rule)."""

    def __init__(self, variables: Sequence[Any], momentum: float = 0.9) -> None:
        """Create one velocity slot per variable.

        Args:
            variables: the trainable variables, in model order.
            momentum: momentum coefficient in ``[0, 1)``; 0 is plain SGD.
        """
        super().__init__(name="sgd")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocities = _slots(variables, "velocity")

    def hyperparameters(self) -> dict[str, float]:
        """Hyperparameters baked into the graph (the learning rate is an input)."""
        return {"momentum": self.momentum}

    def apply(self, variables: Sequence[Any], grads: Sequence[Tensor], lr: Tensor) -> None:
        """Update ``variables`` in place from their gradients."""
        for var, grad, velocity in zip(variables, grads, self.velocities, strict=True):
            velocity.assign(self.momentum * velocity - lr * grad)
            var.assign_add(velocity)

    def reset(self) -> None:
        """Zero the momentum."""
        for velocity in self.velocities:
            velocity.assign(tf.zeros_like(velocity))


class Adam(tf.Module):  # type: ignore[misc]
    """Adam with the Keras 3 update (bias correction folded into the step size)."""

    def __init__(
        self,
        variables: Sequence[Any],
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        """Create first- and second-moment slots and a step counter.

        Args:
            variables: the trainable variables, in model order.
            beta_1: decay of the first moment, in ``[0, 1)``.
            beta_2: decay of the second moment, in ``[0, 1)``.
            epsilon: added to the root of the second moment, > 0.
        """
        super().__init__(name="adam")
        if not (0.0 <= beta_1 < 1.0 and 0.0 <= beta_2 < 1.0 and epsilon > 0.0):
            raise ValueError(f"bad Adam hyperparameters: {beta_1=}, {beta_2=}, {epsilon=}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.step = tf.Variable(0.0, trainable=False, name="adam_step")
        self.moments = _slots(variables, "m")
        self.second_moments = _slots(variables, "v")

    def hyperparameters(self) -> dict[str, float]:
        """Hyperparameters baked into the graph (the learning rate is an input)."""
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def apply(self, variables: Sequence[Any], grads: Sequence[Tensor], lr: Tensor) -> None:
        """Update ``variables`` in place from their gradients."""
        step = self.step.assign_add(1.0)
        correction = tf.sqrt(1.0 - tf.pow(self.beta_2, step)) / (1.0 - tf.pow(self.beta_1, step))
        alpha = lr * correction
        slots = zip(variables, grads, self.moments, self.second_moments, strict=True)
        for var, grad, m, v in slots:
            m.assign_add((grad - m) * (1.0 - self.beta_1))
            v.assign_add((tf.square(grad) - v) * (1.0 - self.beta_2))
            var.assign_sub(alpha * m / (tf.sqrt(v) + self.epsilon))

    def reset(self) -> None:
        """Zero both moments and the step counter."""
        self.step.assign(0.0)
        for slot in (*self.moments, *self.second_moments):
            slot.assign(tf.zeros_like(slot))


Optimizer = SGD | Adam


def make_optimizer(name: str, variables: Sequence[Any], **hyperparameters: float) -> Optimizer:
    """Build optimizer ``name`` ("sgd" or "adam") over ``variables``.

    Raises:
        ValueError: unknown name or hyperparameter.
    """
    if name == "sgd":
        return SGD(variables, **hyperparameters)
    if name == "adam":
        return Adam(variables, **hyperparameters)
    raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adam'")
