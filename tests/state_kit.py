"""Test kit: an aggregator state dir built by hand, with the aggregator's own checkpoint code.

The layout is the one ``tools/state.py`` reads (docs/aggregator.md): ``model.tflite``,
``run.json``, ``round.json``, ``checkpoints/vNNNNNNNN.bin`` and, for a finished run,
``final/weights.npz`` and ``final/model.tflite``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator import checkpoint
from aggregator.fedavg import ServerState
from aggregator.global_model import GlobalModel
from aggregator.store import AggregatorStore
from edge_client.model import embed_weights

Arrays = Mapping[str, npt.NDArray[Any]]


def write_state_dir(root: Path, model_file: bytes, versions: Mapping[int, Arrays], *,
                    finished: bool = True, federation: str = "test") -> Path:
    """A state dir whose run trained ``model_file`` through ``versions`` (version → weights).

    When ``finished``, the last version's weights are also the final ones.
    """
    store = AggregatorStore(root)
    for version, weights in sorted(versions.items()):
        checkpoint.save(store, GlobalModel.build(federation, version,
                                                 checkpoint.as_float32(weights), ServerState()))
    latest = max(versions)
    (root / "model.tflite").write_bytes(model_file)
    (root / "run.json").write_text(json.dumps({
        "run_id": "run-1", "model_sha256": hashlib.sha256(model_file).hexdigest()}))
    phase = "finished" if finished else "open"
    store.save_round_state({"weights_version": latest, "phase": phase, "round_id": latest})
    if finished:
        final = checkpoint.as_float32(versions[latest])
        (root / "final").mkdir(exist_ok=True)
        np.savez(root / "final" / "weights.npz", **final)
        (root / "final" / "model.tflite").write_bytes(embed_weights(model_file, final))
    return root
