"""MqttTransport against a real Mosquitto: QoS 1 delivery, retained, durable sessions."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from edge_client.errors import ConfigError
from edge_client.transport import (
    BrokerConfig,
    MqttTransport,
    TransportError,
    Will,
    is_loopback,
)
from tools.runtime.broker import MosquittoBroker

pytestmark = pytest.mark.broker


def _transport(broker: MosquittoBroker, cid: str, **kw: object) -> MqttTransport:
    return MqttTransport(BrokerConfig(url=broker.url, client_id=cid, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_publish_subscribe_round_trip(
    broker: MosquittoBroker, namespace: str, version: str
) -> None:
    sub = _transport(broker, f"{namespace}-sub", mqtt_version=version).start(wait=10)
    pub = _transport(broker, f"{namespace}-pub", mqtt_version=version).start(wait=10)
    try:
        sub.subscribe(f"{namespace}/#")
        payload = bytes(range(256)) * 400
        pub.publish(f"{namespace}/data", payload)
        msg = sub.get(timeout=10)
        assert msg is not None and msg.topic == f"{namespace}/data" and msg.payload == payload
    finally:
        pub.stop()
        sub.stop()


def test_retained_message_reaches_late_subscriber(broker: MosquittoBroker, namespace: str) -> None:
    pub = _transport(broker, f"{namespace}-pub").start(wait=10)
    pub.publish(f"{namespace}/manifest", b"v1", retain=True)
    pub.stop()
    late = _transport(broker, f"{namespace}-late").start(wait=10)
    late.subscribe(f"{namespace}/manifest")
    msg = late.get(timeout=10)
    late.stop()
    assert msg is not None and msg.retain and msg.payload == b"v1"


def test_durable_session_redelivers_unacked_after_broker_restart(
    durable_broker: MosquittoBroker, namespace: str
) -> None:
    """An unacknowledged QoS 1 message survives a subscriber crash and a broker restart."""
    topic = f"{namespace}/update"
    sub = _transport(durable_broker, f"{namespace}-agg", manual_ack=True).start(wait=10)
    sub.subscribe(topic)
    pub = _transport(durable_broker, f"{namespace}-dev").start(wait=10)
    pub.publish(topic, b"precious")
    first = sub.get(timeout=10)
    assert first is not None and first.payload == b"precious"
    sub.stop(graceful=False)  # crash before acking
    pub.stop()
    durable_broker.restart()
    again = _transport(durable_broker, f"{namespace}-agg", manual_ack=True).start(wait=20)
    msg = again.get(timeout=20)
    assert msg is not None and msg.payload == b"precious"
    again.ack(msg)
    again.stop()


def test_last_will_is_published_when_client_vanishes(
    broker: MosquittoBroker, namespace: str
) -> None:
    watcher = _transport(broker, f"{namespace}-w").start(wait=10)
    watcher.subscribe(f"{namespace}/presence/+")
    dev = _transport(
        broker, f"{namespace}-d", keepalive=1,
        will=Will(f"{namespace}/presence/d", b"offline"),
    ).start(wait=10)
    dev.stop(graceful=False)  # no DISCONNECT: the broker must fire the will
    dev._client.socket().close()  # type: ignore[union-attr]
    msg = watcher.get(timeout=15)
    watcher.stop()
    assert msg is not None and msg.payload == b"offline"


def test_bad_url_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="mqtt://host:port"):
        MqttTransport(BrokerConfig(url="http://x:1", client_id="c"))


@pytest.mark.parametrize(("host", "resolved", "loopback"), [
    ("127.0.0.1", None, True), ("127.255.0.9", None, True), ("::1", None, True),
    ("localhost", None, True), ("::ffff:127.0.0.1", None, True), ("fe80::1%lo", None, False),
    ("192.0.2.2", None, False), ("0.0.0.0", None, False), ("::", None, False),
    ("box", ["127.0.1.1", "::1"], True), ("box", ["127.0.0.1", "fd00::2"], False),
    ("box", [], False), ("box", ["not an address"], False)])
def test_loopback_is_an_address_in_127_0_0_0_8_or_1_or_a_name_resolving_only_there(
        host: str, resolved: list[str] | None, loopback: bool) -> None:
    def resolve(name: str) -> list[str]:
        assert resolved is not None, f"{name} is an address: no lookup"
        return resolved
    assert is_loopback(host, resolve) is loopback


def test_publish_while_the_broker_is_down_says_so_and_is_delivered_after_it_is_back(
    durable_broker: MosquittoBroker, namespace: str
) -> None:
    sub = _transport(durable_broker, f"{namespace}-sub").start(wait=10)
    sub.subscribe(f"{namespace}/t")
    pub = _transport(durable_broker, f"{namespace}-pub", backoff_min=0.1,
                     backoff_max=0.5).start(wait=10)
    durable_broker.stop()
    assert pub.disconnected.wait(10), "the client did not notice the broker going away"
    with pytest.raises(TransportError, match=r"not connected.*queued"):
        pub.publish(f"{namespace}/t", b"kept", timeout=30)
    durable_broker.start()
    msg = sub.get(timeout=30)
    assert msg is not None and msg.payload == b"kept"
    pub.stop()
    sub.stop()


def test_a_publish_waiting_for_its_ack_returns_when_the_connection_drops(
    broker: MosquittoBroker, namespace: str
) -> None:
    """The aggregator's loop stalled for a whole broker outage: a QoS 1 publish sent just
    before the broker went away waited for its PUBACK until the reconnect (seen as a round
    closing seconds after its deadline in the broker-outage fault scenario). Now the wait
    ends, with an error saying the message stays queued, as soon as the connection drops."""
    t = _transport(broker, f"{namespace}-pub").start(wait=10)
    pid = broker._proc.pid if broker._proc is not None else 0
    outcome: list[BaseException | None] = []

    def publish() -> None:
        try:
            t.publish(f"{namespace}/data", b"x", timeout=30)
            outcome.append(None)
        except BaseException as exc:  # recorded for the assertion
            outcome.append(exc)

    try:
        os.kill(pid, signal.SIGSTOP)  # the broker takes the publish but never answers it
        waiter = threading.Thread(target=publish)
        waiter.start()
        time.sleep(0.5)
        dropped = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # now the connection drops
        waiter.join(20)
        assert not waiter.is_alive(), "the publish still waits for its PUBACK"
        assert time.monotonic() - dropped < 10
        (exc,) = outcome
        assert isinstance(exc, TransportError) and "queued" in str(exc), exc
    finally:
        t.stop(graceful=False)
