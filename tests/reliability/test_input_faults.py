"""Faults in what devices send: a real aggregator process, scripted protocol-level devices.

Each test runs ``python -m aggregator`` on a Mosquitto with persistence, feeds it bad input
next to good updates, and checks that the bad input is rejected with its reason (reply,
metrics, history), that the good updates are counted exactly once, that the published
weights equal FedAvg of exactly those, and that the process finished its rounds (exit 0).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from reliability.kit import (
    AggregatorFactory,
    Scenario,
    ScriptedDevice,
    check_federation,
)
from update_kit import fedavg, make_update, transfer_id

from aggregator.modelfile import ModelFile
from aggregator.store import AggregatorStore
from edge_client.protocol import (
    Chunk,
    Presence,
    Round,
    Tensor,
    Topics,
    Update,
    Weights,
    parse_update_transfer_id,
    update_transfer_id,
)
from edge_client.quantize import dequantize_update
from edge_client.transfer import split

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SAMPLES = {"dev-a": 120, "dev-b": 30, "dev-c": 350}
SMALL_CHUNKS = 260  # bytes per MQTT payload: a 363-byte update travels in 6 chunks
Devices = Callable[..., ScriptedDevice]


def three_devices(devices: Devices) -> list[ScriptedDevice]:
    return [devices(name, samples) for name, samples in SAMPLES.items()]


def good_round(devs: list[ScriptedDevice], round_id: int, model: ModelFile) -> list[Update]:
    """Every device answers ``round_id`` with a valid update; each must be accepted."""
    updates = []
    for d in devs:
        u = make_update(d.wait_round(round_id), d.client_id, SAMPLES[d.client_id], model)
        d.send(u)
        reply = d.wait_reply(u.nonce)
        assert reply.accepted and reply.reason == "", reply
        updates.append(u)
    return updates


@pytest.mark.fault(
    name="duplicated and reordered chunks",
    injected="update chunks shuffled and each sent twice (6 chunks per update); chunks in "
             "reverse order; a completed transfer's chunks sent again; a whole update "
             "re-sent under a new transfer id",
    expected="each update reassembled once and accepted once; the re-send answered "
             "'already accepted' and not counted; no reply to the repeated chunks")
def test_duplicated_and_reordered_chunks(aggregator: AggregatorFactory, devices: Devices,
                                         model_file: ModelFile, scenario: Scenario) -> None:
    agg = aggregator(rounds=2, min_clients=3, round_timeout=8, codec="int8")
    a, b, c = devs = three_devices(devices)
    r = a.wait_round(1)
    first = {d.client_id: make_update(r, d.client_id, SAMPLES[d.client_id], model_file)
             for d in devs}
    parts = {d.client_id: split(first[d.client_id].encode(), transfer_id(first[d.client_id]),
                                max_payload=SMALL_CHUNKS) for d in devs}
    assert min(len(p) for p in parts.values()) >= 4
    shuffled = parts["dev-a"] * 2
    random.Random(7).shuffle(shuffled)
    a.publish(shuffled)
    b.publish(parts["dev-b"][::-1])
    c.publish(parts["dev-c"])
    c.publish(parts["dev-c"])  # the transfer completed: these must be ignored
    for d in devs:
        reply = d.wait_reply(first[d.client_id].nonce)
        assert reply.accepted and reply.reason == "", reply
    b.send(first["dev-b"])  # no reply seen by the client: it re-sends, same nonce
    resent = b.wait_reply(first["dev-b"].nonce)
    assert resent.accepted and resent.reason == "already accepted", resent
    scenario.observe("every update accepted once; the re-send answered 'already accepted'")
    second = good_round(devs, 2, model_file)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    assert c.replies == [], c.replies  # the repeated chunks of a completed transfer: no reply
    scenario.observe("no reply to the repeated chunks of a completed transfer")
    history = agg.history()
    assert all(h["rejections"] == {} for h in history), history
    scenario.observe(check_federation(agg.state_dir, model_file, 2, accepted=[
        (u.round_id, u.client_id) for u in [*first.values(), *second]]))
    scenario.observe("aggregator exit 0")


def forged(name: str, values: npt.NDArray[np.float64]) -> Tensor:
    """An fp32 tensor made without the protocol's checks (so it may hold NaN or ∞)."""
    tensor = object.__new__(Tensor)
    fields = dict(name=name, codec="fp32", dtype="float32", shape=values.shape, scales=b"",
                  data=values.astype("<f4").tobytes())
    for key, value in fields.items():
        object.__setattr__(tensor, key, value)
    return tensor


