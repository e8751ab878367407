"""Client-level DP under a process fault, end to end: real ``python -m aggregator``, three
real ``python -m edge_client`` devices, a real Mosquitto.

The aggregator kills itself (tests/reliability/crash_at.py, after the aggregate stage of
round 1) right after round 1 was entered in the privacy ledger and noised, before anything
of it was checkpointed or published; the same command is started again. The budget must be
spent once per published round, the published weights must be the clipped mean plus the
noise the ledger recorded, and the run must finish at its budget with reason
``privacy budget`` and exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from reliability.kit import AggregatorFactory, Scenario, start_client, told_accepted
from reliability.test_process_faults import all_exit_0

from aggregator import accounting
from aggregator.intake import received
from aggregator.ledger import LEDGER_FILE, Spent
from aggregator.privacy import add_noise, clip_scale
from aggregator.store import AggregatorStore
from aggregator.validation import delta_norm
from edge_client.protocol import PRIVACY_BUDGET, Manifest, Topics, Update, Weights
from edge_client.quantize import dequantize_update
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
CLIP, Z, DELTA = 0.5, 0.8, 1e-5


def check_noised_rounds(state_dir: Path) -> str:
    """Every published version = previous + (sum of clipped stored deltas + the ledger's
    noise) / its fixed denominator; one ledger entry per aggregated round."""
    store = AggregatorStore(state_dir)
    history = store.history()
    ledger = json.loads((state_dir / LEDGER_FILE).read_text())
    entries = {e["round"]: Spent(**e) for e in ledger["rounds"]}
    assert len(entries) == len(ledger["rounds"]), ledger  # no round spent twice
    aggregated = [h for h in history if h["outcome"] == "aggregated"]
    assert sorted(entries) == [h["round"] for h in aggregated], (entries, history)
    saved = store.checkpoint(0)
    assert saved is not None
    base = dequantize_update(Weights.decode(saved[0]).tensors)
    for h in aggregated:
        deltas = []
        for _, payload in store.accepted(h["round"]):
            delta = received(Update.decode(payload), payload).delta
            scale = clip_scale(delta_norm(delta), CLIP)
            deltas.append({k: v.astype(np.float64) * scale for k, v in delta.items()})
        mean = {k: sum(d[k] for d in deltas) / len(deltas) for k in base}
        noised = add_noise(mean, len(deltas), entries[h["round"]].noise())
        saved = store.checkpoint(h["version"])
        assert saved is not None
        got = dequantize_update(Weights.decode(saved[0]).tensors)
        for name, value in base.items():
            np.testing.assert_allclose(got[name], value + noised[name], rtol=1e-6, atol=1e-6)
        base = got
    return (f"{len(entries)} ledger entries for {len(aggregated)} aggregated rounds; every "
            "version = clipped mean + the ledger's noise")


@pytest.mark.fault(
    name="aggregator kill -9 between DP noising and publishing, then restart",
    injected="a stage hook (crash_at.py): the aggregator SIGKILLs itself right after round 1 was "
             "spent in STATE/privacy.json and noised, before checkpoint and publish; then the "
             "same command again; DP with a budget of 2 of 5 rounds; 3 real clients",
    expected="round 1 is spent once and its noise replayed (same ledger entry); the run "
             "finishes after round 2 with reason 'privacy budget', exit 0; clients exit 0")
def test_kill_9_between_noising_and_publishing_spends_the_budget_once(
        aggregator: AggregatorFactory, durable_broker: MosquittoBroker, fleet: Fleet,
        namespace: str, tmp_path: Path, scenario: Scenario) -> None:
    two = accounting.epsilon([(1.0, Z)] * 2, DELTA, "rdp")
    three = accounting.epsilon([(1.0, Z)] * 3, DELTA, "rdp")
    budget = (two + three) / 2
    agg = aggregator(crash_after=("AGGREGATE", 1), rounds=5, min_clients=3, min_available=3,
                     round_timeout=20, epochs=1, lr=0.1, codec="int8", dp_clip=CLIP,
                     dp_noise_multiplier=Z, dp_delta=DELTA, dp_epsilon=budget)
    clients = [start_client(fleet, tmp_path, durable_broker.url, namespace, f"clinic-{i}",
                            seed=i, rounds=5, samples=60 + 20 * i) for i in range(3)]
    code = agg.wait_exit(90)
    assert code == -9, agg.child.tail(40)
    ledger = json.loads((agg.state_dir / LEDGER_FILE).read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1]
    assert AggregatorStore(agg.state_dir).checkpoint(1) is None  # killed before the checkpoint
    spent = ledger["rounds"][0]
    scenario.observe(f"killed after spending round 1 (epsilon {spent['epsilon']:.3f}), "
                     "before its checkpoint")
    agg.start()
    assert agg.wait_exit(90) == 0, agg.child.tail(40)
    all_exit_0(clients)
    log = agg.log()
    assert "privacy: round 1 was already spent" in log, log[-3000:]
    ledger = json.loads((agg.state_dir / LEDGER_FILE).read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1, 2]
    assert ledger["rounds"][0] == spent  # the same entry: the same noise seed, spent once
    history = agg.history()
    assert [h["round"] for h in history] == [1, 2]
    assert history[-1]["dp"]["epsilon"] == pytest.approx(two) and two <= budget
    assert retained_manifest(durable_broker, namespace).finished == PRIVACY_BUDGET
    assert {(1, c.name) for c in clients} <= told_accepted(clients)
    scenario.observe(check_noised_rounds(agg.state_dir))
    scenario.observe(f"finished after round 2 with reason '{PRIVACY_BUDGET}' at epsilon "
                     f"{two:.3f} of {budget:.3f}; aggregator and clients exit 0")


def retained_manifest(broker: MosquittoBroker, namespace: str) -> Manifest:
    """The retained manifest, read with a throw-away subscriber."""
    reader = MqttTransport(BrokerConfig(url=broker.url, client_id="manifest-reader",
                                        durable=False)).start(wait=10)
    try:
        reader.subscribe(Topics(namespace).manifest())
        message = reader.get(10)
        assert message is not None, "no retained manifest"
        return Manifest.decode(message.payload)
    finally:
        reader.stop()
