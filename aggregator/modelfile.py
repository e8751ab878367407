"""The trainable model file the federation trains: its bytes, hash, metadata and weights."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from aggregator.checkpoint import as_float32
from edge_client.errors import ConfigError, FedgeError
from edge_client.model import ModelMetadata, TrainableModel, read_metadata
from edge_client.probe import probe_model
from edge_client.protocol import MAX_TRANSFER_BYTES, TensorSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFile:
    """A trainable ``.tflite`` from ``fedge export``.

    Attributes:
        data: the file's bytes (published as ``model/{sha256}/…`` chunks).
        sha256: their SHA-256 (hex).
        metadata: what the file says about itself.
        initial_weights: the weights stored in the file, as float32 (global version 0).
    """

    data: bytes
    sha256: str
    metadata: ModelMetadata
    initial_weights: dict[str, npt.NDArray[Any]]

    @property
    def spec(self) -> tuple[TensorSpec, ...]:
        """Name, shape and dtype of every weight (what an update's delta must match)."""
        return TensorSpec.of(self.initial_weights)

    def max_update_bytes(self) -> int:
        """An upper bound on an update payload: fp32 data plus generous per-tensor framing."""
        data = sum(4 * array.size for array in self.initial_weights.values())
        return min(MAX_TRANSFER_BYTES, data + 1024 * len(self.initial_weights) + 65536)


def load_model_file(path: Path) -> ModelFile:
    """Read and check ``--model``; the initial weights come from the file's interpreter.

    The file passes the same checks and crash-proof probe as on a device
    (:func:`edge_client.probe.probe_model`) before this process loads it.

    Raises:
        ConfigError: unreadable, not a fedge model file, not trainable, too large, out of
            the model bounds, or refused by the probe (a crash names its signal).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"--model {path}: {e.strerror}") from None
    return model_file_of(data, f"--model {path}")


def model_file_of(data: bytes, where: str) -> ModelFile:
    """Check model file bytes as :func:`load_model_file` does (errors name ``where``)."""
    if not 0 < len(data) <= MAX_TRANSFER_BYTES:
        raise ConfigError(f"{where}: {len(data)} bytes; expected 1 B to 64 MiB")
    try:
        metadata = read_metadata(data)
        if metadata.kind != "trainable":
            raise ConfigError(f"a {metadata.kind!r} model cannot be trained; "
                              "export it with `fedge export`")
        probe_model(data)
        weights = TrainableModel(data, num_threads=1).get_weights()
    except FedgeError as e:
        raise ConfigError(f"{where}: {e}") from None
    sha = hashlib.sha256(data).hexdigest()
    log.info("model=%s file=%s sha256=%s bytes=%d weights=%d", metadata.model, where, sha[:12],
             len(data), len(weights))
    return ModelFile(data, sha, metadata, as_float32(weights))
