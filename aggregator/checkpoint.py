"""Checkpoints of the global model: saved per version, loaded and checked at start-up.

A checkpoint is the :class:`~aggregator.global_model.GlobalModel`'s encoded ``Weights``
message (``checkpoints/vN.bin``, the bytes clients reassemble from ``weights/N/…``) and
the server optimizer state after it (``checkpoints/vN.server.npz``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.fedavg import ServerState
from aggregator.global_model import GlobalModel
from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError, FedgeError
from edge_client.protocol import TensorSpec, Weights
from edge_client.quantize import dequantize_update

Arrays = dict[str, npt.NDArray[Any]]


def save(store: AggregatorStore, model: GlobalModel) -> None:
    """Checkpoint one version of the global model (weights and server state)."""
    store.save_checkpoint(model.version, model.payload, model.server_state.to_arrays())


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
