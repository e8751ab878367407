"""A simulated device (tools/simulate/device.py) on the in-memory broker: it speaks the real
protocol, and each fault does what it says."""

from __future__ import annotations

from typing import Any

from membus import MemoryBroker, MemoryTransport

from edge_client.protocol import Chunk, Hyperparameters, Manifest, Presence, Reply, Round, Topics
from edge_client.transfer import Reassembler
from edge_client.transport import Message
from tools.simulate.device import DeviceSpec, SimDevice, UpdateSource, subscriptions
from tools.simulate.faults import Faults

SHAPES = {"dense/kernel": (40, 30), "dense/bias": (30,)}
SHA = "ab" * 32


class FakeLink:
    """A device's link on the in-memory broker that can crash and come back."""

    def __init__(self, broker: MemoryBroker, client_id: str, filters: list[str]) -> None:
        self.broker, self.client_id, self.filters = broker, client_id, filters
        self.crashes = self.reconnects = 0
        self.t: MemoryTransport | None = None
        self.reconnect()
        self.reconnects = 0

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        assert self.t is not None
        self.t.subscribe(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        assert self.t is not None
        self.t.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = 30.0) -> None:
        assert self.t is not None, "published while crashed"
        self.t.publish(topic, payload, retain=retain)

    def get(self, timeout: float | None) -> Message | None:
        return None if self.t is None else self.t.get(timeout)

    def ack(self, message: Message) -> None:
        pass

    def crash(self) -> None:
        self.crashes += 1
        self.t = None

    def reconnect(self) -> None:
        self.reconnects += 1
        self.t = self.broker.connect(self.client_id)
        for f in self.filters:
            self.t.subscribe(f)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class LateSource(UpdateSource):
    """Random deltas that can be made only once ``arrived`` (as trained ones need weights)."""

    arrived = False

    def ready(self, r: Round) -> bool:
        return self.arrived


def _setup(faults: Faults, max_payload: int = 128 * 1024, source: UpdateSource | None = None
           ) -> tuple[MemoryBroker, SimDevice, FakeLink, list[dict[str, Any]], Clock]:
    broker, clock = MemoryBroker(), Clock()
    events: list[dict[str, Any]] = []
    topics = Topics("fed")
    spec = DeviceSpec("dev-1", 1, 50, topics, faults, seed=3, max_payload=max_payload)
    link = FakeLink(broker, "dev-1", subscriptions(spec))
    device = SimDevice(spec, link, source or UpdateSource(SHAPES, seed=3), events.append,
                       clock=clock)
    agg = broker.connect("aggregator")
    agg.publish(topics.manifest(), Manifest(
        federation="fed", model_sha256=SHA, model_size=10, weights_version=0,
        weights_sha256=SHA, round_id=1, codec="fp32", key_id="aggregator").encode(), retain=True)
    agg.publish(topics.round(), Round(
        federation="fed", round_id=1, weights_version=0, model_sha256=SHA,
        deadline=clock.now + 30, hyperparameters=Hyperparameters(1, 8, 0.1), codec="int8",
        selected=("dev-1",)).encode(), retain=True)
    return broker, device, link, events, clock


def _update_chunks(broker: MemoryBroker) -> list[Chunk]:
    return [Chunk.decode(p) for _, topic, p, _ in broker.published
            if topic == Topics("fed").update("dev-1")]


def test_a_selected_device_sends_a_chunked_update_and_reads_its_reply() -> None:
    broker, device, _, events, _ = _setup(Faults(), max_payload=512)
    device.step()
    presence = Presence.decode(broker.retained[Topics("fed").presence("dev-1")])
    assert presence.online and presence.samples == 50
    chunks = _update_chunks(broker)
    assert len(chunks) > 1 and len({c.transfer_id for c in chunks}) == 1
    payload = None
    reassembler = Reassembler()
    for chunk in chunks:
        payload = reassembler.accept("dev-1", chunk.encode(), 0.0) or payload
    from edge_client.protocol import Update

    assert payload is not None
    update = Update.decode(payload)
    assert (update.round_id, update.client_id, update.codec) == (1, "dev-1", "int8")
    assert {t.name for t in update.tensors} == set(SHAPES) and update.num_samples == 50
    broker.route("aggregator", Topics("fed").reply("dev-1"), Reply(
        federation="fed", round_id=1, client_id="dev-1", nonce=update.nonce,
        accepted=True).encode(), False)
    device.step()
    assert {"event": "reply", "round": 1, "client": "dev-1", "accepted": True,
            "reason": ""} in events


def test_a_duplicate_send_repeats_the_nonce_under_a_new_transfer_id() -> None:
    broker, device, _, events, _ = _setup(Faults(duplicate_sends=1.0))
    device.step()
    chunks = _update_chunks(broker)
    assert len({c.transfer_id for c in chunks}) == 2
    assert len({c.sha256 for c in chunks}) == 1  # the same update bytes, so the same nonce
    assert [e["copies"] for e in events if e["event"] == "sent"] == [2]


def test_a_crash_sends_only_some_chunks_and_comes_back_after_the_deadline() -> None:
    broker, device, link, events, clock = _setup(Faults(crash_mid_upload=1.0), max_payload=512)
    device.step()
    crashed = next(e for e in events if e["event"] == "crashed")
    assert 1 <= crashed["chunks_sent"] < crashed["chunks"]
    assert len(_update_chunks(broker)) == crashed["chunks_sent"] and link.crashes == 1
    device.step()
    assert link.reconnects == 0  # still before the deadline
    clock.now += 31
    device.step()
    assert link.reconnects == 1 and events[-1]["event"] == "reconnected"


def test_without_a_reply_the_same_update_is_sent_again_until_the_deadline() -> None:
    broker, device, _, events, clock = _setup(Faults())
    device.step()
    clock.now += 19
    device.step()
    assert len(_update_chunks(broker)) == 1  # not yet: the reference client waits 20 s
    clock.now += 2
    device.step()
    first, again = _update_chunks(broker)
    assert again.transfer_id == first.transfer_id + "-1" and again.sha256 == first.sha256
    assert [e["event"] for e in events].count("resent") == 1
    clock.now += 21  # past the round's deadline: nothing more
    device.step()
    assert len(_update_chunks(broker)) == 2


def test_a_slow_device_answers_after_its_delay() -> None:
    broker, device, _, events, clock = _setup(Faults(slow=1.0, slow_delay=5.0))
    device.step()
    clock.now += 4.9
    device.step()
    assert _update_chunks(broker) == []
    clock.now += 0.2
    device.step()
    assert len(_update_chunks(broker)) == 1
    assert [e["slow"] for e in events if e["event"] == "plan"] == [True]


def test_a_dropout_sends_nothing() -> None:
    broker, device, _, events, _ = _setup(Faults(dropout=1.0))
    device.step()
    device.step()
    assert _update_chunks(broker) == []
    assert [e["dropout"] for e in events if e["event"] == "plan"] == [True]


def test_a_device_whose_source_is_not_ready_waits_and_sends_once_it_is() -> None:
    source = LateSource(SHAPES, seed=3)
    broker, device, _, events, _ = _setup(Faults(), source=source)
    device.step()
    device.step()
    assert _update_chunks(broker) == [] and not [e for e in events if e["event"] == "plan"]
    source.arrived = True
    device.step()  # no new message: the device considers the open round again by itself
    assert len(_update_chunks(broker)) == 1
    assert [e["event"] for e in events].count("sent") == 1
