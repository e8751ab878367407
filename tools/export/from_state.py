"""``fedge export --from-state``: the files a finished run leaves, made from any version.

``DIR/final/model.tflite`` is the run's model with the final weights embedded
(:func:`edge_client.model.embed_weights`: numpy and zipfile, no TensorFlow), and
``DIR/final/weights.npz`` those weights; this makes the same from the weights of any
version, and the int8 inference model (:mod:`tools.export.int8`) from them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edge_client.files import atomic_write
from edge_client.model import embed_weights, read_metadata
from tools.export.int8 import SAME_FILE, Calibration, int8_model
from tools.state import state_model, state_weights

FLAG = "--from-state"


def export_from_state(root: Path, version: int | None, out: Path, int8: Path | None,
                      calibration: Calibration) -> list[str]:
    """Writes ``out`` (a trainable file with the weights embedded, or ``.npz`` weights) and,
    when ``int8`` is given, the int8 model (to ``out`` itself when ``int8`` is
    :data:`~tools.export.int8.SAME_FILE`); returns one line per file written.

    Raises:
        ConfigError: the state dir lacks the model or the version (named).
        ModelError: the weights do not fit the model.
        MissingExtra: an int8 model without TensorFlow.
    """
    model = state_model(root, FLAG)
    chosen = state_weights(root, version, FLAG)
    trainable = embed_weights(model, chosen.weights)  # checks names and shapes
    meta = read_metadata(model)
    what = f"{meta.model} with {chosen.describe()} of {root}"
    written = []
    if int8 is not None:
        blob = int8_model(meta.model, meta.input_shape, meta.classes, chosen.weights,
                          calibration)
        target = out if int8 == SAME_FILE else int8
        atomic_write(target, blob)
        written.append(f"wrote {target} ({len(blob):,} bytes): int8 inference model, {what}")
        if int8 == SAME_FILE:
            return written
    if out.suffix.lower() == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **{w.name: chosen.weights[w.name] for w in meta.weights})
        atomic_write(out, buffer.getvalue())
        return [*written, f"wrote {out} ({len(meta.weights)} float32 arrays): {what}"]
    atomic_write(out, trainable)
    return [*written, f"wrote {out} ({len(trainable):,} bytes): trainable, {what} embedded"]