def poisoned(r: Round, model: ModelFile) -> dict[str, tuple[str, Update]]:
    """What each bad update is, and the reason code it must be rejected with."""
    good = make_update(r, "dev-a", SAMPLES["dev-a"], model, salt="base")
    kernel = next(t for t in model.spec if len(t.shape) == 2)
    huge = tuple(replace(t, scales=np.full(t.channels, 3e38, "<f4").tobytes())
                 for t in good.tensors)
    def filled(value: float, nonce: bytes) -> Update:
        return replace(good, codec="fp32", nonce=nonce, tensors=tuple(
            forged(t.name, np.full(t.shape, value)) for t in model.spec))

    return {
        "NaN in fp32 data": ("malformed", filled(np.nan, b"nan-0001")),
        "+Inf in fp32 data": ("malformed", filled(np.inf, b"inf-0001")),
        "int8 scales overflowing to Inf": ("inf", replace(good, tensors=huge, nonce=b"inf-0002")),
        "kernel of the wrong shape": ("shape", make_update(
            r, "dev-a", 10, model, salt="shape",
            shapes={kernel.name: (kernel.shape[0] + 1, kernel.shape[1])})),
        "a tensor missing": ("name", replace(good, tensors=good.tensors[:1], nonce=b"name-001")),
        "wrong model hash": ("model_hash", replace(good, model_sha256="0" * 64,
                                                   nonce=b"hash-001")),
        "wrong base version": ("base_version", replace(good, base_version=5, nonce=b"base-001")),
        "an L2 norm of ~1e3": ("norm", make_update(r, "dev-a", 10, model, scale=400.0,
                                                   salt="norm")),
    }


@pytest.mark.fault(
    name="NaN/Inf updates, wrong shapes, wrong model hash",
    injected="from one device, before its good update: NaN and +Inf in fp32 tensors, int8 "
             "scales that overflow to Inf, a kernel of the wrong shape, a missing tensor, "
             "another model's hash, a future base version, an oversized norm",
    expected="each rejected with its reason code in the reply and counted in history "
             "'rejections'; the round aggregates only the three good updates")
def test_poisoned_updates(aggregator: AggregatorFactory, devices: Devices,
                          model_file: ModelFile, scenario: Scenario) -> None:
    agg = aggregator(rounds=1, min_clients=3, round_timeout=8, codec="int8",
                     max_update_norm=100)
    a, *_ = devs = three_devices(devices)
    bad = poisoned(a.wait_round(1), model_file)
    seen = []
    for what, (code, update) in bad.items():
        a.send(update)
        reply = a.wait_reply(update.nonce)
        assert not reply.accepted and reply.reason.startswith(f"{code}: "), (what, reply)
        seen.append(f"{what} → {code}")
    scenario.observe("replies: " + ", ".join(seen))
    updates = good_round(devs, 1, model_file)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    expected: dict[str, int] = {}
    for code, _ in bad.values():
        expected[code] = expected.get(code, 0) + 1
    assert line["rejections"] == expected, line["rejections"]
    scenario.observe(f"history rejections {line['rejections']}")
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, u.client_id) for u in updates]))
    scenario.observe("aggregator exit 0")


def chunk(payload: bytes, tid: str) -> bytes:
    """One chunk carrying the whole ``payload``, with a consistent header."""
    return Chunk(tid, 0, 1, len(payload), hashlib.sha256(payload).hexdigest(), payload).encode()


@pytest.mark.fault(
    name="truncated and random payloads on presence/+ and update/+",
    injected="on update/+: every truncation of a valid chunk, 100 random payloads, a whole "
             "update truncated inside consistent chunks, a chunk failing its SHA-256, a "
             "garbage transfer whose id names round 9999999999999999; on presence/+: every "
             "truncation of a valid presence and 100 random payloads; 2 topics whose client "
             "id segment is not an id",
    expected="every message counted (fedge_invalid_messages_total, "
             "fedge_updates_rejected_total, history rejections), answered when its transfer "
             "id names a round and nonce, never an unexpected error; the round completes")
