"""Everything the aggregator publishes: model file, global weights, manifest, round, replies.

Large payloads go out as retained chunks (``edge_client.transfer.split``); every
topic comes from :class:`~edge_client.protocol.Topics`. A publish waits for the
broker's PUBACK so the retained state is on the broker before the manifest that
points to it. When the broker is unreachable, the first publish of a batch that
times out is logged and the rest of the batch is only queued (paho sends it after
the reconnect, in order): a broker outage never stops the service.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aggregator.schedule import RoundState
from edge_client.protocol import (
    CLEAR,
    Hyperparameters,
    Manifest,
    Reply,
    Round,
    SignedMessage,
    Status,
    Topics,
    weights_transfer_id,
)
from edge_client.signing import SigningKey, load_signing_key
from edge_client.transfer import chunk_overhead, split
from edge_client.transport import Transport, TransportError

log = logging.getLogger(__name__)

KEY_ID = "aggregator"  # the key id of an unsigned manifest (no --signing-key)
S = TypeVar("S", bound=SignedMessage)


@dataclass(frozen=True)
class RunMessages:
    """Builds the manifest and round announcements of one federation run.

    With a ``signing_key`` every manifest, round and reply carries its key id and an
    Ed25519 signature; the manifest's covers the model file and the weights through their
    SHA-256.
    """

    federation: str
    model_sha256: str
    model_size: int
    codec: str  # what clients must use for their updates
    hyperparameters: Hyperparameters
    signing_key: SigningKey | None = None
    run_id: str = ""

    def manifest(self, weights_version: int, weights_sha256: str, round_id: int,
                 finished: str = "") -> Manifest:
        """The manifest of global weights ``weights_version`` (always published fp32);
        ``finished`` says why the run is over, once it is."""
        manifest = Manifest(
            federation=self.federation, model_sha256=self.model_sha256,
            model_size=self.model_size, weights_version=weights_version,
            weights_sha256=weights_sha256, round_id=round_id, codec="fp32", key_id=KEY_ID,
            run_id=self.run_id, finished=finished)
        return self._signed(manifest)

    def round(self, state: RoundState) -> Round:
        """The announcement of the round ``state`` is collecting (with its current deadline)."""
        if state.deadline is None:
            raise ValueError(f"round {state.round_id} is not collecting: no deadline")
        return self._signed(Round(
            federation=self.federation, round_id=state.round_id,
            weights_version=state.weights_version, model_sha256=self.model_sha256,
            deadline=state.deadline, hyperparameters=self.hyperparameters, codec=self.codec,
            selected=tuple(sorted(state.selected)), run_id=self.run_id))

    def reply(self, round_id: int, client_id: str, nonce: bytes, accepted: bool, reason: str,
              run_id: str | None = None) -> Reply:
        """The answer to one update (of run ``run_id``; this run's when None)."""
        return self._signed(Reply(
            federation=self.federation, round_id=round_id, client_id=client_id, nonce=nonce,
            accepted=accepted, reason=reason, run_id=self.run_id if run_id is None else run_id))

    def _signed(self, message: S) -> S:
        return message if self.signing_key is None else self.signing_key.sign(message)


def manifest_signing_key(path: Path | None) -> SigningKey | None:
    """The key of ``--signing-key`` (its id logged), or None: manifests, rounds and replies
    go out unsigned.

    Raises:
        ConfigError: the file is not an unencrypted Ed25519 private key.
    """
    if path is None:
        log.warning("manifests, rounds and replies are NOT signed: devices cannot tell this "
                    "aggregator's models, rounds and replies from forged ones (pass "
                    "--signing-key)")
        return None
    key = load_signing_key(path)
    log.info("manifests, rounds and replies are signed with key id %s", key.key_id)
    return key


class Publisher:
    """Publishes the aggregator's messages through a Transport port, counting bytes."""

    def __init__(self, transport: Transport, topics: Topics, *, max_payload: int,
                 run_id: str = "", timeout: float = 30.0,
                 on_sent: Callable[[int], None] = lambda size: None) -> None:
        """Publish through ``transport`` under ``topics``.

        Args:
            transport: the MQTT port.
            topics: the federation's topic tree.
            max_payload: largest MQTT payload (chunk header included).
            run_id: the run whose weights go out (part of their transfer ids).
            timeout: seconds to wait for each PUBACK before only queueing the rest.
            on_sent: told the size of every payload handed to the transport.
        """
        self.transport = transport
        self.topics = topics
        self.max_payload = max_payload
        self.run_id = run_id
        self.timeout = timeout
        self.on_sent = on_sent

    def model_file(self, data: bytes, sha256: str) -> None:
        """Retained chunks ``model/{sha256}/{i}`` of the .tflite file."""
        chunks = split(data, sha256, max_payload=self.max_payload)
        self._batch([(self.topics.model_chunk(sha256, i), c) for i, c in enumerate(chunks)])

    def weights(self, version: int, payload: bytes) -> None:
        """Retained chunks ``weights/{version}/{i}`` of an encoded ``Weights``."""
        tid = weights_transfer_id(self.run_id, version)
        chunks = split(payload, tid, max_payload=self.max_payload)
        self._batch([(self.topics.weights_chunk(version, i), c) for i, c in enumerate(chunks)])

    def clear_weights(self, version: int, payload_size: int) -> None:
        """Delete the retained chunks of weights ``version`` (a payload of that many bytes)."""
        room = self.max_payload - chunk_overhead(weights_transfer_id(self.run_id, version))
        count = max(1, math.ceil(payload_size / room))
        self._batch([(t, CLEAR) for t in self.topics.weights_chunks(version, count)])

    def manifest(self, manifest: Manifest) -> None:
        """The retained manifest."""
        self._batch([(self.topics.manifest(), manifest.encode())])

    def round(self, message: Round) -> None:
        """The retained round announcement."""
        self._batch([(self.topics.round(), message.encode())])

    def status(self, message: Status) -> None:
        """The retained status summary (``fedge status`` reads it)."""
        self._batch([(self.topics.status(), message.encode())])

    def clear_round(self) -> None:
        """No round is open: delete the retained announcement (an earlier run's, too)."""
        self._batch([(self.topics.round(), CLEAR)])

    def reply(self, reply: Reply) -> None:
        """A (not retained) reply on ``reply/{client}``."""
        self._batch([(self.topics.reply(reply.client_id), reply.encode())], retain=False)

    def _batch(self, messages: Sequence[tuple[str, bytes]], *, retain: bool = True) -> None:
        timeout: float | None = self.timeout
        for topic, payload in messages:
            try:
                self.transport.publish(topic, payload, qos=1, retain=retain, timeout=timeout)
            except TransportError as e:
                if timeout is not None:
                    log.error("publish failed (%s); queueing the rest of this batch for "
                              "after the reconnect", e)
                timeout = None
            self.on_sent(len(payload))
