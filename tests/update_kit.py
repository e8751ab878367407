"""Test kit shared by the aggregator and reliability tests: deterministic updates and the
reference FedAvg step they are checked against."""

from __future__ import annotations

import hashlib
import secrets
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.modelfile import ModelFile
from edge_client.protocol import Round, Update, update_transfer_id
from edge_client.quantize import dequantize_update, quantize_update

Arrays = Mapping[str, npt.NDArray[Any]]


def transfer_id(update: Update) -> str:
    """A fresh ``u-{round}-{nonce}-{attempt}`` transfer id, as a client's (re-)send uses."""
    return update_transfer_id(update.round_id, update.nonce, secrets.randbelow(10**9))


def make_update(r: Round, client_id: str, samples: int, model: ModelFile, *,
                codec: str | None = None, scale: float = 0.05, salt: str = "",
                shapes: dict[str, tuple[int, ...]] | None = None,
                norm: float | None = None) -> Update:
    """A deterministic update answering ``r``: random deltas (rescaled to L2 norm ``norm``
    over all tensors when given), quantized with the round's codec (or ``codec``); its
    ``loss`` metric is ``samples / 1000``."""
    key = f"{client_id}/{r.round_id}/{salt}".encode()
    rng = np.random.default_rng(zlib.crc32(key))
    delta = {t.name: rng.normal(0.0, scale, (shapes or {}).get(t.name, t.shape))
             for t in model.spec}
    if norm is not None:
        factor = norm / l2_norm(delta)
        delta = {name: d * factor for name, d in delta.items()}
    tensors, _ = quantize_update(delta, codec or r.codec)
    return Update(federation=r.federation, round_id=r.round_id, client_id=client_id,
                  base_version=r.weights_version, model_sha256=r.model_sha256,
                  nonce=hashlib.sha256(key).digest()[:16], num_samples=samples,
                  metrics={"loss": samples / 1000.0}, codec=codec or r.codec, tensors=tensors,
                  run_id=r.run_id)


def l2_norm(arrays: Arrays) -> float:
    """The L2 norm of all of ``arrays`` taken as one vector."""
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64)))
                             for a in arrays.values())))


def fedavg(base: Arrays, updates: Sequence[Update]) -> dict[str, npt.NDArray[Any]]:
    """Reference FedAvg step: base + mean of the dequantized deltas weighted by num_samples."""
    deltas = [dequantize_update(u.tensors) for u in updates]
    total = float(sum(u.num_samples for u in updates))
    return {name: (w.astype(np.float64) + sum(u.num_samples * d[name].astype(np.float64)
                                              for u, d in zip(updates, deltas, strict=True))
                   / total).astype(np.float32)
            for name, w in base.items()}
