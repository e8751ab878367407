"""Floods: made-up device ids on an anonymous broker (issue 14 findings 6 and 7).

Without broker ACLs anyone may publish presence and update chunks under any client id.
A presence flood must not capture the selection (ids that delivered before are picked
first, never-delivered ids are capped per round), and a flood of partial transfers must not
keep a genuine device's update out (it evicts the flood's transfers, or is refused with the
temporary reason ``busy`` and re-sent).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable

import pytest
from reliability.kit import AggregatorFactory, Scenario, ScriptedDevice, check_federation
from update_kit import make_update

from aggregator.modelfile import ModelFile
from edge_client.protocol import Chunk, Presence, Reply, Topics
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker

FAKES = 5000
GENUINE = {"dev-a": 120, "dev-b": 80}


def flood(broker: MosquittoBroker, messages: list[tuple[str, bytes]]) -> float:
    """Publish ``messages`` (topic, payload) at QoS 1 as fast as the broker takes them;
    returns the seconds until the broker acknowledged the last one."""
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"flood-{uuid.uuid4().hex[:6]}",
                                   durable=False)).start(wait=10)
    started = time.monotonic()
    try:
        for i, (topic, payload) in enumerate(messages):  # in order: the last ack is the end
            t.publish(topic, payload, timeout=30 if i == len(messages) - 1 else None)
    finally:
        t.stop()
    return time.monotonic() - started


def fake_presences(topics: Topics, count: int) -> list[tuple[str, bytes]]:
    """Presence messages (online) of ``count`` made-up ids."""
    return [(topics.presence(f"fake-{i}"), Presence(f"fake-{i}", True, 100, "flood", "1", "x",
                                                    time.time()).encode())
            for i in range(count)]


def deliver(devices: list[ScriptedDevice], round_id: int, model_file: ModelFile) -> None:
    """Each device answers round ``round_id`` with a good update; each is accepted."""
    for d in devices:
        r = d.wait_round(round_id)
        assert r.selects(d.client_id), (
            f"round {round_id} did not select {d.client_id} (it delivered before); it "
            f"selected {len(r.selected)} ids, e.g. {sorted(r.selected)[:4]}")
        update = make_update(r, d.client_id, GENUINE[d.client_id], model_file)
        d.send(update)
        reply = d.wait_reply(update.nonce)
        assert reply.accepted, reply


def presence_flood(aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
                   broker: MosquittoBroker, topics: Topics, model_file: ModelFile,
                   scenario: Scenario, per_round: int | None) -> None:
    """2 devices deliver round 1 while 5,000 made-up ids come online; round 2 must select
    them (and at most 256 never-delivered ids), and both rounds aggregate."""
    flags: dict[str, object] = {"rounds": 2, "min_clients": 2, "round_timeout": 8,
                                "codec": "int8"}
    if per_round is not None:
        flags["clients_per_round"] = per_round
    agg = aggregator(**flags)
    genuine = [devices(name, n) for name, n in GENUINE.items()]
    for d in genuine:
        d.wait_round(1)
    took = flood(broker, fake_presences(topics, FAKES))
    agg.wait_metric("fedge_clients_online", FAKES + len(genuine), timeout=60)
    scenario.observe(f"{FAKES} fake presences published in {took:.1f} s")
    deliver(genuine, 1, model_file)
    r2 = genuine[0].wait_round(2)
    fresh = len(r2.selected) - sum(r2.selects(d.client_id) for d in genuine)
    scenario.observe(f"round 2 selected {len(r2.selected)} ids: "
                     f"{sum(r2.selects(d.client_id) for d in genuine)} that delivered, "
                     f"{fresh} never-delivered")
    deliver(genuine, 2, model_file)
    assert fresh <= 256, f"round 2 selected {fresh} never-delivered ids"
    assert agg.wait_exit(60) == 0, agg.child.tail(30)
    scenario.observe(check_federation(agg.state_dir, model_file, 2, accepted=[
        (r, d.client_id) for r in (1, 2) for d in genuine]))


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.fault(
    name="presence flood, --clients-per-round 2",
    injected="2 devices deliver round 1; meanwhile 5,000 presence messages of made-up ids "
             "(anonymous broker); --clients-per-round 2",
    expected="round 2 selects both devices that delivered; both rounds aggregate")
def test_a_presence_flood_cannot_capture_a_small_selection(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        durable_broker: MosquittoBroker, topics: Topics, model_file: ModelFile,
        scenario: Scenario) -> None:
    """On main round 2 picked 2 of 5,002 online ids at random: fakes, the round skipped."""
    presence_flood(aggregator, devices, durable_broker, topics, model_file, scenario, 2)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.fault(
    name="presence flood, all online selected",
    injected="2 devices deliver round 1; meanwhile 5,000 presence messages of made-up ids "
             "(anonymous broker); default selection (all online)",
    expected="round 2 selects both devices that delivered plus at most --max-new-clients "
             "(256) never-delivered ids, and aggregates at its deadline")
def test_a_presence_flood_costs_at_most_the_new_id_cap(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        durable_broker: MosquittoBroker, topics: Topics, model_file: ModelFile,
        scenario: Scenario) -> None:
    """On main round 2 selected 4,096 of the 5,002 online ids (the most a Round lists),
    without the devices that had delivered."""
    presence_flood(aggregator, devices, durable_broker, topics, model_file, scenario, None)


def partial_transfers(count: int, tag: str) -> list[bytes]:
    """First chunks of ``count`` two-chunk garbage transfers (never completed)."""
    return [Chunk(f"u-1-{hashlib.sha256(f'{tag}{i}'.encode()).hexdigest()[:32]}", 0, 2, 64,
                  "0" * 64, b"x" * 32).encode() for i in range(count)]


def synced(device: ScriptedDevice, tag: bytes) -> Reply:
    """A garbage one-chunk transfer from ``device``, and its reply: every message published
    before it has been processed (the aggregator takes them in order)."""
    nonce = tag.ljust(8, b"-")
    device.publish([Chunk(f"u-1-{nonce.hex()}", 0, 1, 3, hashlib.sha256(b"abc").hexdigest(),
                          b"abc").encode()])
    return device.wait_reply(nonce)


@pytest.mark.broker
@pytest.mark.fault(
    name="partial transfers aimed at one device id",
    injected="4 partial update transfers published on update/dev-a (no ACL: anyone may), "
             "then dev-a's genuine update",
    expected="dev-a's update evicts the oldest of them (the per-sender cap is dev-a's own "
             "to lose, not a block) and is accepted; the round aggregates")
def test_partial_transfers_aimed_at_one_device_cannot_block_it(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        model_file: ModelFile, scenario: Scenario) -> None:
    """On main dev-a's update was refused 'transfer: sender dev-a already has 4 transfers in
    progress', a reason the client takes as final."""
    agg = aggregator(rounds=1, min_clients=2, round_timeout=20, codec="int8")
    genuine = [devices(name, n) for name, n in GENUINE.items()]
    a, b = genuine
    a.wait_round(1)
    b.publish(partial_transfers(4, "aimed"), "dev-a")
    deliver(genuine, 1, model_file)
    evicted = agg.metric("fedge_transfers_evicted_total")
    scenario.observe(f"4 partial transfers on update/dev-a; dev-a's update accepted, "
                     f"{evicted:.0f} of them evicted")
    assert evicted == 1
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, d.client_id) for d in genuine]))


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.fault(
    name="flood of partial transfers",
    injected="4,100 partial update transfers, one from each of 4,100 made-up ids (default "
             "--max-transfers 4096), then a made-up id's own transfer, then the genuine "
             "updates",
    expected="the made-up id is refused with the temporary reason 'busy'; each genuine "
             "(selected) update evicts a flood transfer and is accepted; the round aggregates")