def test_truncated_and_random_payloads(aggregator: AggregatorFactory, devices: Devices,
                                       model_file: ModelFile, topics: Topics,
                                       scenario: Scenario) -> None:
    agg = aggregator(rounds=1, min_clients=3, round_timeout=8, codec="int8")
    a, *_ = devs = three_devices(devices)
    r = a.wait_round(1)
    rng = random.Random(11)
    noise = [rng.randbytes(rng.randint(1, 2000)) for _ in range(100)]
    whole = chunk(make_update(r, "dev-a", 1, model_file, salt="x").encode(), "u-1-" + "ab" * 8)
    a.publish([whole[:n] for n in range(len(whole))] + noise)
    truncated = make_update(r, "dev-a", 1, model_file, salt="truncated")
    a.publish(split(truncated.encode()[:-9], transfer_id(truncated), max_payload=SMALL_CHUNKS))
    assert a.wait_reply(truncated.nonce).reason.startswith("malformed: ")
    bad_sha = make_update(r, "dev-a", 1, model_file, salt="sha")
    parts = split(bad_sha.encode(), transfer_id(bad_sha), max_payload=SMALL_CHUNKS)
    last = Chunk.decode(parts[-1])
    a.publish([*parts[:-1], replace(last, data=bytes(len(last.data))).encode()])
    assert a.wait_reply(bad_sha.nonce).reason.startswith("transfer: ")
    a.publish([chunk(b"garbage", "u-9999999999999999-" + "cd" * 8)])
    presence = Presence("dev-a", True, 120, "scripted", "1", "test", 1.0).encode()
    a.publish([presence[:n] for n in range(1, len(presence))] + noise,
              topic=topics.presence("dev-a"))
    a.publish([b"x"], topic=topics.update("dev-a").replace("dev-a", "-dev"))
    a.publish([presence], topic=topics.presence("dev-a").replace("dev-a", "dev a"))
    malformed = len(whole) + len(noise) + 2  # + the truncated update + the round-9999… one
    agg.wait_metric("fedge_updates_rejected_total", malformed, reason="malformed")
    agg.wait_metric("fedge_invalid_messages_total", len(presence) - 1 + len(noise),
                    kind="presence")
    agg.wait_metric("fedge_invalid_messages_total", 2, kind="topic")
    counted = {k: v for k, v in agg.metrics().items()
               if k.startswith(("fedge_updates_rejected_total{", "fedge_invalid_messages_total{"))}
    scenario.observe("counted " + ", ".join(
        f"{name.split('{')[0].removeprefix('fedge_')}{{{name.split('{')[1]} = {value:g}"
        for name, value in sorted(counted.items())))
    assert counted == {
        'fedge_updates_rejected_total{reason="malformed"}': malformed,
        'fedge_updates_rejected_total{reason="transfer"}': 1,
        'fedge_invalid_messages_total{kind="presence"}': len(presence) - 1 + len(noise),
        'fedge_invalid_messages_total{kind="topic"}': 2}, counted
    assert agg.alive
    updates = good_round(devs, 1, model_file)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    assert line["rejections"] == {"malformed": malformed, "transfer": 1}, line
    assert "unexpected error" not in agg.log() and "Traceback" not in agg.log()
    scenario.observe("no unexpected error in the log")
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, u.client_id) for u in updates]))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="a device publishing on another device's topic",
    injected="dev-a publishes dev-b's update (client_id dev-b) on update/dev-a, and a "
             "presence naming dev-b on presence/dev-a",
    expected="the update rejected 'client_id' (answered on dev-a's reply topic, dev-b not "
             "told anything), the presence counted invalid; dev-b's own update is accepted")
def test_update_on_another_devices_topic(aggregator: AggregatorFactory, devices: Devices,
                                         model_file: ModelFile, topics: Topics,
                                         scenario: Scenario) -> None:
    agg = aggregator(rounds=1, min_clients=3, round_timeout=8, codec="int8")
    a, b, _ = devs = three_devices(devices)
    r = a.wait_round(1)
    stolen = make_update(r, "dev-b", SAMPLES["dev-b"], model_file, salt="stolen")
    a.send(stolen, topic_client="dev-a")
    reply = a.wait_reply(stolen.nonce)
    assert not reply.accepted and reply.reason.startswith("client_id: "), reply
    assert reply.client_id == "dev-a"
    scenario.observe(f"reply to dev-a: {reply.reason[:70]}…")
    a.publish([Presence("dev-b", False, 1, "x", "1", "x", 1.0).encode()],
              topic=topics.presence("dev-a"))
    agg.wait_metric("fedge_invalid_messages_total", 1, kind="presence")
    scenario.observe("presence naming dev-b on dev-a's topic counted invalid")
    updates = good_round(devs, 1, model_file)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    assert b.replies == [], b.replies
    (line,) = agg.history()
    assert line["rejections"] == {"client_id": 1} and "dev-b" in line["participants"]
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, u.client_id) for u in updates]))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="an honest big site over --max-num-samples",
    injected="dev-c announces and trains on 6,800,000 samples (above the default "
             "--max-num-samples 1,000,000) next to dev-a (120) and dev-b (30)",
    expected="its update accepted (not thrown away after training), weighing as the round's "
             "median cap (3 x 120); history bounds.capped names it with its claim and the "
             "bound; the aggregator logs it at presence and at acceptance")
