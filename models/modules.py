"""The TensorFlow modules that become .tflite files: trainable and inference-only.

Every signature has a fixed batch size. Inputs and outputs (``B`` = batch size):

- ``train(x, y, mask, lr, mu) -> {"loss"}``: one optimizer step on the masked
  batch; ``loss`` is the masked mean task loss *before* the step, without the
  proximal term. ``mu`` > 0 adds FedProx ``mu/2·||w − anchor||²``. With class
  weights (``--class-weights``) the loss is weighted: ``Σ mask·w[y]·loss / Σ mask``.
- ``infer(x) -> {"output"}``: ``(B, classes)`` probabilities for classification
  (binary: ``[P(0), P(1)]``), ``(B,)`` predictions for regression.
- ``evaluate(x, y, mask) -> {"loss", "correct"}``: masked mean loss (never
  class-weighted, so evaluations compare across models) and the number of
  correctly classified masked examples (always 0 for regression).
- ``train_dp(x, y, mask, lr, mu, clip, denominator, noise_<name>...) -> {"loss",
  "clipped"}`` (exported with ``dp_sgd=True``): one DP-SGD step (Abadi et al., 2016).
  Each masked example's gradient is computed on its own (the batch unrolled: every op
  stays a builtin), clipped to global L2 norm ``clip``; their sum plus the device's
  Gaussian ``noise_<name>`` (one input per weight, std σ·clip, drawn by the device) is
  divided by ``denominator`` (the expected batch size of Poisson sampling) and applied by
  the optimizer, with the FedProx gradient added (data-independent). ``clipped`` counts
  the examples whose gradient was scaled down.
- ``get_weights() -> {name: weight}``.
- ``set_weights(**weights) -> {"ok"}``: assigns the weights, makes them the
  FedProx anchor and resets the optimizer state (momentum, Adam moments and
  step), since a new global model starts a new local optimization.

``x``: float32 ``(B, *input_shape)``; ``y``: float32 ``(B,)`` (class index,
0/1, or target); ``mask``: float32 ``(B,)`` of 0/1; ``lr``, ``mu``: float32 scalars.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy.typing as npt
import tensorflow as tf

from models.architecture import Task, is_state
from models.layers import Pass, Tensor, forward, regularisation, run
from models.losses import class_weighted, masked_mean, proximal_term, task_loss
from models.optimizers import make_optimizer
from models.zoo import ModelSpec

Array = npt.NDArray[Any]


def graph(*input_signature: Any) -> Callable[[Callable[..., dict[str, Tensor]]], Any]:
    """``tf.function`` with a fixed input signature (typed, unlike TensorFlow's)."""
    decorator: Callable[[Callable[..., dict[str, Tensor]]], Any] = tf.function(
        input_signature=list(input_signature)
    )
    return decorator


def head(task: Task, logits: Tensor) -> Tensor:
    """Turn logits into what ``infer`` returns for ``task``."""
    if task == "multiclass":
        return tf.nn.softmax(logits, axis=-1)
    if task == "binary":
        positive = tf.sigmoid(logits)
        return tf.concat([1.0 - positive, positive], axis=-1)
    return tf.reshape(logits, [-1])


def count_correct(task: Task, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Number of masked examples whose predicted class equals the label."""
    if task == "regression":
        return tf.constant(0.0)
    if task == "binary":
        predicted = tf.cast(tf.reshape(logits, [-1]) > 0.0, tf.float32)
    else:
        predicted = tf.cast(tf.argmax(logits, axis=-1), tf.float32)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32) * mask)


class TrainableModule(tf.Module):  # type: ignore[misc]
    """Weights, FedProx anchors and optimizer state of one model, with signatures.

    The travelling weights (``get_weights``/``set_weights``) are the trainable ones,
    which the optimizer moves, and batch-norm moving statistics, which ``train``
    updates from each batch. Frozen layers' weights are constants of the graph.
    """

    def __init__(
        self,
        spec: ModelSpec,
        batch_size: int,
        initial: Mapping[str, Array],
        optimizer: str,
        hyperparameters: Mapping[str, float],
        constants: Mapping[str, Array] | None = None,
        class_weights: Sequence[float] | None = None,
        dp_sgd: bool = False,
    ) -> None:
        """Create the variables.

        Args:
            spec: the configured model.
            batch_size: fixed batch size of every signature.
            initial: initial travelling weights by name, in model order.
            optimizer: "sgd" or "adam".
            hyperparameters: optimizer hyperparameters (not the learning rate).
            constants: the frozen layers' weights by name.
            class_weights: one loss weight per class for ``train``, or None (all 1).
            dp_sgd: also export ``train_dp`` (record-level DP-SGD).
        """
        super().__init__(name=spec.name.replace(":", "_"))
        self.spec, self.batch_size, self.dp_sgd = spec, batch_size, dp_sgd
        self.names = list(initial)
        self.variables_by_name = {n: tf.Variable(w, name=n) for n, w in initial.items()}
        self.trainable_names = [n for n in self.names if not is_state(n)]
        self.params = [self.variables_by_name[n] for n in self.trainable_names]
        self.anchors = [
            tf.Variable(initial[n], trainable=False, name=f"{n}_anchor")
            for n in self.trainable_names
        ]
        self.constants = {n: tf.constant(w, tf.float32) for n, w in (constants or {}).items()}
        self.optimizer = make_optimizer(optimizer, self.params, **hyperparameters)
        self.class_weights = None if class_weights is None else tuple(class_weights)

    def _train_loss(self, x: Tensor, y: Tensor, mask: Tensor, step: Pass) -> Tensor:
        per_example = task_loss(self.spec.task, run(self.spec, self._weights(), x, step), y)
        if self.class_weights is not None:
            per_example = class_weighted(per_example, y, self.class_weights)
        return masked_mean(per_example, mask)

    def _x_spec(self) -> Any:
        return tf.TensorSpec([self.batch_size, *self.spec.input_shape], tf.float32, name="x")

    def _vector_spec(self, name: str) -> Any:
        return tf.TensorSpec([self.batch_size], tf.float32, name=name)

    def _weights(self) -> dict[str, Tensor]:
        return {**self.constants, **self.variables_by_name}

    def _logits(self, x: Tensor) -> Tensor:
        return forward(self.spec, self._weights(), x)

    def signatures(self) -> dict[str, Any]:
        """Return the concrete functions to export, by signature name."""
        task = self.spec.task
        scalar = tf.TensorSpec([], tf.float32)
        batch_specs = [self._x_spec(), self._vector_spec("y"), self._vector_spec("mask")]

        @graph(*batch_specs, scalar, scalar)
        def train(x: Tensor, y: Tensor, mask: Tensor, lr: Tensor, mu: Tensor) -> dict[str, Tensor]:
            step = Pass(training=True, mask=mask)
            with tf.GradientTape() as tape:
                loss = self._train_loss(x, y, mask, step)
                objective = loss + proximal_term(self.params, self.anchors, mu)
                objective += regularisation(self.spec, self._weights())
            grads = tape.gradient(objective, self.params)
            self.optimizer.apply(self.params, grads, lr)
            for name, value in step.updates.items():
                self.variables_by_name[name].assign(value)
            return {"loss": loss}

        @graph(self._x_spec())
        def infer(x: Tensor) -> dict[str, Tensor]:
            return {"output": head(task, self._logits(x))}

        @graph(*batch_specs)
        def evaluate(x: Tensor, y: Tensor, mask: Tensor) -> dict[str, Tensor]:
            logits = self._logits(x)
            loss = masked_mean(task_loss(task, logits, y), mask)
            return {"loss": loss, "correct": count_correct(task, logits, y, mask)}

        @graph()
        def get_weights() -> dict[str, Tensor]:
            return {n: tf.identity(v) for n, v in self.variables_by_name.items()}

        weight_specs = {
            n: tf.TensorSpec(v.shape, tf.float32, name=n)
            for n, v in self.variables_by_name.items()
        }

        @graph(weight_specs)
        def set_weights(weights: dict[str, Tensor]) -> dict[str, Tensor]:
            for name, var in self.variables_by_name.items():
                var.assign(weights[name])
            for name, anchor in zip(self.trainable_names, self.anchors, strict=True):
                anchor.assign(weights[name])
            self.optimizer.reset()
            return {"ok": tf.constant(1.0)}

        functions = [train, infer, evaluate, get_weights, set_weights]
        if self.dp_sgd:
            functions.append(self._train_dp(weight_specs))
        return {f.__name__: f.get_concrete_function() for f in functions}

    def _train_dp(self, weight_specs: Mapping[str, Any]) -> Any:
        """The ``train_dp`` signature (see the module docstring)."""
        task, scalar = self.spec.task, tf.TensorSpec([], tf.float32)
        noise_specs = {f"noise_{n}": tf.TensorSpec(s.shape, tf.float32, name=f"noise_{n}")
                       for n, s in weight_specs.items()}

        @graph(self._x_spec(), self._vector_spec("y"), self._vector_spec("mask"), scalar,
               scalar, scalar, scalar, noise_specs)
        def train_dp(x: Tensor, y: Tensor, mask: Tensor, lr: Tensor, mu: Tensor, clip: Tensor,
                     denominator: Tensor, noise: dict[str, Tensor]) -> dict[str, Tensor]:
            total = [noise[f"noise_{n}"] for n in self.trainable_names]
            losses, clipped = [], tf.constant(0.0)
            for i in range(self.batch_size):  # unrolled: per-example gradients, builtins only
                with tf.GradientTape() as tape:
                    logits = run(self.spec, self._weights(), x[i:i + 1], Pass(training=True))
                    loss = task_loss(task, logits, y[i:i + 1])
                    if self.class_weights is not None:  # as train: Keras's class_weight
                        loss = class_weighted(loss, y[i:i + 1], self.class_weights)
                    loss = loss[0]
                grads = tape.gradient(loss, self.params)
                norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
                scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
                clipped += mask[i] * tf.cast(norm > clip, tf.float32)
                total = [t + (mask[i] * scale) * g for t, g in zip(total, grads, strict=True)]
                losses.append(loss)
            with tf.GradientTape() as tape:  # data-independent terms: FedProx and kernel L2
                prox = proximal_term(self.params, self.anchors, mu)
                prox += regularisation(self.spec, self._weights())
            prox_grads = tape.gradient(prox, self.params)
            step = [t / denominator + p for t, p in zip(total, prox_grads, strict=True)]
            self.optimizer.apply(self.params, step, lr)
            return {"loss": masked_mean(tf.stack(losses), mask), "clipped": clipped}

        return train_dp


class InferenceModule(tf.Module):  # type: ignore[misc]
    """A zoo model with frozen weights and only the ``infer`` signature."""

    def __init__(self, spec: ModelSpec, batch_size: int, weights: Mapping[str, Array]) -> None:
        """Hold ``weights`` (travelling and frozen) as constants for a fixed ``batch_size``."""
        super().__init__(name=f"{spec.name.replace(':', '_')}_inference")
        self.spec, self.batch_size = spec, batch_size
        self.weights = {n: tf.constant(w, tf.float32) for n, w in weights.items()}

    def signatures(self) -> dict[str, Any]:
        """Return the ``infer`` concrete function."""
        x_spec = tf.TensorSpec([self.batch_size, *self.spec.input_shape], tf.float32, name="x")

        @graph(x_spec)
        def infer(x: Tensor) -> dict[str, Tensor]:
            return {"output": head(self.spec.task, forward(self.spec, self.weights, x))}

        return {"infer": infer.get_concrete_function()}
