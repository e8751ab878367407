"""Simulated devices that really train: ``fedge simulate --train``.

One worker process holds one interpreter of the federation's model
(:class:`~edge_client.model.TrainableModel`, the device's own class, on the device's
TFLite runtime) and trains every device it simulates on that device's shard
(:mod:`tools.simulate.shards`) with :func:`edge_client.training.train_round`, the very
function ``fedge-client`` runs: set the global weights, train the round's epochs at its
learning rate, quantize the delta with the device's own error-feedback residual. Devices
stay independent protocol identities (each its own MQTT connection, nonce, reply), and
share only what every device would download alike: the model file (checked against the
round's SHA-256) and the global weights, which the worker's :class:`GlobalFeed` receives
over MQTT from the aggregator's retained weights transfer, once per worker.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ProtocolError
from edge_client.model import TrainableModel
from edge_client.protocol import Chunk, Manifest, Round, Topics, Update, Weights
from edge_client.quantize import dequantize_update
from edge_client.training import LocalSplit, train_round
from edge_client.transfer import ChunkRejected, Reassembler
from edge_client.transport import Transport
from tools.simulate.device import DeviceSpec

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]
KEPT_VERSIONS = 2  # the round's weights and the next, while a round closes


class GlobalFeed:
    """The global weights as the aggregator publishes them, for all of a worker's devices."""

    def __init__(self, transport: Transport, topics: Topics) -> None:
        """Reads the manifest through ``transport`` and follows its weights transfer."""
        self.t, self.topics = transport, topics
        self.weights: dict[int, dict[str, Array]] = {}
        self._following: int | None = None
        self._chunks = Reassembler()
        transport.subscribe(topics.manifest())

    def step(self) -> bool:
        """Handles what arrived; returns whether anything did."""
        busy = False
        while (message := self.t.get(timeout=0.0)) is not None:
            busy = True
            if not message.payload:
                continue
            try:
                kind = self.topics.parse(message.topic).kind
                if kind == "manifest":
                    self._follow(Manifest.decode(message.payload))
                elif kind == "weights":
                    self._on_chunk(Chunk.decode(message.payload))
            except (ProtocolError, ChunkRejected) as e:
                log.warning("global weights feed: %s", e)
        return busy

    def _follow(self, m: Manifest) -> None:
        if m.weights_version == self._following or m.weights_version in self.weights:
            return
        if self._following is not None:
            self.t.unsubscribe(self.topics.weights_filter(self._following))
        self._following = m.weights_version
        self.t.subscribe(self.topics.weights_filter(m.weights_version))

    def _on_chunk(self, chunk: Chunk) -> None:
        payload = self._chunks.accept("aggregator", chunk, time.monotonic())
        if payload is None:
            return
        weights = Weights.decode(payload)
        self.weights[weights.version] = dequantize_update(weights.tensors)
        for old in sorted(self.weights)[:-KEPT_VERSIONS]:
            del self.weights[old]


class TrainingSource:
    """Updates from real training of each device's shard (implements ``Source``)."""

    def __init__(self, model_file: bytes, feed: GlobalFeed,
                 shards: Mapping[int, tuple[Array, Array]], seed: int) -> None:
        """``shards``: device index → its (x, y); one interpreter for all of them."""
        self.model = TrainableModel(model_file)
        self.model_sha256 = hashlib.sha256(model_file).hexdigest()
        self.feed, self.seed = feed, seed
        self.data = {i: LocalSplit.of(x, y, seed=seed + i) for i, (x, y) in shards.items()}
        self.residuals: dict[int, dict[str, npt.NDArray[np.float32]]] = {}
        self._last: dict[int, tuple[int, bytes, Update]] = {}
        self.trained = 0  # devices trained so far, and the seconds it took
        self.train_s = 0.0

    def ready(self, r: Round) -> bool:
        """The round's model is this model and its global weights have arrived."""
        return r.model_sha256 == self.model_sha256 and r.weights_version in self.feed.weights

    def update(self, spec: DeviceSpec, r: Round, nonce: bytes) -> Update:
        """Trains ``spec``'s device from the round's global weights (once per nonce)."""
        last = self._last.get(spec.index)
        if last is not None and last[:2] == (r.round_id, nonce):
            return last[2]  # a re-send or duplicate: the same update, not trained again
        t0 = time.perf_counter()
        self.model.set_weights(self.feed.weights[r.weights_version])
        rng = np.random.default_rng([self.seed, spec.index, r.round_id, 3])
        trained = train_round(self.model, self.data[spec.index], r, client_id=spec.client_id,
                              residual=self.residuals.get(spec.index, {}), rng=rng,
                              nonce=nonce)
        self.residuals[spec.index] = trained.residual
        self._last[spec.index] = (r.round_id, nonce, trained.update)
        self.trained += 1
        self.train_s += time.perf_counter() - t0
        return trained.update
