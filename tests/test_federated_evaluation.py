"""Federated evaluation with real processes: each site scores the round's base model on its
own test file and sends only counts; the aggregator's sum equals the pooled scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from client_kit import linear_data
from sklearn.metrics import accuracy_score, roc_auc_score

from edge_client.model import TrainableModel
from edge_client.normalise import NormStats, normalise
from edge_client.state import NORMALISATION_FILE
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
SITES = 3


def test_the_summed_counts_give_the_pooled_accuracy_and_auc_of_the_same_predictions(
        broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(logreg_file)
    common = ["--broker", broker.url, "--federation", namespace]
    state = tmp_path / "agg"
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            *common, "--model", str(model), "--state-dir", str(state), "--rounds", "1",
            "--min-clients", str(SITES), "--round-timeout", "60"])
        for i in range(SITES):
            x, y = linear_data(80 + 40 * i, seed=i)
            np.savez(tmp_path / f"train-{i}.npz", x=x, y=y)
            tx, ty = linear_data(50 + 25 * i, seed=100 + i)
            np.savez(tmp_path / f"test-{i}.npz", x=tx, y=ty)
            fleet.start(f"site-{i}", "edge_client", [
                *common, "--client-id", f"site-{i}", "--data", str(tmp_path / f"train-{i}.npz"),
                "--eval-data", str(tmp_path / f"test-{i}.npz"),
                "--state-dir", str(tmp_path / f"s{i}")])
        assert agg.proc.wait(timeout=120) == 0, agg.tail(30)
    (line,) = [json.loads(r) for r in (state / "history.jsonl").read_text().splitlines()]
    evaluation = line["evaluation"]
    assert evaluation["of_version"] == 0 and evaluation["sites"] == SITES
    # the same predictions, pooled: version 0 on each site's test file, scaled as it trains
    initial = TrainableModel(logreg_file)
    p, labels = [], []
    for i in range(SITES):
        stats = NormStats.from_json((tmp_path / f"s{i}" / NORMALISATION_FILE).read_text())
        with np.load(tmp_path / f"test-{i}.npz") as z:
            p.append(initial.predict(normalise(z["x"], stats))[:, -1])
            labels.append(z["y"])
    pooled_p, pooled_y = np.concatenate(p), np.concatenate(labels)
    assert evaluation["n"] == len(pooled_y) == 50 + 75 + 100
    assert evaluation["accuracy"] == pytest.approx(
        accuracy_score(pooled_y, pooled_p >= 0.5), abs=1e-12)
    assert abs(evaluation["roc_auc"] - roc_auc_score(pooled_y, pooled_p)) <= 0.01
