"""The brokers ``fedge demo``, ``simulate``, ``bench`` and the tests start
(tools/runtime/broker.py): Mosquitto's ``max_packet_size`` bounds what one message costs."""

from __future__ import annotations

from pathlib import Path

import pytest
from packet_kit import MiB, publish_streamed

from edge_client.protocol import MAX_CHUNK_BYTES
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MAX_PACKET_BYTES, MosquittoBroker

pytestmark = pytest.mark.broker


def test_the_bound_fits_the_largest_chunk_with_room_for_its_topic_and_properties() -> None:
    assert MAX_PACKET_BYTES == MAX_CHUNK_BYTES + 128 * 1024


def test_the_example_deploy_config_sets_the_same_bound() -> None:
    conf = (Path(__file__).resolve().parents[3] / "deploy" / "mosquitto.conf").read_text()
    assert [line for line in conf.splitlines() if line.startswith("max_packet_size")] == [
        f"max_packet_size {MAX_PACKET_BYTES}"]


def test_a_200_mb_publish_is_cut_off_after_its_header_and_reaches_no_one(
        broker: MosquittoBroker, namespace: str) -> None:
    """Without max_packet_size Mosquitto read all 200 MB and delivered them (issue 14.10)."""
    watcher = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-w")
                            ).start(wait=10)
    try:
        watcher.subscribe(f"{namespace}/#")
        sent = publish_streamed(broker.port, f"{namespace}/update/x", 200_000_000)
        assert sent < 32 * MiB, f"the broker took {sent} bytes of a 200 MB packet"
        sender = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-s")
                               ).start(wait=10)
        sender.publish(f"{namespace}/after", b"marker")
        sender.stop()
        first = watcher.get(timeout=10)
        assert first is not None and (first.topic, first.payload) == (
            f"{namespace}/after", b"marker")
    finally:
        watcher.stop()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_the_largest_chunk_fedge_sends_still_passes(broker: MosquittoBroker, namespace: str,
                                                    version: str) -> None:
    topic = f"{namespace}/" + "t" * 4000  # far longer than any topic of the tree
    payload = bytes(range(256)) * (MAX_CHUNK_BYTES // 256)
    ends = [MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-{end}",
                                       mqtt_version=version)).start(wait=10)
            for end in ("sub", "pub")]
    try:
        ends[0].subscribe(topic)
        ends[1].publish(topic, payload, timeout=30)
        got = ends[0].get(timeout=30)
        assert got is not None and got.payload == payload
    finally:
        for end in ends:
            end.stop()
