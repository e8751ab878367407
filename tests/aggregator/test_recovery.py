"""Crash windows of the service, driven synchronously on the in-memory bus with a fake clock.

A "crash" is an exception the service does not catch (a BaseException) raised from
inside a store write; a new service on the same state directory then carries on.
The end result must be the one of an uninterrupted run, byte for byte.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from membus import MemoryBroker, MemoryTransport

from aggregator.config import AggregatorConfig
from aggregator.modelfile import ModelFile
from aggregator.service import AggregatorService
from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError
from edge_client.model import ModelMetadata
from edge_client.protocol import Presence, Reply, Round, Update, Weights
from edge_client.quantize import dequantize_update, quantize_update
from edge_client.transfer import split
from tools.broker import free_port

CLIENTS = ("a", "b", "c")
WEIGHTS = {"dense/kernel": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3),
           "dense/bias": np.zeros(3, np.float32)}
META = ModelMetadata(kind="trainable", model="toy", task="multiclass", classes=3, batch_size=8,
                     input_shape=(4,), output_shape=(3,), label_encoding="index",
                     optimizer="sgd", learning_rate=0.1, weights=(), signatures={})
MODEL = ModelFile(b"toy model", hashlib.sha256(b"toy model").hexdigest(), META, WEIGHTS)


class Crash(BaseException):
    """The process dies here."""


class CrashingStore(AggregatorStore):
    """Dies on the first ``save_round_state`` whose state has ``weights_version == 1``."""

    def save_round_state(self, state: dict[str, Any]) -> None:
        if state["weights_version"] == 1:
            raise Crash
        super().save_round_state(state)


class Federation:
    """Three clients and a clock around one state directory."""

    def __init__(self, state_dir: Path, **overrides: Any) -> None:
        self.broker, self.now = MemoryBroker(), 1000.0
        self.config = AggregatorConfig(**{
            "model": Path("toy.tflite"), "federation": "toy", "rounds": 2, "min_clients": 3,
            "round_timeout": 10.0, "codec": "fp32", "state_dir": state_dir, **overrides})
        self.topics = self.config.topics()
        self.devices: dict[str, MemoryTransport] = {}
        for client in CLIENTS:
            device = self.devices[client] = self.broker.connect(client)
            device.subscribe(self.topics.reply(client))
            presence = Presence(client, True, 10, "mem", "1", "test", self.now)
            device.publish(self.topics.presence(client), presence.encode(), retain=True)

    def service(self, store: AggregatorStore | None = None) -> AggregatorService:
        service = AggregatorService(self.config, self.broker.connect("aggregator"), MODEL,
                                    store=store, clock=lambda: self.now)
        service.start()
        self.pump(service)
        return service

    def pump(self, service: AggregatorService) -> None:
        while (message := service.transport.get(0)) is not None:
            service.handle(message)
        service.tick()

    def round(self) -> Round:
        return Round.decode(self.broker.retained[self.topics.round()])

    def send(self, service: AggregatorService, client: str, samples: int = 10,
             payload: bytes | None = None) -> Reply | None:
        r = self.round()
        rng = np.random.default_rng([r.round_id, CLIENTS.index(client)])
        delta = {k: rng.normal(0, 0.1, v.shape) for k, v in WEIGHTS.items()}
        update = Update(r.federation, r.round_id, client, r.weights_version, r.model_sha256,
                        bytes([r.round_id]) * 16, samples, {"loss": 1.0}, "fp32",
                        quantize_update(delta, "fp32")[0])
        for chunk in split(payload or update.encode(), f"u-{r.round_id}-{'ab' * 8}"):
            self.devices[client].publish(self.topics.update(client), chunk)
        self.pump(service)
        message = self.devices[client].get(0)
        return None if message is None else Reply.decode(message.payload)

    def final_weights(self) -> bytes:
        saved = AggregatorStore(self.config.state_dir).checkpoint(2)
        assert saved is not None
        return saved[0]


def uninterrupted(state_dir: Path) -> bytes:
    fed = Federation(state_dir)
    service = fed.service()
    for _ in (1, 2):
        for client in CLIENTS:
            fed.send(service, client, samples=10 + CLIENTS.index(client))
    assert service.finished
    return fed.final_weights()


def test_crash_between_checkpoint_and_round_state_replays_to_the_same_weights(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path / "crash")
    service = fed.service(CrashingStore(tmp_path / "crash"))
    fed.send(service, "a", samples=10)
    fed.send(service, "b", samples=11)
    with pytest.raises(Crash):  # the last update closes round 1: dies before round.json
        fed.send(service, "c", samples=12)
    store = AggregatorStore(tmp_path / "crash")
    assert store.checkpoint(1) is not None and len(store.history()) == 1
    assert (store.load_round_state() or {})["accepted"] == ["a", "b"]
    restarted = fed.service()  # replays c's stored update and closes round 1 again
    assert fed.round().round_id == 2 and restarted.model.version == 1
    for client in CLIENTS:
        fed.send(restarted, client, samples=10 + CLIENTS.index(client))
    assert restarted.finished
    assert [h["round"] for h in store.history()] == [1, 2]
    assert fed.final_weights() == uninterrupted(tmp_path / "reference")


def test_restart_after_the_last_round_only_republishes(tmp_path: Path) -> None:
    uninterrupted(tmp_path)
    fed = Federation(tmp_path)
    service = fed.service()
    assert service.finished and service.model.version == 2
    weights = Weights.decode(AggregatorStore(tmp_path).checkpoint(2)[0])  # type: ignore[index]
    assert weights.version == 2 and len(AggregatorStore(tmp_path).history()) == 2


def test_a_state_dir_of_another_model_is_refused(tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    fed.service()
    other = {"dense/kernel": np.zeros((5, 3), np.float32), "dense/bias": np.zeros(3, np.float32)}
    with pytest.raises(ConfigError, match="another model"):
        AggregatorService(fed.config, fed.broker.connect("x"), ModelFile(
            MODEL.data, MODEL.sha256, META, other))


class FailingStore(AggregatorStore):
    """The disk is full for accepted updates."""

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        raise OSError(28, "No space left on device")


def test_an_update_that_cannot_be_stored_is_neither_counted_nor_answered(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    service = fed.service(FailingStore(tmp_path))
    assert fed.send(service, "a") is None
    assert service.state.accepted == frozenset()
    assert service.metrics.value("fedge_updates_rejected_total", {"reason": "store"}) == 1


def test_bad_presence_and_stray_topics_are_counted_not_fatal(tmp_path: Path) -> None:
    fed = Federation(tmp_path, min_clients=1, rounds=1)
    service = fed.service()
    device = fed.devices["a"]
    device.publish(fed.topics.presence("a"), b"\x00not cbor", retain=True)
    device.publish(fed.topics.presence("b"), Presence(
        "a", True, 1, "mem", "1", "test", fed.now).encode(), retain=True)
    fed.pump(service)
    assert service.metrics.value("fedge_invalid_messages_total", {"kind": "presence"}) == 2
    reply = fed.send(service, "a")
    assert reply is not None and reply.accepted


def test_deadline_passes_with_the_fake_clock(tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=1, min_clients=2, min_available=3)
    service = fed.service()
    fed.send(service, "a")
    fed.send(service, "b")
    fed.pump(service)
    assert not service.finished  # c was selected too and has until the deadline
    fed.now += 10.0
    fed.pump(service)
    assert service.finished and service.model.version == 1
    (line,) = AggregatorStore(tmp_path).history()
    assert line["participants"] == ["a", "b"] and line["duration_s"] == 10.0
    rng = [np.random.default_rng([1, i]) for i in range(2)]
    deltas = [{k: rng[i].normal(0, 0.1, v.shape) for k, v in WEIGHTS.items()} for i in range(2)]
    published = dequantize_update(Weights.decode(service.model.payload).tensors)
    for name, base in WEIGHTS.items():
        mean = sum(d[name].astype(np.float32).astype(np.float64) for d in deltas) / 2
        np.testing.assert_allclose(published[name], base + mean, rtol=1e-6, atol=1e-7)


def test_metrics_are_served_over_http(tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=1)
    service = fed.service()
    fed.send(service, "a", samples=42)
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
    assert "fedge_received_bytes_total" in text and "fedge_round_duration_seconds" in text
