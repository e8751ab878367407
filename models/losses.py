"""Per-example losses written by hand, so their gradients are TFLite builtins.

The fused ``SparseSoftmaxCrossEntropyWithLogits`` and friends need Flex. Here
cross-entropies carry explicit gradients (``softmax - one_hot`` and
``sigmoid - y``); the forward passes are the numerically stable formulas.

Labels ``y`` are float32 of shape ``(batch,)`` for every task: a class index
(multiclass), 0.0/1.0 (binary) or the target value (regression).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from models.architecture import Task
from models.layers import Tensor


def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``(batch, K)`` logits against float class indices ``(batch,)``."""
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), logits.shape[-1], dtype=logits.dtype)
    return _softmax_cross_entropy(logits, one_hot)


@tf.custom_gradient  # type: ignore[untyped-decorator]
def _softmax_cross_entropy(
    logits: Tensor, one_hot: Tensor
) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, Tensor]]]:
    shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    log_softmax = shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1, keepdims=True))

    def grad(upstream: Tensor) -> tuple[Tensor, Tensor]:
        scale = tf.expand_dims(upstream, -1)
        return scale * (tf.exp(log_softmax) - one_hot), tf.zeros_like(one_hot)

    return -tf.reduce_sum(one_hot * log_softmax, axis=-1), grad


def sigmoid_binary_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of ``(batch, 1)`` logits against 0/1 labels ``(batch,)``."""
    return _sigmoid_cross_entropy(tf.reshape(logits, [-1]), labels)


@tf.custom_gradient  # type: ignore[untyped-decorator]
def _sigmoid_cross_entropy(
    logits: Tensor, labels: Tensor
) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, Tensor]]]:
    # max(z, 0) - z·y + log(1 + e^-|z|): never overflows.
    loss = tf.maximum(logits, 0.0) - logits * labels
    loss += tf.math.log(1.0 + tf.exp(-tf.abs(logits)))

    def grad(upstream: Tensor) -> tuple[Tensor, Tensor]:
        return upstream * (tf.sigmoid(logits) - labels), tf.zeros_like(labels)

    return loss, grad


def mean_squared_error(predictions: Tensor, targets: Tensor) -> Tensor:
    """Squared error of ``(batch, 1)`` predictions against targets ``(batch,)``."""
    return tf.square(tf.reshape(predictions, [-1]) - targets)


def task_loss(task: Task, outputs: Tensor, labels: Tensor) -> Tensor:
    """Per-example loss of the model ``outputs`` for ``task``."""
    if task == "multiclass":
        return softmax_cross_entropy(outputs, labels)
    if task == "binary":
        return sigmoid_binary_cross_entropy(outputs, labels)
    return mean_squared_error(outputs, labels)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the examples whose ``mask`` is 1 (0 if none)."""
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def class_weighted(values: Tensor, labels: Tensor, class_weights: Sequence[float]) -> Tensor:
    """``values`` (per example) times the weight of each example's class.

    As Keras's ``class_weight``: the weighted loss is then ``Σ mask·w[y]·loss / Σ mask``
    (:func:`masked_mean`), so weights that average 1 over the data keep the loss's scale.
    A GATHER of a constant: a builtin op, no gradient flows into the labels.
    """
    table = tf.constant([float(w) for w in class_weights], tf.float32)
    return values * tf.gather(table, tf.cast(labels, tf.int32))


def proximal_term(weights: Sequence[Tensor], anchors: Sequence[Tensor], mu: Tensor) -> Tensor:
    """FedProx term ``mu / 2 · Σ ||w − w_anchor||²``."""
    pairs = zip(weights, anchors, strict=True)
    return 0.5 * mu * tf.add_n([tf.reduce_sum(tf.square(w - a)) for w, a in pairs])