def test_an_honest_big_site_is_clipped_not_rejected(aggregator: AggregatorFactory,
                                                    devices: Devices, model_file: ModelFile,
                                                    scenario: Scenario) -> None:
    """Issue 14, finding 9: the site's update was refused 'num_samples ... outside
    1..1000000' after it had trained."""
    big = 6_800_000
    samples = {**SAMPLES, "dev-c": big}
    agg = aggregator(rounds=1, min_clients=3, round_timeout=8, codec="int8")
    devs = [devices(name, n) for name, n in samples.items()]
    updates = []
    for d in devs:
        u = make_update(d.wait_round(1), d.client_id, samples[d.client_id], model_file)
        d.send(u)
        reply = d.wait_reply(u.nonce)
        assert reply.accepted and reply.reason == "", reply
        updates.append(u)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    cap = 3 * SAMPLES["dev-a"]  # the median cap of the round: 3 x median_low(120, 30, 10^6)
    assert line["bounds"]["capped"] == {"dev-c": {"claimed": big, "weight": cap,
                                                  "max_num_samples": 1_000_000}}, line
    assert line["samples"] == sum(samples.values()) and line["rejections"] == {}
    scenario.observe(f"dev-c accepted; history bounds.capped {line['bounds']['capped']}")
    log = agg.log()
    assert "client=dev-c announces 6800000 samples, above --max-num-samples" in log
    assert "client=dev-c claims 6800000 samples, above --max-num-samples" in log
    store = AggregatorStore(agg.state_dir)
    saved = store.checkpoint(1)
    assert saved is not None
    got = dequantize_update(Weights.decode(saved[0]).tensors)
    weighed = [replace(u, num_samples=cap) if u.client_id == "dev-c" else u for u in updates]
    for name, value in fedavg(model_file.initial_weights, weighed).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)
    scenario.observe("weights v1 = FedAvg with dev-c weighing 360; warnings logged; exit 0")


def chunks_of(update: Update, attempt: int = 0) -> list[Chunk]:
    """``update`` split in small chunks (at least 4) under its first transfer id."""
    tid = update_transfer_id(update.round_id, update.nonce, attempt)
    parts = [Chunk.decode(c) for c in split(update.encode(), tid, max_payload=SMALL_CHUNKS)]
    assert len(parts) >= 4
    return parts


@pytest.mark.fault(
    name="a transfer failing mid-way, out of order, or expiring",
    injected="from one device, before its good update: a transfer whose 3rd chunk contradicts "
             "the first (another total_size); one sent last chunk first with a middle chunk's "
             "bytes zeroed (SHA-256 fails on a middle chunk); one whose last chunk never "
             "comes (--transfer-timeout 1)",
    expected="each answered with one 'transfer' rejection naming the failure (contradiction, "
             "sha256 mismatch, expiry), counted in history 'rejections'; the good updates "
             "aggregate")
def test_every_failed_transfer_is_answered(aggregator: AggregatorFactory, devices: Devices,
                                           model_file: ModelFile, scenario: Scenario) -> None:
    """Issue 14, finding 10: none of the three got a reply (the client waited for nothing
    until it re-sent or its round closed)."""
    agg = aggregator(rounds=1, min_clients=3, round_timeout=8, codec="int8",
                     transfer_timeout=1)
    a, *_ = devs = three_devices(devices)
    r = a.wait_round(1)
    contradicting = chunks_of(make_update(r, "dev-a", 10, model_file, salt="contradicting"))
    contradicting[2] = replace(contradicting[2], total_size=contradicting[2].total_size + 1)
    corrupt = chunks_of(make_update(r, "dev-a", 10, model_file, salt="corrupt"))
    corrupt[1] = replace(corrupt[1], data=bytes(len(corrupt[1].data)))
    incomplete = chunks_of(make_update(r, "dev-a", 10, model_file, salt="incomplete"))
    cases = {"contradicting": (contradicting, "differ from the transfer's first chunk"),
             "corrupt, last chunk first": ([corrupt[-1], *corrupt[:-1]], "sha256 mismatch"),
             "incomplete": (incomplete[:-1], "expired incomplete")}
    seen = []
    for what, (parts, says) in cases.items():
        a.publish([c.encode() for c in parts])
        nonce = parse_update_transfer_id(parts[0].transfer_id)
        assert nonce is not None
        reply = a.wait_reply(nonce[1])
        assert not reply.accepted and reply.reason.startswith("transfer: "), (what, reply)
        assert says in reply.reason, (what, reply.reason)
        seen.append(f"{what} → {reply.reason[:60]}…")
    scenario.observe("replies: " + "; ".join(seen))
    updates = good_round(devs, 1, model_file)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    assert a.replies == [], a.replies  # one answer per transfer, not one per chunk
    (line,) = agg.history()
    assert line["rejections"] == {"transfer": 3}, line["rejections"]
    scenario.observe(check_federation(agg.state_dir, model_file, 1, accepted=[
        (1, u.client_id) for u in updates]))
    scenario.observe("aggregator exit 0")
