"""Test kit for client tests: a minimal scripted aggregator and a small trainable model file.

Fixtures are re-exported by ``tests/edge_client/conftest.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest

from edge_client.protocol import (
    Hyperparameters,
    Manifest,
    Reply,
    Round,
    SignedMessage,
    Topics,
    Update,
    Weights,
)
from edge_client.quantize import dequantize_update, quantize
from edge_client.transfer import Reassembler, split
from edge_client.transport import Transport, TransportError

FEATURES = 4
S = TypeVar("S", bound=SignedMessage)


@pytest.fixture(scope="session")
def logreg_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A trainable logistic regression over 4 features, batch 8 (exported once)."""
    from models.export import export_trainable

    path = tmp_path_factory.mktemp("models") / "logreg.tflite"
    blob = export_trainable("logreg", (FEATURES,), 2, 8, optimizer="sgd", seed=1)
    path.write_bytes(blob)
    return blob


def linear_data(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A learnable binary task: label = (w·x > 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.5]) > 0).astype(np.float32)
    return x, y


@dataclass
class ScriptedAggregator:
    """Publishes model, weights, manifest and one round (all retained); collects updates."""

    transport: Transport
    topics: Topics
    model: bytes
    weights: dict[str, np.ndarray[Any, Any]]
    selected: tuple[str, ...] | None = None
    deadline_s: float = 60.0
    codec: str = "fp32"
    max_payload: int = 128 * 1024
    #: an edge_client.signing.SigningKey: signs manifest, round and replies as the real one
    signing_key: Any = None
    updates: list[Update] = field(default_factory=list)
    #: reasons the first completed updates are refused with, in order (then: accepted)
    refusals: list[str] = field(default_factory=list)
    refused_at: list[float] = field(default_factory=list)  # monotonic time of each refusal
    completions: int = 0
    chunks_seen: int = 0
    _chunks: Reassembler = field(default_factory=Reassembler)

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.model).hexdigest()

    def publish_all(self, round_id: int = 1, epochs: int = 2) -> None:
        self.publish_model()
        self.publish_weights()
        self.publish_manifest_and_round(round_id, epochs)

    @property
    def weights_payload(self) -> bytes:
        return Weights(federation=self.topics.federation, version=0, tensors=tuple(
            quantize(n, v, "fp32") for n, v in self.weights.items())).encode()

    def publish_model(self) -> None:
        for i, chunk in enumerate(split(self.model, self.sha, max_payload=self.max_payload)):
            self.transport.publish(self.topics.model_chunk(self.sha, i), chunk, retain=True)

    def publish_weights(self) -> None:
        chunks = split(self.weights_payload, "weights-0", max_payload=self.max_payload)
        for i, chunk in enumerate(chunks):
            self.transport.publish(self.topics.weights_chunk(0, i), chunk, retain=True)

    def publish_manifest_and_round(self, round_id: int = 1, epochs: int = 2) -> None:
        t, tp = self.transport, self.topics
        t.publish(tp.manifest(), self.sign(Manifest(
            federation=tp.federation, model_sha256=self.sha, model_size=len(self.model),
            weights_version=0, weights_sha256=hashlib.sha256(self.weights_payload).hexdigest(),
            round_id=round_id, codec="fp32", key_id="test")).encode(), retain=True)
        t.publish(tp.round(), self.sign(Round(
            federation=tp.federation, round_id=round_id, weights_version=0,
            model_sha256=self.sha, deadline=time.time() + self.deadline_s,
            hyperparameters=Hyperparameters(epochs=epochs, batch_size=8, learning_rate=0.1),
            codec=self.codec, selected=self.selected,
            fraction=None if self.selected else 1.0)).encode(), retain=True)

    def sign(self, message: S) -> S:
        return message if self.signing_key is None else self.signing_key.sign(message)

    def collect(self, n: int, timeout: float, on_chunk: Callable[[], None] | None = None
                ) -> list[Update]:
        """Waits for ``n`` distinct updates (by nonce), replying accepted to each (after
        the :attr:`refusals`)."""
        end = time.monotonic() + timeout
        while len(self.updates) < n and time.monotonic() < end:
            msg = self.transport.get(timeout=0.2)
            if msg is None:
                continue
            self.chunks_seen += 1
            if on_chunk is not None:
                on_chunk()
            ref = self.topics.parse(msg.topic)
            payload = self._chunks.accept(ref.client_id or "?", msg.payload, time.time())
            self.transport.ack(msg)
            if payload is None:
                continue
            self.completions += 1
            update = Update.decode(payload)
            refusal = self.refusals.pop(0) if self.refusals else None
            if refusal is not None:
                self.refused_at.append(time.monotonic())
            elif all(u.nonce != update.nonce for u in self.updates):
                self.updates.append(update)
            reply = self.sign(Reply(federation=update.federation, round_id=update.round_id,
                                    run_id=update.run_id, client_id=update.client_id,
                                    nonce=update.nonce, accepted=refusal is None,
                                    reason=refusal or ""))
            # not connected right now: the reply is queued and sent after the reconnect
            with contextlib.suppress(TransportError):
                self.transport.publish(self.topics.reply(update.client_id), reply.encode())
        return self.updates

    @staticmethod
    def delta(update: Update) -> dict[str, np.ndarray[Any, Any]]:
        return dequantize_update(update.tensors)


@pytest.fixture
def make_aggregator() -> Iterator[Callable[..., ScriptedAggregator]]:
    made: list[ScriptedAggregator] = []

    def make(**kw: Any) -> ScriptedAggregator:
        agg = ScriptedAggregator(**kw)
        made.append(agg)
        return agg

    yield make

