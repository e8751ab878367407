"""Security end to end: a federation made by ``fedge provision``, on a real Mosquitto.

Every test provisions its own CA, keys and broker config (``--port`` a free port,
``--bind 127.0.0.1``) and starts Mosquitto with it. What the broker answers is
observed on the wire with raw paho clients (:class:`Wire`); the aggregator is the
real service, devices are the real client (process or in-process) or scripted.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import ipaddress
import logging
import queue
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from client_kit import ScriptedAggregator, linear_data
from import_block import blocked_env
from paho.mqtt.enums import CallbackAPIVersion
from update_kit import transfer_id

from aggregator.config import AggregatorConfig, check
from aggregator.modelfile import ModelFile, load_model_file
from aggregator.service import AggregatorService
from edge_client.client import ClientSettings, EdgeClient
from edge_client.model import TrainableModel
from edge_client.protocol import (
    MAX_CHUNK_BYTES,
    Hyperparameters,
    Manifest,
    Presence,
    Reply,
    Round,
    Topics,
    Update,
    Weights,
)
from edge_client.quantize import quantize, quantize_update
from edge_client.signing import SigningKey, load_signing_key, load_trusted_keys
from edge_client.state import StateDir
from edge_client.training import LocalSplit
from edge_client.transfer import Reassembler, split
from edge_client.transport import BrokerConfig, MqttTransport
from tools import provision
from tools.runtime.broker import MosquittoBroker, free_port, mosquitto_available
from tools.runtime.fleet import Fleet

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[1]
FEDERATION = "cardio"
NOT_AUTHORIZED = 135

class TlsFiles(TypedDict):
    ca: Path
    cert: Path
    key: Path


@dataclasses.dataclass
class Federation:
    """A provisioned folder and the Mosquitto started with its config."""

    out: Path
    broker: MosquittoBroker
    topics: Topics

    def party(self, who: str) -> Path:
        return self.out / ("aggregator" if who == "aggregator" else f"devices/{who}")

    def tls(self, who: str) -> TlsFiles:
        folder, stem = self.party(who), "aggregator" if who == "aggregator" else "device"
        return {"ca": folder / "ca.pem", "cert": folder / f"{stem}.pem",
                "key": folder / f"{stem}.key"}

    def transport(self, who: str, **kw: Any) -> MqttTransport:
        return MqttTransport(BrokerConfig(url=self.broker.url, client_id=who, **self.tls(who),
                                          **kw)).start(wait=10)


@contextmanager
def provisioned(devices: str = "dev-1,dev-2", *, passwords: bool = False, **plan: Any
                ) -> Iterator[Federation]:
    """``fedge provision`` into a folder the broker's user can reach, and its Mosquitto."""
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    out = Path(tempfile.mkdtemp(prefix="fedge-security-")) / "fed"  # not under 0700 pytest dirs
    out.parent.chmod(0o755)  # Mosquitto drops to user mosquitto: it must reach broker/
    port = free_port()
    provision.provision(provision.Plan(
        out=out, devices=tuple(devices.split(",")), federation=FEDERATION, port=port,
        bind="127.0.0.1", passwords=passwords, **plan))
    broker = MosquittoBroker(config_file=out / "broker" / "mosquitto.conf", port=port, tls=True)
    try:
        broker.start()
        yield Federation(out, broker, Topics(FEDERATION))
    finally:
        broker.close()
        shutil.rmtree(out.parent, ignore_errors=True)


