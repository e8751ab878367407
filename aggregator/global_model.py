"""The global model: one version of the weights, the server optimizer state, and their
wire encoding.

The global weights travel and are checkpointed as one encoded ``Weights`` message (fp32,
lossless), so the bytes in ``checkpoints/vN.bin`` are exactly the bytes clients
reassemble from ``weights/N/…`` and the manifest's ``weights_sha256`` is their hash,
before and after a restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from aggregator.fedavg import ServerState
from edge_client.protocol import Weights
from edge_client.quantize import quantize


@dataclass(frozen=True)
class GlobalModel:
    """One version of the global weights and the server optimizer state after it.

    Attributes:
        version: the weights version (0: the model file's initial weights).
        weights: tensor name → array, in the model's order.
        payload: the encoded ``Weights`` message (what is published and checkpointed).
        server_state: the strategy's optimizer state.
    """

    version: int
    weights: Mapping[str, npt.NDArray[Any]]
    payload: bytes
    server_state: ServerState

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of :attr:`payload`, as the manifest carries it."""
        return hashlib.sha256(self.payload).hexdigest()

    @classmethod
    def build(cls, federation: str, version: int, weights: Mapping[str, npt.NDArray[Any]],
              server_state: ServerState) -> GlobalModel:
        """Encode ``weights`` as version ``version`` of ``federation``."""
        tensors = tuple(quantize(name, array, "fp32") for name, array in weights.items())
        payload = Weights(federation=federation, version=version, tensors=tensors).encode()
        return cls(version, dict(weights), payload, server_state)
