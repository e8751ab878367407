"""Evaluation for the demo and the results table: global models, pooled and local baselines.

Everything runs through :class:`edge_client.model.TrainableModel`, i.e. the same
TFLite ``train``/``evaluate`` signatures the devices use, so a baseline differs
from the federation only in where the data sits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.model import TrainableModel
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


def train_alone(model_file: bytes, x: Array, y: Array, *, epochs: int, lr: float | None,
                seed: int) -> dict[str, Array]:
    """Trains the model's initial weights on one data set (pooled or one client's)."""
    model = TrainableModel(model_file)
    model.fit(x, y.astype(np.float32), epochs=epochs, lr=lr, rng=np.random.default_rng(seed))
    return model.get_weights()


def local_only(model_file: bytes, parts: list[tuple[Array, Array]], test: tuple[Array, Array],
               *, epochs: int, lr: float | None, seed: int) -> list[float]:
    """Accuracy on the pooled test set of a model trained on each client's data alone."""
    accs = []
    for i, (x, y) in enumerate(parts):
        w = train_alone(model_file, x, y, epochs=epochs, lr=lr, seed=seed + i)
        accs.append(evaluate(model_file, w, *test)[1])
    return accs
