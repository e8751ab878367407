"""Evaluation for the demo and the results table: global models, pooled and local baselines.

Everything runs through :class:`edge_client.model.TrainableModel`, i.e. the same
TFLite ``train``/``evaluate`` signatures the devices use, so a baseline differs
from the federation only in where the data sits. The global model is scored as the parties
would score it (:func:`as_parties_see_it`): each party standardises inputs with its own
statistics, so the pooled test set is scored once per party's scaling and averaged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.model import TrainableModel
from edge_client.scoring import binary_scores
from tools.evaluate.scaling import Scaling
from tools.state import checkpoint_weights

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]


def weights_of_checkpoint(state_dir: Path, version: int) -> dict[str, Array]:
    """The global weights of ``version`` from the aggregator's checkpoints."""
    return checkpoint_weights(state_dir, version)


def evaluate(model_file: bytes, weights: dict[str, Array], x: Array, y: Array
             ) -> tuple[float, float]:
    """(loss, accuracy) of ``weights`` on ``(x, y)``."""
    model = TrainableModel(model_file)
    model.set_weights(weights)
    return model.evaluate(x, y.astype(np.float32))


def scores(model_file: bytes, weights: dict[str, Array], x: Array, y: Array
           ) -> dict[str, float | None]:
    """Loss, accuracy and, for a binary task, ROC AUC of ``weights`` on ``(x, y)``."""
    model = TrainableModel(model_file)
    model.set_weights(weights)
    loss, accuracy = model.evaluate(x, y.astype(np.float32))
    auc = None
    if model.metadata.task == "binary":
        auc = binary_scores(y, model.predict(x)[:, 1])["roc_auc"]
    return {"loss": loss, "accuracy": accuracy, "roc_auc": auc}


def as_parties_see_it(model_file: bytes, weights: dict[str, Array], x: Array, y: Array,
                      scalings: list[Scaling]) -> dict[str, Any]:
    """:func:`scores` of ``(x, y)`` scaled with each party's scaling, averaged over parties;
    ``accuracy_range`` is the lowest and highest party's accuracy."""
    runs = [scores(model_file, weights, scaling(x), y) for scaling in scalings]
    out: dict[str, Any] = {}
    for key in ("loss", "accuracy", "roc_auc"):
        values = [r[key] for r in runs]
        out[key] = None if None in values else float(np.mean([v for v in values
                                                               if v is not None]))
    accuracies = [float(r["accuracy"] or 0.0) for r in runs]
    out["accuracy_range"] = [min(accuracies), max(accuracies)]
    return out


def train_alone(model_file: bytes, x: Array, y: Array, *, epochs: int, lr: float | None,
                seed: int) -> dict[str, Array]:
    """Trains the model's initial weights on one data set (pooled or one client's)."""
    model = TrainableModel(model_file)
    model.fit(x, y.astype(np.float32), epochs=epochs, lr=lr, rng=np.random.default_rng(seed))
    return model.get_weights()


def local_only(model_file: bytes, parts: list[tuple[Array, Array, Scaling]],
               test: tuple[Array, Array], *, epochs: int, lr: float | None,
               seed: int) -> list[float]:
    """Accuracy on the pooled test set of a model trained on each client's raw data alone,
    both scaled with that client's scaling."""
    accs = []
    for i, (x, y, scaling) in enumerate(parts):
        w = train_alone(model_file, scaling(x), y, epochs=epochs, lr=lr, seed=seed + i)
        accs.append(evaluate(model_file, w, scaling(test[0]), test[1])[1])
    return accs
