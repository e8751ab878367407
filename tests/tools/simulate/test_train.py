"""``fedge simulate --train`` end to end: devices that really train with the TFLite runtime,
in worker processes, against the real aggregator over a real Mosquitto."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aggregator.history import read_history
from edge_client.training import LocalSplit
from tools.simulate.shards import fleet_data

pytestmark = pytest.mark.slow  # real processes and real training: seconds

ROOT = Path(__file__).resolve().parents[3]


def _simulate(out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools", "simulate", "--out", str(out),
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted((out / "devices").glob("events-*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.broker
def test_trained_devices_improve_the_global_model_on_held_out_data(tmp_path: Path) -> None:
    res = _simulate(tmp_path, "--train", "--dataset", "wearable-synthetic", "--devices", "50",
                    "--workers", "2", "--rounds", "2", "--round-timeout", "30",
                    "--epochs", "2", "--lr", "0.05")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    history = read_history(tmp_path / "aggregator")
    assert [h["round"] for h in history] == [1, 2]
    for h, row in zip(history, result["rounds"], strict=True):
        assert h["outcome"] == row["outcome"] == "aggregated"
        assert len(h["participants"]) == row["sent"] == row["selected"] == 50
    # every accepted update is a real training run, one per device and round
    assert result["train"]["runtimes"] == ["tflite_runtime"]
    assert sum(w["device_rounds"] for w in result["train"]["workers"]) == 100
    sent = [e for e in _events(tmp_path) if e["event"] == "sent"]
    assert len(sent) == 100 and len({(e["client"], e["round"]) for e in sent}) == 100
    # the device's own hold-out loss before and after its local training differ
    assert all(e["metrics"]["eval_loss"] != e["metrics"]["global_loss"] for e in sent)
    # each device trained on its own shard, less the local hold-out, as fedge-client does
    shards = fleet_data("wearable-synthetic", 50, 0).shards
    trained = sum(len(LocalSplit.of(x, y, seed=i).x_train) for i, (x, y) in enumerate(shards))
    assert [h["samples"] for h in history] == [trained, trained]
    # the federation learned: the final global model beats the initial one on the test set
    initial, final = result["initial"], result["final"]
    assert math.isfinite(final["loss"]) and final["loss"] < initial["loss"]
    assert final["accuracy"] > initial["accuracy"]
    assert "test accuracy" in res.stdout


@pytest.mark.parametrize(("flags", "message"), [
    (["--dataset", "breast-cancer"], "--dataset needs --train"),
    (["--train", "--dataset", "nope"], "--dataset 'nope': unknown"),
    (["--train", "--dataset", "breast-cancer", "--devices", "1000"],
     "cannot give 1000 clients a sample each"),
    (["--train", "--epochs", "0"], "--epochs must be at least 1"),
    (["--train", "--lr", "-1"], "--lr must be positive"),
    (["--devices", "1000", "--workers", "2"], "at most 300 fit in one (give --workers 4"),
    (["--devices", "4000"], "--workers 8: 500 devices per worker"),
])
def test_bad_training_flags_are_named(tmp_path: Path, flags: list[str], message: str) -> None:
    res = _simulate(tmp_path, *flags)
    assert res.returncode != 0 and message in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "aggregator").exists()
