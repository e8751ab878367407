"""The aggregator service against a real Mosquitto, driven by scripted clients.

The scripted :class:`Device` speaks the wire protocol directly through
MqttTransport (presence, round, update chunks, reply); the model file is a small
``mlp`` exported once per session in a subprocess (so TensorFlow never loads here).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from update_kit import fedavg, make_update

from aggregator.config import AggregatorConfig, check
from aggregator.modelfile import ModelFile, load_model_file
from aggregator.service import AggregatorService
from aggregator.store import AggregatorStore
from edge_client.protocol import (
    Presence,
    Reply,
    Round,
    Tensor,
    Topics,
    Update,
    Weights,
    is_clear,
)
from edge_client.quantize import dequantize_update
from edge_client.transfer import Reassembler, split
from edge_client.transport import BrokerConfig, Message, MqttTransport
from tools.runtime.broker import MosquittoBroker

pytestmark = pytest.mark.broker

T = TypeVar("T")
Arrays = dict[str, npt.NDArray[Any]]
MAX_PAYLOAD = 2048  # small, so every update and the weights travel in several chunks
FEDERATION = "ward7"


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trainable mlp (8 inputs, 3 classes, ~900 weights), exported in a subprocess."""
    path = tmp_path_factory.mktemp("model") / "mlp.tflite"
    subprocess.run([sys.executable, "-m", "tools", "export", "--model", "mlp", "--input-shape",
                    "8", "--classes", "3", "--batch-size", "8", "--out", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def model_file(model_path: Path) -> ModelFile:
    return load_model_file(model_path)


def wait_until(probe: Callable[[], T | None], pump: Callable[[float], None],
               timeout: float, what: str) -> T:
    """Call ``pump`` (which blocks up to its argument) until ``probe`` returns a value."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pump(min(left, 0.5))
    return found


class Device:
    """A scripted client: presence, rounds and replies, update chunks; no training."""

    def __init__(self, url: str, topics: Topics, client_id: str, samples: int = 100) -> None:
        self.client_id, self.topics = client_id, topics
        self.t = MqttTransport(BrokerConfig(url=url, client_id=f"{topics.prefix}-{client_id}",
                                            durable=False)).start(wait=10)
        self.t.subscribe(topics.round())
        self.t.subscribe(topics.reply(client_id))
        self.rounds: dict[int, Round] = {}
        self.replies: list[Reply] = []
        presence = Presence(client_id, True, samples, "scripted", "1", "test", time.time())
        self.t.publish(topics.presence(client_id), presence.encode(), retain=True)

    def pump(self, timeout: float) -> None:
        message = self.t.get(timeout)
        if message is None or is_clear(message.payload):
            return
        if message.topic == self.topics.round():
            r = Round.decode(message.payload)
            self.rounds[r.round_id] = r  # a later one (extended deadline) replaces it
        else:
            self.replies.append(Reply.decode(message.payload))

    def wait_round(self, round_id: int, timeout: float = 20) -> Round:
        return wait_until(lambda: self.rounds.get(round_id), self.pump, timeout,
                          f"round {round_id} at {self.client_id}")

    def send(self, update: Update, topic_client: str | None = None,
             max_payload: int = MAX_PAYLOAD) -> None:
        """Publish ``update`` in chunks under a fresh transfer id (as a re-send does too)."""
        tid = f"u-{update.round_id}-{update.nonce.hex()}-{uuid.uuid4().hex[:6]}"
        topic = self.topics.update(topic_client or self.client_id)
        for chunk in split(update.encode(), tid, max_payload=max_payload):
            self.t.publish(topic, chunk)

    def wait_reply(self, nonce: bytes, timeout: float = 20) -> Reply:
        def probe() -> Reply | None:
            for i, reply in enumerate(self.replies):
                if reply.nonce == nonce:
                    return self.replies.pop(i)
            return None
        return wait_until(probe, self.pump, timeout, f"a reply to {self.client_id}")

    def close(self) -> None:
        self.t.stop()






def retained(url: str, topic_filter: str) -> list[Message]:
    """Every retained message under ``topic_filter`` (a sentinel publish marks the end)."""
    sentinel = f"sentinel/{uuid.uuid4().hex}"
    t = MqttTransport(BrokerConfig(url=url, client_id=f"obs-{uuid.uuid4().hex[:8]}",
                                   durable=False)).start(wait=10)
    try:
        t.subscribe(sentinel)
        t.subscribe(topic_filter)
        t.publish(sentinel, b"end")
        found: list[Message] = []
        while (message := t.get(10)) is not None and message.topic != sentinel:
            found.append(message)
        assert message is not None, "the sentinel never came back"
        return found
    finally:
        t.stop()


def published_weights(url: str, topics: Topics, version: int) -> Arrays:
    """Reassemble and decode the retained global weights ``version``."""
    reassembler, payload = Reassembler(), None
    for message in retained(url, topics.weights_filter(version)):
        payload = reassembler.accept("aggregator", message.payload, time.time()) or payload
    assert payload is not None, f"weights {version} are not (completely) retained"
    return dequantize_update(Weights.decode(payload).tensors)


@dataclass
class Running:
    service: AggregatorService
    thread: threading.Thread
    stop: threading.Event

    def wait_finished(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service did not finish"


def make_config(model_path: Path, url: str, prefix: str, state_dir: Path,
                **overrides: Any) -> AggregatorConfig:
    values: dict[str, Any] = dict(
        model=model_path, broker=url, federation=FEDERATION, prefix=prefix, rounds=2,
        min_clients=3, round_timeout=20.0, codec="int8", max_payload=MAX_PAYLOAD,
        state_dir=state_dir, client_id=f"agg-{prefix}")
    config = AggregatorConfig(**{**values, **overrides})
    check(config)
    return config


@contextmanager
def running(config: AggregatorConfig, model_file: ModelFile) -> Iterator[Running]:
    """The service in a thread of this process, against ``config.broker``."""
    transport = MqttTransport(config.broker_config()).start(wait=10)
    service = AggregatorService(config, transport, model_file)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield Running(service, thread, stop)
    finally:
        stop.set()
        thread.join(10)
        transport.stop()


@contextmanager
def devices(url: str, topics: Topics, *names: str) -> Iterator[list[Device]]:
    made = [Device(url, topics, name, samples=100 * (i + 1)) for i, name in enumerate(names)]
    try:
        yield made
    finally:
        for d in made:
            d.close()


def play_round(devs: list[Device], round_id: int, model_file: ModelFile,
               samples: dict[str, int]) -> list[Update]:
    """Every device answers round ``round_id``, one after the other; all must be accepted."""
    updates = []
    for d in devs:
        u = make_update(d.wait_round(round_id), d.client_id, samples[d.client_id], model_file)
        d.send(u)
        reply = d.wait_reply(u.nonce)
        assert reply.accepted and reply.round_id == round_id, reply
        updates.append(u)
    return updates


SAMPLES = {"dev-a": 120, "dev-b": 30, "dev-c": 350}


@pytest.mark.parametrize(("codec", "mqtt_version"), [("int8", "5"), ("fp32", "3.1.1")])
def test_full_run_publishes_the_weighted_mean_and_writes_history(
        broker: MosquittoBroker, namespace: str, model_path: Path, model_file: ModelFile,
        tmp_path: Path, codec: str, mqtt_version: str) -> None:
    config = make_config(model_path, broker.url, namespace, tmp_path / "state", codec=codec,
                         mqtt_version=mqtt_version)
    topics = config.topics()
    with running(config, model_file) as run, devices(broker.url, topics, *SAMPLES) as devs:
        first = play_round(devs, 1, model_file, SAMPLES)
        second = play_round(devs, 2, model_file, SAMPLES)
        run.wait_finished()
    expected = fedavg(fedavg(model_file.initial_weights, first), second)
    got = published_weights(broker.url, topics, 2)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)
    assert retained(broker.url, topics.weights_filter(0)) == []  # older than current - 1
    history = run.service.store.history()
    assert [(h["round"], h["outcome"], h["version"]) for h in history] == [
        (1, "aggregated", 1), (2, "aggregated", 2)]
    for h in history:
        assert h["participants"] == sorted(SAMPLES) and h["samples"] == sum(SAMPLES.values())
        assert h["metrics"]["loss"] == pytest.approx(
            sum(n * n / 1000 for n in SAMPLES.values()) / sum(SAMPLES.values()))
        assert h["bytes_in"] > 0 and h["bytes_out"] > 0 and h["rejections"] == {}
    assert run.service.metrics.value("fedge_weights_version") == 2
    assert run.service.metrics.value("fedge_updates_accepted_total") == 6


def test_straggler_does_not_stall_the_round_past_its_deadline(
        broker: MosquittoBroker, namespace: str, model_path: Path, model_file: ModelFile,
        tmp_path: Path) -> None:
    config = make_config(model_path, broker.url, namespace, tmp_path / "state", rounds=1,
                         min_clients=2, min_available=3, round_timeout=2.0)
    topics = config.topics()
    with running(config, model_file) as run, devices(broker.url, topics, *SAMPLES) as devs:
        announced = devs[0].wait_round(1)
        assert announced.selected == tuple(sorted(SAMPLES))
        play_round(devs[:2], 1, model_file, SAMPLES)  # dev-c never answers
        run.wait_finished()
    (line,) = run.service.store.history()
    assert line["outcome"] == "aggregated" and line["participants"] == ["dev-a", "dev-b"]
    closed = line["closed_at"] + 0.001  # history rounds to milliseconds
    assert announced.deadline <= closed < announced.deadline + config.round_timeout


def test_quorum_not_met_extends_once_then_skips(
        broker: MosquittoBroker, namespace: str, model_path: Path, model_file: ModelFile,
        tmp_path: Path) -> None:
    config = make_config(model_path, broker.url, namespace, tmp_path / "state", rounds=1,
                         min_clients=2, round_timeout=1.5)
    topics = config.topics()
    with running(config, model_file) as run, devices(broker.url, topics, "dev-a",
                                                      "dev-b") as devs:
        first = devs[0].wait_round(1)
        play_round(devs[:1], 1, model_file, SAMPLES)
        extended = wait_until(lambda: r if (r := devs[0].rounds[1]).deadline != first.deadline
                              else None, devs[0].pump, 10, "the extended deadline")
        assert extended.deadline == pytest.approx(first.deadline + config.round_timeout)
        run.wait_finished()
    (line,) = run.service.store.history()
    assert (line["outcome"], line["participants"], line["version"]) == ("skipped", ["dev-a"], 0)
    assert line["closed_at"] + 0.001 >= extended.deadline  # history rounds to milliseconds
    assert run.service.model.version == 0


def forged(name: str, values: npt.NDArray[Any]) -> Tensor:
    """An fp32 tensor built without the protocol's checks (e.g. holding NaN)."""
    tensor = object.__new__(Tensor)
    fields = dict(name=name, codec="fp32", dtype="float32", shape=values.shape, scales=b"",
                  data=values.astype("<f4").tobytes())
    for key, value in fields.items():
        object.__setattr__(tensor, key, value)
    return tensor


def poisoned(r: Round, good: Update, model_file: ModelFile) -> dict[str, Update]:
    """Reason code → an update from dev-a that must be rejected with it."""
    nan = tuple(forged(t.name, np.full(t.shape, np.nan)) for t in model_file.spec)
    huge_scales = tuple(replace(t, scales=np.full(t.channels, 3e38, "<f4").tobytes())
                        for t in good.tensors)
    kernel = next(t for t in model_file.spec if len(t.shape) == 2)
    return {
        "malformed": replace(good, codec="fp32", tensors=nan, nonce=b"nan-0001"),
        "inf": replace(good, tensors=huge_scales, nonce=b"inf-0001"),
        "shape": make_update(r, "dev-a", 10, model_file, salt="shape",
                             shapes={kernel.name: (kernel.shape[0], kernel.shape[1] + 1)}),
        "norm": make_update(r, "dev-a", 10, model_file, scale=100.0, salt="norm"),
        "wrong_round": replace(good, round_id=7, nonce=b"round-07"),
        "model_hash": replace(good, model_sha256="0" * 64, nonce=b"model-00"),
        "federation": replace(good, federation="other", nonce=b"federat0"),
        "codec": make_update(r, "dev-a", 10, model_file, codec="fp16", salt="codec"),
    }


def test_poisoned_updates_are_rejected_counted_and_change_nothing(
        broker: MosquittoBroker, namespace: str, model_path: Path, model_file: ModelFile,
        tmp_path: Path) -> None:
    config = make_config(model_path, broker.url, namespace, tmp_path / "state", rounds=1,
                         max_update_norm=10.0, max_num_samples=1000)
    topics = config.topics()
    with running(config, model_file) as run, devices(broker.url, topics, *SAMPLES) as devs:
        a = devs[0]
        r = a.wait_round(1)
        good = make_update(r, "dev-a", SAMPLES["dev-a"], model_file)
        a.t.publish(topics.update("dev-a"), b"\xff garbage, not a chunk")
        for code, bad in poisoned(r, good, model_file).items():
            a.send(bad)
            reply = a.wait_reply(bad.nonce)
            assert not reply.accepted and reply.reason.startswith(f"{code}: "), (code, reply)
        from_b = make_update(r, "dev-b", SAMPLES["dev-b"], model_file)
        a.send(from_b, topic_client="dev-a")  # dev-a publishes dev-b's update
        reply = a.wait_reply(from_b.nonce)
        assert not reply.accepted and reply.reason.startswith("client_id: ")
        assert reply.client_id == "dev-a"
        assert run.service.state.accepted == frozenset()
        updates = play_round(devs, 1, model_file, SAMPLES)
        run.wait_finished()
    expected = fedavg(model_file.initial_weights, updates)
    got = published_weights(broker.url, topics, 1)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)
    (line,) = run.service.store.history()
    assert line["participants"] == sorted(SAMPLES) and line["samples"] == sum(SAMPLES.values())
    codes = ["malformed", "inf", "shape", "norm", "wrong_round", "model_hash",
             "federation", "codec", "client_id"]
    assert line["rejections"] == {code: 2 if code == "malformed" else 1 for code in codes}
    metric = run.service.metrics.value
    assert metric("fedge_updates_rejected_total", {"reason": "malformed"}) == 2
    assert metric("fedge_updates_rejected_total", {"reason": "norm"}) == 1
    assert metric("fedge_updates_accepted_total") == 3


def test_a_resent_update_is_answered_accepted_and_counted_once(
        broker: MosquittoBroker, namespace: str, model_path: Path, model_file: ModelFile,
        tmp_path: Path) -> None:
    config = make_config(model_path, broker.url, namespace, tmp_path / "state")
    topics = config.topics()
    with running(config, model_file) as run, devices(broker.url, topics, *SAMPLES) as devs:
        a = devs[0]
        first = make_update(a.wait_round(1), "dev-a", SAMPLES["dev-a"], model_file)
        for expected_reason in ("", "already accepted"):
            a.send(first)
            reply = a.wait_reply(first.nonce)
            assert reply.accepted and reply.reason == expected_reason
        other = make_update(a.rounds[1], "dev-a", SAMPLES["dev-a"], model_file, salt="again")
        a.send(other)
        assert a.wait_reply(other.nonce).reason.startswith("duplicate: ")
        play_round(devs[1:], 1, model_file, SAMPLES)
        a.wait_round(2)
        a.send(first)  # its round closed meanwhile: still recognised by its nonce
        assert a.wait_reply(first.nonce).reason == "already accepted"
        (line,) = run.service.store.history()
        assert line["participants"] == sorted(SAMPLES) and line["samples"] == sum(SAMPLES.values())
        assert run.service.metrics.value("fedge_updates_accepted_total") == 3


def aggregator_cmd(config: AggregatorConfig) -> list[str]:
    """``python -m aggregator`` with the flags that reproduce ``config``."""
    flags = dict(model=config.model, broker=config.broker, federation=config.federation,
                 prefix=config.prefix, rounds=config.rounds, min_clients=config.min_clients,
                 round_timeout=config.round_timeout, codec=config.codec,
                 max_payload=config.max_payload, state_dir=config.state_dir,
                 client_id=config.client_id)
    return [sys.executable, "-m", "aggregator", *(
        part for name, value in flags.items() for part in (f"--{name.replace('_', '-')}",
                                                            str(value)))]


def reference_run(broker: MosquittoBroker, config: AggregatorConfig,
                  model_file: ModelFile) -> bytes:
    """Final global weights (wire bytes) of an uninterrupted in-process run, same updates."""
    with running(config, model_file) as run, devices(broker.url, config.topics(),
                                                      *SAMPLES) as devs:
        for round_id in (1, 2):
            play_round(devs, round_id, model_file, SAMPLES)
        run.wait_finished()
    saved = run.service.store.checkpoint(2)
    assert saved is not None
    return saved[0]


def test_kill_9_mid_round_then_restart_gives_the_uninterrupted_result(
        durable_broker: MosquittoBroker, broker: MosquittoBroker, namespace: str,
        model_path: Path, model_file: ModelFile, tmp_path: Path) -> None:
    config = make_config(model_path, durable_broker.url, namespace, tmp_path / "crash")
    log = (tmp_path / "aggregator.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(aggregator_cmd(config), stdout=log, stderr=log)

    process = start()
    try:
        with devices(durable_broker.url, config.topics(), *SAMPLES) as (a, b, c):
            updates = {d.client_id: make_update(d.wait_round(1), d.client_id,
                                                SAMPLES[d.client_id], model_file)
                       for d in (a, b, c)}
            a.send(updates["dev-a"])
            assert a.wait_reply(updates["dev-a"].nonce).accepted  # stored before this reply
            b.send(updates["dev-b"])
            process.kill()  # SIGKILL, maybe while dev-b's update is being stored
            process.wait(10)
            process = start()
            b.send(updates["dev-b"])  # no reply came: the client re-sends, same nonce
            reply = b.wait_reply(updates["dev-b"].nonce)
            assert reply.accepted and reply.reason in ("", "already accepted")
            c.send(updates["dev-c"])
            assert c.wait_reply(updates["dev-c"].nonce).accepted
            play_round([a, b, c], 2, model_file, SAMPLES)
            assert process.wait(30) == 0
    finally:
        process.kill()
        log.close()
    history = AggregatorStore(config.state_dir).history()
    assert [(h["round"], h["participants"], h["samples"]) for h in history] == [
        (r, sorted(SAMPLES), sum(SAMPLES.values())) for r in (1, 2)]
    saved = AggregatorStore(config.state_dir).checkpoint(2)
    assert saved is not None
    reference = make_config(model_path, broker.url, namespace, tmp_path / "reference")
    assert saved[0] == reference_run(broker, reference, model_file)  # bit-identical


def test_help_and_a_bad_flag_value(tmp_path: Path, model_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "aggregator", "--help"], capture_output=True,
                           text=True, check=True)
    assert "--max-update-norm" in shown.stdout and "default 1000" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "aggregator", "--model", str(model_path),
                          "--min-clients", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--min-clients" in bad.stderr and "got 0" in bad.stderr
