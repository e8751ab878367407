"""Floods: made-up device ids on an anonymous broker (issue 14 findings 6 and 7).

Without broker ACLs anyone may publish presence and update chunks under any client id.
A presence flood must not capture the selection (ids that delivered before are picked
first, never-delivered ids are capped per round), and a flood of partial transfers must not
keep a genuine device's update out (it evicts the flood's transfers, or is refused with the
temporary reason ``busy`` and re-sent).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from reliability.kit import AggregatorFactory, Scenario, ScriptedDevice, check_federation
from update_kit import make_update

from aggregator.modelfile import ModelFile
from edge_client.protocol import Presence, Topics
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker

FAKES = 5000
GENUINE = {"dev-a": 120, "dev-b": 80}


def flood_presence(broker: MosquittoBroker, topics: Topics, count: int) -> float:
    """Publish ``count`` presence messages of made-up ids (QoS 1); returns the seconds taken."""
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"flood-{uuid.uuid4().hex[:6]}",
                                   durable=False)).start(wait=10)
    started = time.monotonic()
    try:
        for i in range(count):
            fake = f"fake-{i}"
            payload = Presence(fake, True, 100, "flood", "1", "x", time.time()).encode()
            t.publish(topics.presence(fake), payload, timeout=None)
        t.publish(topics.presence("fake-last"), Presence(  # the broker acked everything before
            "fake-last", False, 1, "flood", "1", "x", time.time()).encode(), timeout=30)
    finally:
        t.stop()
    return time.monotonic() - started


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


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("per_round", [2, None], ids=["clients-per-round-2", "all-online"])
@pytest.mark.fault(
    name="presence flood",
    injected="2 devices deliver round 1; meanwhile 5,000 presence messages of made-up ids "
             "(anonymous broker); --clients-per-round 2, and default (all online)",
    expected="round 2 selects both devices that delivered, plus at most --max-new-clients "
             "(256) never-delivered ids; both rounds aggregate")
def test_a_presence_flood_cannot_capture_the_selection(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        durable_broker: MosquittoBroker, topics: Topics, model_file: ModelFile,
        scenario: Scenario, per_round: int | None) -> None:
    """On main round 2 picked 2 of 5,002 online ids at random (all fakes: the round was
    skipped), or, selecting all online, 4,096 ids of which most never deliver."""
    flags: dict[str, object] = {"rounds": 2, "min_clients": 2, "round_timeout": 8,
                                "codec": "int8"}
    if per_round is not None:
        flags["clients_per_round"] = per_round
    agg = aggregator(**flags)
    genuine = [devices(name, n) for name, n in GENUINE.items()]
    for d in genuine:
        d.wait_round(1)
    took = flood_presence(durable_broker, topics, FAKES)
    agg.wait_metric("fedge_clients_online", FAKES + len(genuine), timeout=60)
    scenario.observe(f"{FAKES} fake presences published in {took:.1f} s "
                     f"({per_round or 'all online'} per round)")
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
