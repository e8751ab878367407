"""Resource caps of the aggregator's update intake: flags, defaults, and refusal under load.

The caps (``--max-message-bytes``, ``--max-transfer-bytes``, ``--max-transfers``,
``--max-transfers-per-client``, ``--max-buffered-bytes``, ``--transfer-timeout``) bound
the memory that incomplete update transfers may hold. A chunk that would break one is
refused when it arrives, before anything of its transfer is stored (``transfer``), unless
another transfer may make room (tests/reliability/test_flood_faults.py); when none may, the
refusal is the temporary ``busy``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from packet_kit import publish_streamed
from reliability.kit import (
    AggregatorFactory,
    Scenario,
    ScriptedDevice,
    check_federation,
)
from update_kit import make_update

from aggregator import intake
from aggregator.__main__ import build_parser
from aggregator.config import build_config
from aggregator.intake import Intake, IntakeLimits
from aggregator.modelfile import ModelFile
from edge_client.errors import ConfigError
from edge_client.protocol import Chunk, Reply
from edge_client.transfer import ReassemblyLimits, split
from tools.runtime.broker import MosquittoBroker

MiB = 1024 * 1024
SAMPLES = {"dev-a": 120, "dev-b": 30, "dev-c": 350}


def config_of(*flags: str, model: Path) -> IntakeLimits:
    args = build_parser().parse_args(["--model", str(model), *flags])
    return build_config(args, env={}).limits()


def test_caps_come_from_flags_and_reach_the_reassembler(model_path: Path, tmp_path: Path
                                                         ) -> None:
    limits = config_of("--max-message-bytes", "16384", "--max-transfer-bytes", "70000",
                       "--max-transfers", "3", "--max-transfers-per-client", "2",
                       "--max-buffered-bytes", "100000", "--transfer-timeout", "2.5",
                       model=model_path)
    service_default = ReassemblyLimits(max_transfer_bytes=67604, timeout=30.0)
    taken = Intake("int8", service_default, limits)
    caps = taken.reassembler.limits
    assert (caps.max_transfer_bytes, caps.max_transfers, caps.max_transfers_per_sender,
            caps.max_buffered_bytes, caps.timeout) == (70000, 3, 2, 100000, 2.5)
    assert taken.max_message_bytes == 16384


def test_defaults_keep_the_model_bound_and_the_service_timeout(model_path: Path,
                                                               tmp_path: Path) -> None:
    service_default = ReassemblyLimits(max_transfer_bytes=67604, timeout=30.0)
    taken = Intake("int8", service_default, config_of(model=model_path))
    caps = taken.reassembler.limits
    assert (caps.max_transfer_bytes, caps.max_transfers, caps.max_transfers_per_sender,
            caps.max_buffered_bytes, caps.timeout) == (67604, 4096, 4, 256 * MiB, 30.0)
    assert taken.max_message_bytes == 8 * MiB


@pytest.mark.parametrize(("flags", "named"), [
    (["--max-transfers", "0"], "--max-transfers"),
    (["--max-transfers-per-client", "-1"], "--max-transfers-per-client"),
    (["--max-message-bytes", "100"], "--max-message-bytes"),
    (["--transfer-timeout", "0"], "--transfer-timeout"),
    (["--max-transfer-bytes", "5000", "--max-buffered-bytes", "4000"], "--max-buffered-bytes"),
])
def test_a_bad_cap_is_refused_naming_its_flag(model_path: Path, flags: list[str],
                                              named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config_of(*flags, model=model_path)


@pytest.mark.parametrize("transfer_id", [
    "u-9999999999999999-" + "ab" * 8, "u-9007199254740993-" + "ab" * 8])
def test_a_transfer_id_naming_a_round_a_reply_cannot_carry_gets_no_addressee(
        transfer_id: str) -> None:
    """Such a garbage transfer used to make the reply raise (an 'unexpected error')."""
    assert intake.addressee("dev-a", None, transfer_id) is None
    to = intake.addressee("dev-a", None, "u-9007199254740992-" + "ab" * 8)
    assert to is not None
    Reply(federation="f", round_id=to.round_id, client_id=to.client_id, nonce=to.nonce,
          accepted=False, reason="malformed: x")  # the largest round id still fits a reply


def partial(payload_size: int, nonce: bytes, pieces: int = 10) -> list[bytes]:
    """The chunks of a garbage transfer of ``payload_size`` bytes, ``pieces`` of them."""
    payload = hashlib.sha256(nonce).digest() * (payload_size // 32 + 1)
    room = payload_size // pieces + 1
    return split(payload[:payload_size], f"u-1-{nonce.hex()}", max_payload=room + 200)


def declaring(total_size: int, nonce: bytes) -> bytes:
    """One chunk (the only one) of a transfer that claims ``total_size`` bytes."""
    return Chunk(f"u-1-{nonce.hex()}", 0, 1, total_size, "0" * 64, b"x").encode()


@pytest.mark.broker
@pytest.mark.fault(
    name="oversized and excess transfers (resource caps)",
    injected="with --max-transfer-bytes 65536 --max-buffered-bytes 100000 --max-transfers 3 "
             "--max-transfers-per-client 2 --max-message-bytes 16384: chunks declaring 1 TiB "
             "and 60 MiB; two open transfers of 40,000 B (dev-a, dev-b); one overflowing the "
             "buffer (dev-c); a 3rd open one (dev-c); a 4th (dev-a); a 20 kB message",
    expected="too large: refused on arrival with reason 'transfer'; over a full cap while "
             "every open transfer is a selected device's only one: refused with the "
             "temporary reason 'busy' (replied when the transfer id names round and nonce); "
             "all counted; RSS does not grow by the declared sizes; after the held transfers "
             "complete, the round aggregates the good updates")
def test_oversized_and_excess_transfers_are_refused_before_allocation(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        model_file: ModelFile, scenario: Scenario) -> None:
    agg = aggregator(rounds=1, min_clients=3, round_timeout=10, codec="int8",
                     max_transfer_bytes=65536, max_buffered_bytes=100_000, max_transfers=3,
                     max_transfers_per_client=2, max_message_bytes=16384)
    a, b, c = devs = [devices(name, n) for name, n in SAMPLES.items()]
    r = a.wait_round(1)
    before = agg.rss()

    def refused(device: ScriptedDevice, payload: bytes, nonce: bytes, code: str,
                text: str) -> str:
        device.publish([payload])
        reply = device.wait_reply(nonce)
        assert not reply.accepted and reply.reason.startswith(f"{code}: "), reply
        assert text in reply.reason, reply
        return re.sub(r"u-1-[0-9a-f]+ from ", "", reply.reason)

    seen = [refused(a, declaring(2**40, b"tebibyte"), b"tebibyte", "transfer",
                    "transfer too large"),
            refused(a, declaring(60 * MiB, b"sixtymib"), b"sixtymib", "transfer",
                    "transfer too large")]
    held = {b"a-held-1": (a, partial(40_000, b"a-held-1")),
            b"b-held-1": (b, partial(40_000, b"b-held-1"))}
    for sender, chunks in held.values():
        sender.publish(chunks[:1])  # 2 open transfers, 80,000 B reserved
    seen.append(refused(c, partial(40_000, b"c-over-1")[-1], b"c-over-1", "busy",
                        "buffer full"))
    held[b"c-held-1"] = (c, partial(1000, b"c-held-1", pieces=2))
    c.publish(held[b"c-held-1"][1][:1])  # the 3rd open transfer (81,000 B reserved)
    seen.append(refused(a, partial(1000, b"a-fourth", pieces=2)[-1], b"a-fourth", "busy",
                        "too many transfers"))
    c.publish([os.urandom(20_000)])
    agg.wait_metric("fedge_updates_rejected_total", 3, reason="transfer")
    grown = agg.rss() - before
    scenario.observe("refused: " + " | ".join(seen)
                     + " | a 20000-byte message, undecoded")
    scenario.observe(f"RSS grew {grown / MiB:.1f} MiB while chunks declared >1 TiB")
    assert grown < 16 * MiB, f"RSS grew by {grown} bytes"
    assert agg.alive
    for nonce, (sender, chunks) in held.items():  # complete them: garbage, not updates
        sender.publish(chunks[1:])
        assert sender.wait_reply(nonce).reason.startswith("malformed: ")
    updates = []
    for d in devs:
        u = make_update(r, d.client_id, SAMPLES[d.client_id], model_file)
        d.send(u)
        assert d.wait_reply(u.nonce).accepted
        updates.append(u)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    assert line["rejections"] == {"transfer": 3, "busy": 2, "malformed": 3}, line
    scenario.observe("after the held transfers completed (3 × malformed), the good updates "
                     "were accepted; " + check_federation(
                         agg.state_dir, model_file, 1,
                         accepted=[(1, u.client_id) for u in updates]))
    scenario.observe("aggregator exit 0")


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.fault(
    name="a 200 MB message on update/+",
    injected="one raw MQTT PUBLISH of 200,000,000 bytes on update/dev-a to the broker "
             "tools/runtime/broker.py starts (the demo's and the tests'), then a good update",
    expected="the broker disconnects the sender after the packet's header (max_packet_size "
             "= the largest chunk + 128 KiB); the aggregator never receives it and its RSS "
             "stays flat; the good update is accepted and the round aggregates")
def test_a_200_mb_message_is_refused_by_the_broker_before_the_aggregator_sees_it(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        durable_broker: MosquittoBroker, model_file: ModelFile, scenario: Scenario) -> None:
    """It used to be read whole by the broker and the aggregator (RSS 711 MB; issue 14.10)."""
    agg = aggregator(rounds=1, min_clients=1, round_timeout=20, codec="int8")
    device = devices("dev-a", 120)
    r = device.wait_round(1)
    before = agg.rss()
    sent = publish_streamed(durable_broker.port, device.topics.update("dev-a"), 200_000_000)
    scenario.observe(f"the broker hung up after {sent / MiB:.1f} MiB of 190.7 MiB")
    assert sent < 32 * MiB, f"the broker took {sent} bytes"
    update = make_update(r, "dev-a", 120, model_file)
    device.send(update)
    assert device.wait_reply(update.nonce).accepted
    grown = agg.rss() - before
    scenario.observe(f"aggregator RSS grew {grown / MiB:.1f} MiB; the good update accepted")
    assert grown < 16 * MiB, f"RSS grew by {grown} bytes"
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    assert line["rejections"] == {} and line["participants"] == ["dev-a"], line
    scenario.observe("round aggregated, no rejection (nothing arrived); aggregator exit 0")
