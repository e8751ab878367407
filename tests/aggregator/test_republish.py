"""Issue 14, finding 4: a broker that lost its retained messages (restarted without
persistence) gets the aggregator's whole retained state again on the reconnect, so new
devices can download the model and join."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_client.protocol import Manifest, Topics
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def retained(broker: MosquittoBroker, topics: Topics, sha: str | None, timeout: float
             ) -> tuple[Manifest | None, int]:
    """The retained manifest and how many model chunks are retained (read for a while)."""
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"w{time.monotonic_ns()}",
                                   durable=False)).start(wait=10)
    try:
        t.subscribe(topics.manifest())
        if sha:
            t.subscribe(topics.model_filter(sha))
        manifest, chunks, end = None, 0, time.monotonic() + timeout
        while time.monotonic() < end:
            message = t.get(timeout=0.3)
            if message is None:
                if manifest is not None and (chunks or not sha):
                    break
                continue
            if message.topic == topics.manifest() and message.payload:
                manifest = Manifest.decode(message.payload)
            elif message.payload:
                chunks += 1
        return manifest, chunks
    finally:
        t.stop()


def test_the_aggregator_puts_its_retained_state_back_after_the_broker_lost_it(
        broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(logreg_file)
    topics = Topics(namespace)
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            "--broker", broker.url, "--federation", namespace, "--model", str(model),
            "--state-dir", str(tmp_path / "agg"), "--rounds", "1", "--min-clients", "2"])
        before, _ = retained(broker, topics, None, 60)
        assert before is not None, agg.tail(20)
        broker.restart()  # no persistence: every retained message is gone
        empty, _ = retained(broker, topics, None, 1.5)
        after, chunks = retained(broker, topics, before.model_sha256, 60)
        assert agg.proc.poll() is None, agg.tail(20)
    assert after is not None and after.run_id == before.run_id, "manifest not republished"
    assert chunks >= 1, "model file not republished"
    assert empty is None or empty == before  # (the aggregator may already have been quick)