class Wire:
    """A raw paho client, to see exactly what the broker answers."""

    def __init__(self, port: int, *, ca: Path | None, cert: Path | None = None,
                 key: Path | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        self.port = port
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"wire-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5,
                                  reconnect_on_failure=False)  # one connection each
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                                keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.outcome: queue.Queue[str] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: dict[int, int] = {}
        self._cond = threading.Condition()
        c = self.client
        c.on_connect = lambda _c, _u, _f, rc, _p: self.outcome.put(
            "connected" if not rc.is_failure else f"refused: {rc} ({rc.value})")
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self.outcome.put(f"dropped: {rc}")
        c.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid, rc.value)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid, rcs[0].value)
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _ack(self, mid: int, value: int) -> None:
        with self._cond:
            self._acks[mid] = value
            self._cond.notify_all()

    def connect(self, timeout: float = 10) -> str:
        """``connected``, ``refused: …`` (CONNACK), ``dropped: …`` or ``failed: …`` (TLS)."""
        try:
            self.client.connect("127.0.0.1", self.port)
        except (OSError, ssl.SSLError) as e:
            return f"failed: {e}"
        self.client.loop_start()
        return self.outcome.get(timeout=timeout)

    def _wait(self, mid: int | None) -> int:
        assert mid is not None
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._acks, 10), "no acknowledgement"
            return self._acks[mid]

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 publish; returns the PUBACK reason code (0 = accepted)."""
        return self._wait(self.client.publish(topic, payload, qos=1).mid)

    def subscribe(self, topic_filter: str) -> None:
        assert self._wait(self.client.subscribe(topic_filter, qos=1)[1]) == 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wire(fed: Federation, who: str) -> Wire:
    w = Wire(fed.broker.port, **fed.tls(who))
    assert w.connect() == "connected"
    return w


# -- mutual TLS and the ACL -----------------------------------------------------
@pytest.mark.parametrize(("topic_of", "reader"), [
    pytest.param(lambda t: t.update("dev-2"), "aggregator", id="update of dev-2"),
    pytest.param(lambda t: t.presence("dev-2"), "aggregator", id="presence of dev-2"),
    pytest.param(lambda t: t.stats("dev-2"), "aggregator", id="stats of dev-2"),
    pytest.param(lambda t: t.reply("dev-2"), "dev-2", id="reply to dev-2"),
    pytest.param(lambda t: t.manifest(), "dev-2", id="manifest"),
])
def test_a_device_cannot_publish_as_another_device_or_as_the_aggregator(
        topic_of: Callable[[Topics], str], reader: str) -> None:
    with provisioned() as fed:
        topic = topic_of(fed.topics)
        observer = wire(fed, reader)
        observer.subscribe(topic)
        dev1 = wire(fed, "dev-1")
        assert dev1.publish(topic, b"forged") == NOT_AUTHORIZED
        # The broker handled the refused publish before this one (published afterwards by
        # the topic's rightful owner), so it would have been delivered first.
        owner = wire(fed, "aggregator" if reader == "dev-2" else "dev-2")
        assert owner.publish(topic, b"genuine") == 0
        assert observer.messages.get(timeout=10) == (topic, b"genuine")
        for w in (observer, dev1, owner):
            w.close()


def test_the_provisioned_aggregator_may_publish_everything_the_service_publishes() -> None:
    """The status topic was missing from the ACL: every status publish was refused (PUBACK
    135) and Mosquitto 2.0.11 over TLS then drops the connection, so the provisioned
    aggregator reconnected after each status change and its replies came late."""
    with provisioned() as fed:
        t = fed.topics
        aggregator = wire(fed, "aggregator")
        aggregator.subscribe(t.status())  # `fedge status` with the aggregator's identity
        for topic in (t.manifest(), t.round(), t.status(), t.reply("dev-1"),
                      f"{t.base}/model/0/0", f"{t.base}/weights/1/0"):
            code = aggregator.publish(topic, b"x")  # 16: accepted, no matching subscribers
            assert code in (0, 16), (topic, code)
        assert aggregator.messages.get(timeout=10) == (t.status(), b"x")
        aggregator.close()


def test_anonymous_and_foreign_certificates_are_refused_at_connect() -> None:
    with provisioned() as fed, provisioned() as other:
        ours = fed.tls("dev-1")
        wire(fed, "dev-1").close()  # the control: its own certificate connects
        attempts = {
            "no client certificate": Wire(fed.broker.port, ca=ours["ca"]),
            "another CA's dev-1": Wire(fed.broker.port, ca=ours["ca"],
                                       cert=other.tls("dev-1")["cert"],
                                       key=other.tls("dev-1")["key"]),
            "no TLS at all": Wire(fed.broker.port, ca=None, username="dev-1"),
        }
        for what, attempt in attempts.items():
            outcome = attempt.connect()
            attempt.close()
            assert outcome.startswith(("failed", "dropped")), (what, outcome)
        log = fed.broker.log_path.read_text()
    assert "peer did not return a certificate" in log and "certificate verify failed" in log


def test_password_file_right_password_connects_wrong_one_is_refused() -> None:
    with provisioned(passwords=True) as fed:
        folder = fed.party("dev-1")
        right = (folder / "password").read_text().strip()
        port, ca = fed.broker.port, folder / "ca.pem"
        for user, password in (("dev-1", right), ("dev-1", right[:-1] + "x"),
                               ("dev-2", right), (None, None)):
            attempt = Wire(port, ca=ca, username=user, password=password)
            outcome = attempt.connect()
            attempt.close()
            if password == right and user == "dev-1":
                assert outcome == "connected"
                continue
            assert outcome.startswith("refused") and ("(134)" in outcome or "(135)" in outcome), (
                user, outcome)


# -- the broker's packet bound ----------------------------------------------------
def test_the_provisioned_broker_passes_the_largest_chunk_the_aggregator_takes() -> None:
    """Issue 14, finding 10: the provisioned max_packet_size (1 MiB) cut off chunks the
    aggregator's --max-message-bytes (8 MiB) and the demo broker let through."""
    with provisioned(devices="dev-1") as fed:
        topic = fed.topics.update("dev-1")
        aggregator = wire(fed, "aggregator")
        aggregator.subscribe(topic)
        device = wire(fed, "dev-1")
        payload = bytes(range(256)) * (MAX_CHUNK_BYTES // 256)
        assert device.publish(topic, payload) == 0
        assert aggregator.messages.get(timeout=30) == (topic, payload)
        for w in (aggregator, device):
            w.close()


def test_a_payload_over_provision_max_payload_is_cut_off_at_the_broker() -> None:
    limit = 256 * 1024
    with provisioned(devices="dev-1", max_payload=limit) as fed:
        topic = fed.topics.update("dev-1")
        aggregator = wire(fed, "aggregator")
        aggregator.subscribe(topic)
        device = wire(fed, "dev-1")
        assert device.publish(topic, bytes(limit)) == 0
        assert aggregator.messages.get(timeout=30) == (topic, bytes(limit))
        device.client.publish(topic, bytes(limit + 128 * 1024), qos=1)  # the packet is larger
        assert device.outcome.get(timeout=30).startswith("dropped"), "the broker took it"
        again = wire(fed, "dev-1")
        assert again.publish(topic, b"after") == 0
        assert aggregator.messages.get(timeout=30) == (topic, b"after")  # nothing before it
        for w in (aggregator, device, again):
            w.close()


# -- a signed round over TLS -------------------------------------------------------
@pytest.fixture
def model_path(logreg_file: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "logreg.tflite"
        path.write_bytes(logreg_file)
        yield path


def aggregator_config(fed: Federation, model: Path, state: Path, **kw: Any) -> AggregatorConfig:
    config = AggregatorConfig(
        model=model, broker=fed.broker.url, federation=FEDERATION, codec="int8", state_dir=state,
        signing_key=fed.out / "aggregator" / "signing.key", **fed.tls("aggregator"), **kw)
    check(config)
    return config


@dataclasses.dataclass
class Running:
    service: AggregatorService
    thread: threading.Thread

    def wait_finished(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the aggregator did not finish its rounds"


@contextmanager
def running(config: AggregatorConfig) -> Iterator[Running]:
    """The real aggregator service in a thread, connected with its own certificate."""
    transport = MqttTransport(config.broker_config()).start(wait=10)
    service = AggregatorService(config, transport, load_model_file(config.model or Path()))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield Running(service, thread)
    finally:
        stop.set()
        thread.join(10)
        transport.stop()


def test_a_device_with_its_certificate_takes_part_in_a_signed_round_over_tls(
        model_path: Path, tmp_path: Path) -> None:
    x, y = linear_data(40, seed=4)
    np.savez(tmp_path / "local.npz", x=x, y=y)
    with provisioned(devices="dev-1") as fed:
        config = aggregator_config(fed, model_path, tmp_path / "agg", rounds=1, min_clients=1)
        tls = fed.tls("dev-1")
        with running(config) as run:
            client = subprocess.run(
                [sys.executable, "-m", "edge_client", "--broker", fed.broker.url,
                 "--federation", FEDERATION, "--client-id", "dev-1", "--ca", str(tls["ca"]),
                 "--cert", str(tls["cert"]), "--key", str(tls["key"]), "--verify-key",
                 str(fed.party("dev-1") / "signing.pub"), "--data", str(tmp_path / "local.npz"),
                 "--state-dir", str(tmp_path / "dev"), "--once"],
                cwd=ROOT, capture_output=True, text=True, timeout=120,
                )
            assert client.returncode == 0, client.stderr[-3000:]
            run.wait_finished()
        key_id = load_signing_key(fed.out / "aggregator" / "signing.key").key_id
    assert f"manifests, rounds and replies must be signed by key id {key_id}" in client.stderr
    assert "round 1: update accepted" in client.stderr and "refusing" not in client.stderr
    (line,) = run.service.store.history()
    assert line["participants"] == ["dev-1"] and line["outcome"] == "aggregated"


# -- a forged global model -----------------------------------------------------------
class LogWatch(logging.Handler):
    """Sets :attr:`seen` when a log message containing ``needle`` is emitted."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle, self.seen, self.lines = needle, threading.Event(), list[str]()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.lines.append(record.getMessage())
            self.seen.set()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_global(t: MqttTransport, topics: Topics, model: bytes,
                   weights: dict[str, Any], key: SigningKey) -> Manifest:
    """Model file, weights v0 and the signed manifest, retained, as the aggregator does."""
    for i, chunk in enumerate(split(model, sha256(model))):
        t.publish(topics.model_chunk(sha256(model), i), chunk, retain=True)
    payload = Weights(FEDERATION, 0, tuple(quantize(n, v, "fp32")
                                           for n, v in weights.items())).encode()
    for i, chunk in enumerate(split(payload, "weights-0")):
        t.publish(topics.weights_chunk(0, i), chunk, retain=True)
    manifest = key.sign(Manifest(FEDERATION, sha256(model), len(model), 0, sha256(payload), 1,
                                 "fp32", "unsigned"))
    t.publish(topics.manifest(), manifest.encode(), retain=True)
    return manifest


def announce(t: MqttTransport, topics: Topics, round_id: int, model_sha: str,
             key: SigningKey) -> None:
    t.publish(topics.round(), key.sign(Round(
        federation=FEDERATION, round_id=round_id, weights_version=0, model_sha256=model_sha,
        deadline=time.time() + 60, codec="fp32", fraction=1.0,
        hyperparameters=Hyperparameters(epochs=1, batch_size=8, learning_rate=0.1))).encode(),
        retain=True)


def forge(kind: str, genuine: Manifest, model: bytes) -> tuple[bytes, Manifest]:
    """A model file with one flipped byte and a manifest naming it, forged three ways."""
    tampered = bytearray(model)
    tampered[len(model) // 2] ^= 0x01
    named = dataclasses.replace(genuine, model_sha256=sha256(bytes(tampered)))
    manifest = {"signature kept": named, "unsigned": dataclasses.replace(named, signature=None),
                "another key": SigningKey.generate().sign(named)}[kind]
    return bytes(tampered), manifest


def verifying_client(fed: Federation, tmp_path: Path, *, max_rounds: int
                     ) -> tuple[EdgeClient, threading.Thread, list[int]]:
    """The real client as dev-1 with --verify-key signing.pub, running in a thread."""
    x, y = linear_data(40, seed=6)
    settings = ClientSettings(
        client_id="dev-1", topics=fed.topics, max_rounds=max_rounds, verify=load_trusted_keys(
            fed.party("dev-1") / "signing.pub").verify)
    client = EdgeClient(settings, fed.transport("dev-1", durable=False),
                        StateDir(tmp_path / "dev"), LocalSplit.of(x, y, seed=0),
                        TrainableModel, rng=np.random.default_rng(0))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(client.run(threading.Event())))
    thread.start()
    return client, thread, codes


@pytest.mark.parametrize(("kind", "reason"), [
    ("signature kept", "does not verify"), ("unsigned", "not signed"),
    ("another key", "unknown key id"),
])
def test_a_tampered_global_model_is_refused_and_the_device_keeps_the_old_one(
        kind: str, reason: str, logreg_file: bytes, tmp_path: Path) -> None:
    """Someone holding the aggregator's MQTT identity, but not its signing key, forges."""
    watch = LogWatch("refusing manifest")
    logging.getLogger("edge_client.client").addHandler(watch)
    with provisioned(devices="dev-1") as fed:
        t = fed.transport("aggregator", manual_ack=True, durable=False)
        t.subscribe(fed.topics.update_filter())
        key = load_signing_key(fed.out / "aggregator" / "signing.key")
        agg = ScriptedAggregator(t, fed.topics, logreg_file, {}, signing_key=key)
        genuine = publish_global(t, fed.topics, logreg_file,
                                 TrainableModel(logreg_file).get_weights(), key)
        announce(t, fed.topics, 1, genuine.model_sha256, key)
        client, thread, codes = verifying_client(fed, tmp_path, max_rounds=2)
        try:
            agg.collect(1, timeout=60)
            tampered, forged = forge(kind, genuine, logreg_file)
            for i, chunk in enumerate(split(tampered, forged.model_sha256)):
                t.publish(fed.topics.model_chunk(forged.model_sha256, i), chunk, retain=True)
            t.publish(fed.topics.manifest(), forged.encode(), retain=True)
            assert watch.seen.wait(30), "the forged manifest was not refused"
            announce(t, fed.topics, 2, genuine.model_sha256, key)
            _, second = agg.collect(2, timeout=60)
            thread.join(30)
        finally:
            logging.getLogger("edge_client.client").removeHandler(watch)
            client.t.stop()  # type: ignore[attr-defined]
            t.stop()
    assert codes == [0] and [r for r, ok, _ in client.results if ok] == [1, 2]
    assert (second.round_id, second.model_sha256, second.base_version) == (
        2, genuine.model_sha256, 0)
    assert (tmp_path / "dev" / "model.tflite").read_bytes() == logreg_file
    assert reason in watch.lines[0] and f"keeping model {genuine.model_sha256[:12]}" in (
        watch.lines[0])


def forged_round(round_id: int, model_sha: str) -> Round:
    """A round an attacker would like devices to train: many epochs at a wild rate."""
    return Round(federation=FEDERATION, round_id=round_id, weights_version=0,
                 model_sha256=model_sha, deadline=time.time() + 60, codec="fp32", fraction=1.0,
                 hyperparameters=Hyperparameters(epochs=3, batch_size=8, learning_rate=999.0))


def test_a_verifying_device_refuses_forged_rounds_and_replies_and_trains_the_real_one(
        logreg_file: bytes, tmp_path: Path) -> None:
    """Issue 14 finding 3: with --verify-key, a forged round was trained in full and its id
    marked done, so the real round was skipped; a forged reply would drop a real update."""
    refused = LogWatch("refusing")
    logging.getLogger("edge_client.client").addHandler(refused)
    with provisioned(devices="dev-1") as fed:
        key = load_signing_key(fed.out / "aggregator" / "signing.key")
        t = fed.transport("aggregator", manual_ack=True, durable=False)
        t.subscribe(fed.topics.update_filter())
        genuine = publish_global(t, fed.topics, logreg_file,
                                 TrainableModel(logreg_file).get_weights(), key)
        client, thread, codes = verifying_client(fed, tmp_path, max_rounds=1)
        chunks = Reassembler()

        def next_update(timeout: float) -> Update | None:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                msg = t.get(timeout=0.2)
                if msg is None:
                    continue
                payload = chunks.accept("dev-1", msg.payload, time.time())
                t.ack(msg)
                if payload is not None:
                    return Update.decode(payload)
            return None

        try:
            t.publish(fed.topics.round(), forged_round(1, genuine.model_sha256).encode(),
                      retain=True)
            assert refused.seen.wait(15), "the unsigned round was not refused"
            assert next_update(2.0) is None, "the device trained the forged round"
            real = dataclasses.replace(forged_round(1, genuine.model_sha256), hyperparameters=(
                Hyperparameters(epochs=1, batch_size=8, learning_rate=0.1)))
            t.publish(fed.topics.round(), key.sign(real).encode(), retain=True)
            update = next_update(30.0)
            assert update is not None and update.round_id == 1, "the real round was skipped"
            answer = Reply(federation=FEDERATION, round_id=1, client_id="dev-1",
                           nonce=update.nonce, accepted=False, reason="forged: go away")
            t.publish(fed.topics.reply("dev-1"), answer.encode())
            t.publish(fed.topics.reply("dev-1"),
                      SigningKey.generate().sign(answer).encode())
            end = time.monotonic() + 15
            while len(refused.lines) < 3 and time.monotonic() < end:
                time.sleep(0.05)
            assert len(refused.lines) == 3, refused.lines
            t.publish(fed.topics.reply("dev-1"), key.sign(dataclasses.replace(
                answer, accepted=True, reason="")).encode())
            thread.join(30)
        finally:
            logging.getLogger("edge_client.client").removeHandler(refused)
            client.t.stop()  # type: ignore[attr-defined]
            t.stop()
    assert codes == [0] and client.results == [(1, True, "")]
    assert "round 1" in refused.lines[0] and "not signed" in refused.lines[0]
    assert all("reply" in line for line in refused.lines[1:])
    assert "unknown key id" in refused.lines[-1]


# -- replay and staleness ------------------------------------------------------------
class Device:
    """A scripted device with its own certificate: rounds in, update chunks out, replies."""

    def __init__(self, fed: Federation, client_id: str) -> None:
        self.id, self.topics = client_id, fed.topics
        self.t = fed.transport(client_id, durable=False)
        self.t.subscribe(self.topics.round())
        self.t.subscribe(self.topics.reply(client_id))
        self.rounds: dict[int, Round] = {}
        self.replies: dict[bytes, Reply] = {}
        self.t.publish(self.topics.presence(client_id), Presence(
            client_id, True, 100, "scripted", "1", "test", time.time()).encode(), retain=True)

    def _until(self, probe: Callable[[], Any], what: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while (found := probe()) is None:
            assert time.monotonic() < deadline, f"{self.id}: no {what} within {timeout}s"
            message = self.t.get(0.5)
            if message is None or not message.payload:
                continue
            if message.topic == self.topics.round():
                r = Round.decode(message.payload)
                self.rounds[r.round_id] = r
            else:
                reply = Reply.decode(message.payload)
                self.replies[reply.nonce] = reply
        return found

    def wait_round(self, round_id: int) -> Round:
        return self._until(lambda: self.rounds.get(round_id), f"round {round_id}")  # type: ignore[no-any-return]

    def send(self, update: Update) -> Reply:
        """Publish ``update`` (same bytes every time) under a fresh transfer id; its reply."""
        self.replies.pop(update.nonce, None)
        for chunk in split(update.encode(), transfer_id(update), max_payload=1024):
            self.t.publish(self.topics.update(self.id), chunk)
        return self._until(lambda: self.replies.get(update.nonce), "reply")  # type: ignore[no-any-return]


def make_update(r: Round, client_id: str, samples: int, model: ModelFile) -> Update:
    key = f"{client_id}/{r.round_id}".encode()
    rng = np.random.default_rng(zlib.crc32(key))
    tensors, _ = quantize_update({s.name: rng.normal(0, 0.05, s.shape) for s in model.spec},
                                 r.codec)
    return Update(federation=r.federation, round_id=r.round_id, client_id=client_id,
                  base_version=r.weights_version, model_sha256=r.model_sha256,
                  nonce=hashlib.sha256(key).digest()[:16], num_samples=samples,
                  metrics={"loss": 1.0}, codec=r.codec, tensors=tensors, run_id=r.run_id)


def test_replayed_updates_are_never_counted_twice_and_stale_ones_are_rejected(
        model_path: Path, tmp_path: Path) -> None:
    model = load_model_file(model_path)
    with provisioned(devices="dev-1,dev-2,dev-3") as fed:
        config = aggregator_config(fed, model_path, tmp_path / "agg", rounds=3, min_clients=2,
                                   min_available=3, round_timeout=3.0)
        with running(config) as run:
            devs = [Device(fed, d) for d in ("dev-1", "dev-2", "dev-3")]
            a, b, c = devs
            r1 = a.wait_round(1)
            first = make_update(r1, "dev-1", 100, model)
            captured = make_update(c.wait_round(1), "dev-3", 300, model)  # never delivered
            once = a.send(first)
            assert (once.accepted, once.reason) == (True, "")
            again = a.send(first)  # the same bytes again, same round
            assert (again.accepted, again.reason) == (True, "already accepted")
            assert b.send(make_update(b.wait_round(1), "dev-2", 200, model)).accepted
            r2 = a.wait_round(2)  # round 1 closed at its deadline, without dev-3
            replay = a.send(first)
            assert (replay.accepted, replay.reason, replay.round_id) == (
                True, "already accepted", 1)
            late = c.send(captured)
            assert not late.accepted and late.reason.startswith("late: "), late
            for d in devs:
                assert d.send(make_update(r2, d.id, 10, model)).reason == ""
            c.wait_round(3)
            stale = c.send(captured)
            assert not stale.accepted and stale.reason.startswith("stale: "), stale
            for d in devs:
                assert d.send(make_update(d.wait_round(3), d.id, 10, model)).accepted
            run.wait_finished()
            for d in devs:
                d.t.stop()
    history = run.service.store.history()
    assert [(h["participants"], h["samples"], h["rejections"]) for h in history] == [
        (["dev-1", "dev-2"], 300, {}), (["dev-1", "dev-2", "dev-3"], 30, {"late": 1}),
        (["dev-1", "dev-2", "dev-3"], 30, {"stale": 1})]
    assert run.service.metrics.value("fedge_updates_accepted_total") == 8


# -- misconfiguration ----------------------------------------------------------------
def test_unusable_keys_stop_the_start_with_the_reason(model_path: Path, tmp_path: Path) -> None:
    with provisioned(devices="dev-1") as fed:
        device_key = fed.tls("dev-1")["key"]  # an EC key, not an Ed25519 one
        signing_pub = fed.party("dev-1") / "signing.pub"
        aggregator = subprocess.run(
            [sys.executable, "-m", "aggregator", "--model", str(model_path), "--state-dir",
             str(tmp_path / "agg"), "--signing-key", str(device_key)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        client = [sys.executable, "-m", "edge_client", "--data", str(tmp_path / "none.npz")]
        wrong = subprocess.run([*client, "--verify-key", str(device_key)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        missing = subprocess.run([*client, "--verify-key", str(signing_pub)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60,
                                 env=blocked_env(tmp_path, ("cryptography",)))
    assert aggregator.returncode == 2 and "expected an Ed25519 key" in aggregator.stderr
    assert wrong.returncode == 2 and "no PEM public key" in wrong.stderr, wrong.stderr
    assert missing.returncode == 2, missing.stderr
    assert "--verify-key needs the cryptography package" in missing.stderr


# -- secure by default: an open broker other machines reach ------------------------------
def own_address() -> str | None:
    """A non-loopback IPv4 address of one of this machine's interfaces (asked of the
    kernel, no traffic), or None."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:  # SIOCGIFADDR
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


@pytest.mark.broker
@pytest.mark.slow
def test_on_an_open_broker_of_the_network_both_refuse_to_start_unless_insecure(
        model_path: Path, tmp_path: Path, namespace: str) -> None:
    """Issue 14.11: an anonymous plain-MQTT broker on a network address used to be fine."""
    address = own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    x, y = linear_data(40, seed=0)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    port = free_port()
    with MosquittoBroker(extra_config=f"listener {port} {address}"), \
            Fleet(tmp_path / "logs") as fleet:  # anonymous, plain MQTT, on the network
        url = f"mqtt://{address}:{port}"
        common = ["--broker", url, "--federation", namespace]
        agg = [*common, "--model", str(model_path), "--state-dir", str(tmp_path / "agg"),
               "--rounds", "1", "--min-clients", "1", "--round-timeout", "20"]
        dev = [*common, "--data", str(tmp_path / "data.npz"), "--client-id", "dev-1",
               "--state-dir", str(tmp_path / "dev"), "--max-rounds", "1"]
        refused = [fleet.start("aggregator", "aggregator", agg),
                   fleet.start("device", "edge_client", dev)]
        codes = [child.proc.wait(30) for child in refused]
        logs = [child.log_path.read_text() for child in refused]
        assert codes == [2, 2], logs
        assert (f"fedge-aggregator: error: --broker {url} is not a loopback address and this "
                "aggregator has no TLS (an mqtts:// --broker) and no --signing-key") in logs[0]
        assert (f"fedge-client: error: --broker {url} is not a loopback address and there is "
                "no --verify-key") in logs[1]
        assert all("fedge provision --out DIR" in log and "--insecure" in log for log in logs)
        assert not (tmp_path / "agg").exists() and not (tmp_path / "dev").exists()
        insecure = [fleet.start("aggregator-insecure", "aggregator", [*agg, "--insecure"]),
                    fleet.start("device-insecure", "edge_client", [*dev, "--insecure"])]
        codes = [child.proc.wait(60) for child in insecure]
        logs = [child.log_path.read_text() for child in insecure]
        assert codes == [0, 0], logs
        assert all(f"WARNING {who}: --insecure: --broker {url}" in log
                   for who, log in zip(("aggregator", "edge_client.device"), logs, strict=True))
