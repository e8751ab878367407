"""The seed article's own Keras model, exported by ``fedge export --keras``, trained by a real
aggregator and two real clients (tflite) over Mosquitto, starting from the model's own weights."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from edge_client.protocol import Weights
from edge_client.quantize import dequantize_update
from tools import export as export_cli
from tools.datasets.gaussian import party_samples
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
SEED_MODEL = ROOT / "examples" / "seed.keras"
pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _checkpoint(state: Path, version: int) -> dict[str, np.ndarray]:
    blob = (state / "checkpoints" / f"v{version:08d}.bin").read_bytes()
    return dequantize_update(Weights.decode(blob).tensors)


def test_the_seed_keras_model_trains_in_a_federation(
    broker: MosquittoBroker, namespace: str, tmp_path: Path
) -> None:
    model = tmp_path / "seed.tflite"
    assert export_cli.main(["--keras", str(SEED_MODEL), "--batch-size", "32",
                            "--out", str(model)]) == 0
    common = ["--broker", broker.url, "--federation", namespace]
    state = tmp_path / "agg"
    rng = np.random.default_rng(0)
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            *common, "--model", str(model), "--state-dir", str(state), "--rounds", "3",
            "--min-clients", "2", "--min-available", "2", "--epochs", "2", "--lr", "0.1"])
        for party in (0, 1):
            x, y = party_samples(rng, party, 200)
            np.savez(tmp_path / f"p{party}.npz", x=x, y=y)
            fleet.start(f"client-{party}", "edge_client", [
                *common, "--client-id", f"party-{party}", "--data", str(tmp_path / f"p{party}.npz"),
                "--state-dir", str(tmp_path / f"s{party}"), "--max-rounds", "3",
                "--seed", str(party)])
        assert agg.proc.wait(timeout=120) == 0, agg.tail(40)
        for child in fleet.children:
            assert child.proc.wait(timeout=30) == 0, child.tail(30)
    rows = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["aggregated"] * 3
    assert all(sorted(r["participants"]) == ["party-0", "party-1"] for r in rows)
    kernel, bias = keras.saving.load_model(SEED_MODEL).get_weights()
    initial, final = _checkpoint(state, 0), _checkpoint(state, 3)
    np.testing.assert_array_equal(initial["dense0_kernel"], kernel)  # the model's own weights
    np.testing.assert_array_equal(initial["dense0_bias"], bias)
    assert not np.allclose(final["dense0_kernel"], kernel)  # and the rounds moved them
