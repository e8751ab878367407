"""The whole system: a real aggregator process and five real client processes over Mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from reliability.kit import start_client

from edge_client.protocol import Presence, Topics, Weights
from edge_client.quantize import dequantize_update
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.broker, pytest.mark.slow]
TIMEOUT = 4.0


def _ghost(broker: MosquittoBroker, ns: str) -> MqttTransport:
    """A device that says it is online and then never answers a round."""
    t = MqttTransport(BrokerConfig(url=broker.url, client_id="ghost")).start(wait=10)
    t.publish(Topics(ns).presence("ghost"), Presence(
        client_id="ghost", online=True, samples=1000, runtime="none", runtime_version="0",
        software_version="0", timestamp=time.time()).encode(), retain=True)
    return t


def test_five_clients_three_rounds_and_a_straggler_never_stalls_a_round(
    broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes
) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(logreg_file)
    ghost = _ghost(broker, namespace)
    common = ["--broker", broker.url, "--federation", namespace]
    state = tmp_path / "agg"
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            *common, "--model", str(model), "--state-dir", str(state), "--rounds", "3",
            "--min-clients", "5", "--min-available", "6", "--round-timeout", str(TIMEOUT),
            "--epochs", "2", "--lr", "0.1", "--codec", "int8"])
        for i in range(5):
            start_client(fleet, tmp_path, broker.url, namespace, f"clinic-{i}", seed=i,
                         rounds=3, samples=60 + 20 * i)
        code = agg.proc.wait(timeout=120)
        assert code == 0, agg.tail(40)
        agg_log = agg.log_path.read_text(errors="replace")
        clients = fleet.children[1:]  # after the aggregator
        for c in clients:
            assert c.proc.wait(timeout=30) == 0, c.tail(30)
    ghost.stop()
    rows = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["outcome"] == "aggregated"
        assert "ghost" in r["selected"] and "ghost" not in r["participants"]
        assert sorted(r["participants"]) == [f"clinic-{i}" for i in range(5)]
        assert r["samples"] == sum(int((60 + 20 * i) * 0.8) for i in range(5))
    # every round closed at its first deadline although the ghost never answered: the
    # quorum was there, so no deadline was extended and no round was skipped
    assert "deadline extended" not in agg_log and "skipped:" not in agg_log, agg_log
    final = dequantize_update(Weights.decode(
        (state / "checkpoints" / f"v{3:08d}.bin").read_bytes()).tensors)
    initial = dequantize_update(Weights.decode(
        (state / "checkpoints" / f"v{0:08d}.bin").read_bytes()).tensors)
    assert any(not np.allclose(final[k], initial[k]) for k in final)


def test_a_dp_federation_of_real_clients_stops_at_its_privacy_budget(
    broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes
) -> None:
    """Client-level DP end to end: Poisson-sampled rounds (q = 0.5 of 6 devices), clipped
    and noised; ε from each history row recomputed independently; the run ends with
    ``privacy budget`` once a third noised round would exceed the budget."""
    import dp_accounting  # the server extra; only this test needs it here
    from dp_accounting import rdp

    q, z, delta = 0.5, 0.9, 1e-5

    def epsilon(rounds: int) -> float:
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
        return float(rdp.RdpAccountant().compose(event).get_epsilon(delta))

    budget = (epsilon(2) + epsilon(3)) / 2
    model = tmp_path / "model.tflite"
    model.write_bytes(logreg_file)
    common = ["--broker", broker.url, "--federation", namespace]
    state = tmp_path / "agg"
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            *common, "--model", str(model), "--state-dir", str(state), "--rounds", "10",
            "--min-clients", "1", "--min-available", "6", "--round-timeout", "20",
            "--lr", "0.1", "--codec", "int8", "--dp-clip", "0.5",
            "--dp-noise-multiplier", str(z), "--dp-delta", str(delta),
            "--dp-sampling-rate", str(q), "--dp-epsilon", str(budget)])
        for i in range(6):
            start_client(fleet, tmp_path, broker.url, namespace, f"watch-{i}", seed=i,
                         rounds=10, samples=60 + 10 * i)
        code = agg.proc.wait(timeout=150)
        assert code == 0, agg.tail(40)
        for c in fleet.children[1:]:  # after the aggregator
            assert c.proc.wait(timeout=30) == 0, c.tail(30)
        agg_log = agg.log_path.read_text(errors="replace")
    assert "another round would exceed it, so the run finishes" in agg_log, agg_log[-3000:]
    rows = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    aggregated = [r for r in rows if r["outcome"] == "aggregated"]
    assert len(aggregated) == 2, rows
    for r in rows:
        assert set(r["participants"]) <= set(r["selected"])
        assert r["dp"]["epsilon"] == pytest.approx(
            epsilon(r["dp"]["rounds_spent"]) if r["dp"]["rounds_spent"] else 0.0, rel=1e-6)
    assert rows[-1]["dp"]["epsilon"] <= budget < epsilon(3)
    ledger = json.loads((state / "privacy.json").read_text())
    assert [e["round"] for e in ledger["rounds"]] == [r["round"] for r in aggregated]
    final = dequantize_update(Weights.decode(
        (state / "checkpoints" / f"v{2:08d}.bin").read_bytes()).tensors)
    initial = dequantize_update(Weights.decode(
        (state / "checkpoints" / f"v{0:08d}.bin").read_bytes()).tensors)
    assert any(not np.allclose(final[k], initial[k]) for k in final)
