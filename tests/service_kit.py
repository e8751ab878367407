"""The aggregator service on the in-memory bus with a fake clock: three clients and one
state directory, driven synchronously (no threads, no broker)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from membus import MemoryBroker, MemoryTransport

from aggregator.config import AggregatorConfig
from aggregator.modelfile import ModelFile
from aggregator.service import AggregatorService
from aggregator.store import AggregatorStore
from edge_client.model import ModelMetadata
from edge_client.protocol import Presence, Reply, Round, Update
from edge_client.quantize import quantize_update
from edge_client.transfer import split

CLIENTS = ("a", "b", "c")
WEIGHTS = {"dense/kernel": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3),
           "dense/bias": np.zeros(3, np.float32)}
META = ModelMetadata(kind="trainable", model="toy", task="multiclass", classes=3, batch_size=8,
                     input_shape=(4,), output_shape=(3,), label_encoding="index",
                     optimizer="sgd", learning_rate=0.1, weights=(), signatures={})
MODEL = ModelFile(b"toy model", hashlib.sha256(b"toy model").hexdigest(), META, WEIGHTS)


class Federation:
    """Three clients and a clock around one state directory."""

    def __init__(self, state_dir: Path, model: ModelFile = MODEL, **overrides: Any) -> None:
        self.broker, self.now, self.model = MemoryBroker(), 1000.0, model
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
        service = AggregatorService(self.config, self.broker.connect("aggregator"), self.model,
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
                        quantize_update(delta, "fp32")[0], run_id=r.run_id)
        for chunk in split(payload or update.encode(), f"u-{r.round_id}-{'ab' * 8}"):
            self.devices[client].publish(self.topics.update(client), chunk)
        self.pump(service)
        message = self.devices[client].get(0)
        return None if message is None else Reply.decode(message.payload)

    def final_weights(self) -> bytes:
        saved = AggregatorStore(self.config.state_dir).checkpoint(2)
        assert saved is not None
        return saved[0]
