"""Test kit: a finished run to evaluate. A model trained on standardised data, its aggregator
state dir, a device's state dir with the statistics it standardised with, and held-out raw
data in a CSV (fixtures in tests/tools/evaluate/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from state_kit import write_state_dir

from edge_client.data import Task, load_data
from edge_client.device import keep_norm_stats
from edge_client.model import TrainableModel
from edge_client.normalise import NormStats, compute_norm_stats, normalise
from edge_client.state import StateDir

Array = npt.NDArray[Any]
#: raw features far from standardised, as measurements are (heart rate, steps, ...)
MEANS = np.array([60.0, 4000.0, 7.0, 0.5, 120.0])
STDS = np.array([15.0, 1500.0, 1.2, 0.2, 18.0])
NAMES = ("hr", "steps", "sleep", "ratio", "bp")


@dataclass(frozen=True)
class Run:
    """One finished run and the files a user evaluates it with."""

    task: str
    model_file: bytes
    state: Path  # the aggregator's state dir (versions 0 = initial, 1 = trained)
    client: Path  # a device's state dir, with normalisation.json
    csv: Path  # held-out raw data, label column "outcome"
    x: Array  # the held-out raw features
    y: Array
    stats: NormStats
    weights: dict[str, Array]  # the final weights

    def probabilities(self, weights: dict[str, Array] | None = None) -> Array:
        """The model's outputs on the held-out data, standardised as the device did."""
        model = TrainableModel(self.model_file)
        model.set_weights(self.weights if weights is None else weights)
        return model.predict(normalise(self.x, self.stats))


def _data(task: str, features: int, n: int, rng: np.random.Generator) -> tuple[Array, Array]:
    z = rng.normal(size=(n, features))
    x = z * STDS[:features] + MEANS[:features]
    if task == "binary":
        y = (z @ np.linspace(1.0, -1.0, features) + 0.7 * rng.normal(size=n) > 0)
    elif task == "multiclass":
        y = np.argmax(z[:, :3] + 0.5 * rng.normal(size=(n, 3)), axis=1)
    else:
        y = z @ np.linspace(-1.0, 1.0, features) + 0.1 * rng.normal(size=n)
    return x, y.astype(np.float64 if task == "regression" else np.int64)


def _csv(path: Path, x: Array, y: Array, task: str) -> Path:
    header = ",".join([*NAMES[: x.shape[1]], "outcome"])
    label = (lambda v: f"{v:.6f}") if task == "regression" else (lambda v: str(int(v)))
    rows = [",".join([*(f"{v:.6f}" for v in row), label(t)]) for row, t in zip(x, y, strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def make_run(root: Path, model_file: bytes, task: str, seed: int = 0) -> Run:
    """Trains ``model_file`` on standardised data and writes what the run leaves behind."""
    rng = np.random.default_rng(seed)
    model = TrainableModel(model_file)
    features = model.metadata.input_shape[0]
    x_train, y_train = _data(task, features, 300, rng)
    x_test, y_test = _data(task, features, 157, rng)  # not a multiple of the batch size
    stats = compute_norm_stats(x_train, features=NAMES[:features])
    initial = model.get_weights()
    model.fit(normalise(x_train, stats), y_train.astype(np.float32), epochs=15, lr=0.05,
              rng=rng)
    weights = model.get_weights()
    state = write_state_dir(root / "aggregator", model_file, {0: initial, 1: weights})
    client = StateDir(root / "device-state")
    keep_norm_stats(client, stats)
    csv = _csv(root / "test.csv", x_test.astype(np.float32), y_test, task)
    kind: Task = "regression" if task == "regression" else "classification"
    held_out = load_data(csv, label_column="outcome", task=kind)  # as the CSV holds them
    return Run(task, model_file, state, client.root, csv, held_out.x, held_out.y, stats,
               weights)
