"""Prometheus metrics: the values a scrape shows, and every documented metric is real."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from service_kit import Federation

from tools.runtime.broker import free_port


def test_metrics_are_served_over_http(tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=1)
    service = fed.service()
    fed.send(service, "a", samples=42)
    sent = sum(len(p) for sender, _, p, _ in fed.broker.published if sender == "aggregator")
    received = sum(len(p) for sender, topic, p, _ in fed.broker.published
                   if sender != "aggregator" and ("/update/" in topic or "/presence/" in topic))
    port = free_port()
    service.metrics.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        service.metrics.close()
    for line in ("fedge_round 1.0", "fedge_round_participants 1.0", "fedge_round_samples 42.0",
                 "fedge_clients_online 3.0", "fedge_weights_version 0.0"):
        assert line in text
    assert sent > 0 and received > 0
    assert f"fedge_sent_bytes_total {float(sent)}" in text
    assert f"fedge_received_bytes_total {float(received)}" in text
    assert "fedge_updates_accepted_total 1.0" in text
    assert 'fedge_round_duration_seconds_count 0.0' in text  # no round has closed yet


def test_a_presence_beyond_max_online_and_an_evicted_transfer_are_counted(
        tmp_path: Path) -> None:
    from edge_client.protocol import Chunk, Presence

    fed = Federation(tmp_path, rounds=1, max_online=3, max_new_clients=3)
    service = fed.service()
    intruder = fed.broker.connect("intruder")
    for fake in ("f1", "f2"):
        presence = Presence(fake, True, 10, "mem", "1", "test", fed.now)
        intruder.publish(fed.topics.presence(fake), presence.encode())
    for i in range(5):  # 5 partial transfers on a's topic: one over its cap of 4
        intruder.publish(fed.topics.update("a"), Chunk(f"junk-{i}", 0, 2, 8, "0" * 64,
                                                       b"x").encode())
    fed.pump(service)
    assert len(service.state.online) == 3
    assert service.metrics.value("fedge_invalid_messages_total", {"kind": "presence_cap"}) == 2
    assert service.metrics.value("fedge_transfers_evicted_total") == 1
    reply = fed.send(service, "a")  # a's own update still gets in
    assert reply is not None and reply.accepted, reply
