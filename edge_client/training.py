"""One round of local training: from the global weights to a quantized update.

Pure apart from the model it is handed (anything with the :class:`Trainer`
methods, e.g. :class:`edge_client.model.TrainableModel`): no network, no files.
Only the delta and aggregate metrics leave this module, never a sample.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2
import numpy as np
import numpy.typing as npt

from edge_client.model_file import ModelMetadata
from edge_client.protocol import Round, Update
from edge_client.quantize import quantize_update
from edge_client.score_counts import (
    ConfusionCounts,
    ThresholdCounts,
    confusion_counts,
    threshold_counts,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT = 5


class Trainer(Protocol):
    """What the client needs of a trainable model."""

    def fit(self, x: Array, y: Array, *, epochs: int = 1, lr: float | None = None,
            mu: float = 0.0, rng: np.random.Generator) -> list[float]: ...
    def evaluate(self, x: Array, y: Array) -> tuple[float, float]: ...
    def get_weights(self) -> dict[str, Array]: ...
    def set_weights(self, weights: Mapping[str, Array]) -> None: ...
    def check_data(self, x: Array, y: Array | None = None) -> None: ...
    def predict(self, x: Array) -> Array: ...
    @property
    def metadata(self) -> ModelMetadata: ...


@dataclass(frozen=True)
class LocalSplit:
    """The device's samples split into a training part and a local hold-out."""

    x_train: Array
    y_train: Array
    x_eval: Array
    y_eval: Array

    @classmethod
    def of(cls, x: Array, y: Array, seed: int,
           holdout: float = HOLDOUT_FRACTION) -> LocalSplit:
        """Holds out ``holdout`` (default 20 %) for local evaluation; 0 trains on every
        sample and evaluates on them too (as when the data is too small to split)."""
        n = len(x)
        n_eval = int(n * holdout)
        if n_eval < MIN_HOLDOUT or n - n_eval < MIN_HOLDOUT:
            return cls(x, y, x, y)
        order = np.random.default_rng(seed).permutation(n)
        ev, tr = order[:n_eval], order[n_eval:]
        return cls(x[tr], y[tr], x[ev], y[ev])


def single_class(y: Array) -> int | None:
    """The one class of class labels ``y`` that hold a single class; None for two or more
    classes, no labels or regression targets (float)."""
    if len(y) == 0 or not np.issubdtype(np.asarray(y).dtype, np.integer):
        return None
    classes = np.unique(y)
    return int(classes[0]) if len(classes) == 1 else None


@dataclass(frozen=True)
class TrainedUpdate:
    """The result of :func:`train_round`: the wire update and the new residual."""

    update: Update
    residual: dict[str, npt.NDArray[np.float32]]


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else -1.0


def evaluation_counts(model: Trainer, task: str, x: Array, y: Array,
                      weights: Mapping[str, Array]) -> bytes:
    """The counts a site reports on its test data for the model with ``weights``
    (:mod:`edge_client.score_counts`: sums the aggregator adds exactly), as canonical CBOR;
    empty for regression (no exact-sum scores yet)."""
    if task == "regression" or len(x) == 0:
        return b""
    model.set_weights(weights)
    probs = np.asarray(model.predict(x), np.float64)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if task == "binary":
        p = probs[:, -1] if probs.ndim == 2 else probs.reshape(-1)
        counts: ThresholdCounts | ConfusionCounts = threshold_counts(labels, np.clip(p, 0, 1))
    else:
        probs = probs / probs.sum(axis=1, keepdims=True)
        counts = confusion_counts(labels, probs)
    return bytes(cbor2.dumps(counts.to_dict(), canonical=True))


def train_round(model: Trainer, data: LocalSplit, announcement: Round, *, client_id: str,
                residual: Mapping[str, npt.NDArray[np.float32]], rng: np.random.Generator,
                nonce: bytes | None = None,
                test: tuple[Array, Array] | None = None) -> TrainedUpdate:
    """Evaluates the global model, trains E epochs, and quantizes the delta with error feedback.

    The model must hold the round's base (global) weights when called; it holds the
    trained weights afterwards.

    Metrics sent (aggregates over the local data only): ``global_loss`` and
    ``global_accuracy`` (the received global model on the local hold-out), ``train_loss``
    (last epoch), ``eval_loss`` and ``eval_accuracy`` (after training, hold-out), and
    ``num_eval``. Accuracy is -1 for regression. With ``test`` (``--eval-data``), the
    update also carries the received global model's evaluation counts on it
    (:func:`evaluation_counts`).
    """
    hp = announcement.hyperparameters
    base = model.get_weights()
    g_loss, g_acc = model.evaluate(data.x_eval, data.y_eval)
    evaluation = b""
    if test is not None:  # the global model on this site's test file, before training
        evaluation = evaluation_counts(model, model.metadata.task, test[0], test[1], base)
        model.set_weights(base)
    losses = model.fit(data.x_train, data.y_train, epochs=hp.epochs, lr=hp.learning_rate,
                       mu=hp.mu, rng=rng)
    e_loss, e_acc = model.evaluate(data.x_eval, data.y_eval)
    trained = model.get_weights()
    delta = {name: (trained[name].astype(np.float32) - base[name].astype(np.float32))
             for name in base}
    tensors, new_residual = quantize_update(delta, announcement.codec, residual or None, rng=rng)
    metrics = {
        "global_loss": _finite(g_loss), "global_accuracy": _finite(g_acc),
        "train_loss": _finite(losses[-1]), "eval_loss": _finite(e_loss),
        "eval_accuracy": _finite(e_acc), "num_eval": float(len(data.x_eval)),
    }
    update = Update(
        federation=announcement.federation, round_id=announcement.round_id,
        client_id=client_id, base_version=announcement.weights_version,
        model_sha256=announcement.model_sha256, nonce=nonce or os.urandom(16),
        num_samples=len(data.x_train), metrics=metrics, codec=announcement.codec,
        tensors=tensors, run_id=announcement.run_id, evaluation=evaluation,
    )
    log.info("round %d: trained %d samples x %d epochs, loss %.4f -> %.4f, hold-out acc %.3f",
             announcement.round_id, len(data.x_train), hp.epochs, g_loss, e_loss, e_acc)
    return TrainedUpdate(update, dict(new_residual))