def test_a_flood_of_partial_transfers_cannot_keep_genuine_updates_out(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        durable_broker: MosquittoBroker, topics: Topics, model_file: ModelFile,
        scenario: Scenario) -> None:
    """On main the genuine updates were refused 'transfer: too many transfers in progress
    (4096)', and the client dropped them as final."""
    agg = aggregator(rounds=1, min_clients=2, round_timeout=30, codec="int8")
    genuine = [devices(name, n) for name, n in GENUINE.items()]
    genuine[0].wait_round(1)
    took = flood(durable_broker, [(topics.update(f"fake-{i}"), chunk) for i, chunk in
                                  enumerate(partial_transfers(4100, "flood"))])
    reply = synced(devices("fake-sync", online=False), b"sync")
    scenario.observe(f"4,100 partial transfers published in {took:.1f} s; a made-up id's "
                     f"transfer then got: {reply.reason[:90]!r}")
    deliver(genuine, 1, model_file)
    evicted = agg.metric("fedge_transfers_evicted_total")
    scenario.observe(f"both genuine updates accepted, evicting {evicted:.0f} flood "
                     "transfer(s) (a completed update frees its room)")
    assert evicted >= 1
    assert not reply.accepted and reply.reason.startswith("busy: "), reply
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    assert line["rejections"].get("busy", 0) >= 1, line
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, d.client_id) for d in genuine]) + f"; rejections {line['rejections']}")
