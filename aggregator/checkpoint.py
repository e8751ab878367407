"""The global model: its weights, their wire encoding, and how they are saved and restored.

The global weights travel and are checkpointed as one encoded ``Weights`` message
(fp32, lossless), so the bytes in ``checkpoints/vN.bin`` are exactly the bytes
clients reassemble from ``weights/N/…`` and the manifest's ``weights_sha256``
is their hash, before and after a restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.fedavg import ServerState
from aggregator.store import AggregatorStore
from aggregator.validation import TensorSpec
from edge_client.errors import ConfigError, FedgeError
from edge_client.protocol import Weights
from edge_client.quantize import dequantize_update, quantize

Arrays = dict[str, npt.NDArray[Any]]


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

    def save(self, store: AggregatorStore) -> None:
        """Checkpoint this version (weights and server state)."""
        store.save_checkpoint(self.version, self.payload, self.server_state.to_arrays())


def check_weights(weights: Mapping[str, npt.NDArray[Any]], spec: Sequence[TensorSpec],
                  where: str) -> None:
    """Raise ConfigError when ``weights`` do not match the model's ``spec``."""
    if TensorSpec.of(weights) != tuple(sorted(spec, key=lambda t: t.name)):
        raise ConfigError(
            f"{where}: weights {sorted((t.name, t.shape) for t in TensorSpec.of(weights))} do "
            f"not fit the model {sorted((t.name, t.shape) for t in spec)}; was the state dir "
            "made for another model? Use a new --state-dir")


def load(store: AggregatorStore, version: int, spec: Sequence[TensorSpec]) -> GlobalModel | None:
    """The checkpoint of ``version``, or None if there is none.

    Raises:
        ConfigError: the checkpoint is unreadable or belongs to another model.
    """
    saved = store.checkpoint(version)
    if saved is None:
        return None
    payload, arrays = saved
    where = f"{store.root}/checkpoints/v{version:08d}"
    try:
        message = Weights.decode(payload)
        state = ServerState.from_arrays(arrays) if arrays else ServerState()
    except (FedgeError, KeyError, ValueError) as e:
        raise ConfigError(f"{where}: unreadable checkpoint ({e})") from None
    if message.version != version:
        raise ConfigError(f"{where}: holds version {message.version}")
    order = [t.name for t in message.tensors]
    decoded = dequantize_update(message.tensors)
    weights: Arrays = {name: decoded[name] for name in order}
    check_weights(weights, spec, where)
    return GlobalModel(version, weights, payload, state)


def as_float32(weights: Mapping[str, npt.NDArray[Any]]) -> Arrays:
    """Copies of ``weights`` as float32 (the wire format of global weights)."""
    return {name: np.asarray(array, np.float32).copy() for name, array in weights.items()}
