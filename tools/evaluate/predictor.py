"""The model ``fedge evaluate`` and ``fedge predict`` run: a model file and the weights it gets.

A trainable file runs with, in order of precedence, the weights of an aggregator state dir
(``--state-dir``, ``--version``), the weights embedded in it (``final/model.tflite``,
``fedge export --from-state``), or else its initial weights, which is said plainly. An int8
inference file (``fedge export --inference-int8``) runs with its frozen weights; its
quantized probabilities are clipped to [0, 1] and each row rescaled to sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, ModelError
from edge_client.model import ModelMetadata, TrainableModel, read_metadata
from edge_client.model_file import archive_start
from edge_client.runtime import Interpreter
from tools.state import MODEL_FILE, StateWeights, state_model, state_weights

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Predictor:
    """A model ready to predict, and what it is.

    Attributes:
        metadata: the model file's metadata.
        model_file: where the model file came from.
        weights: the ``weights`` entry of a JSON report (``source``: ``state-dir``,
            ``embedded``, ``initial`` or ``frozen``; for a state dir also its ``state_dir``,
            ``version`` and ``final``).
        run: the prediction function.
        about: which weights, in words (:meth:`weights_sentence`).
        notes: warnings for the user (e.g. untrained weights).
    """

    metadata: ModelMetadata
    model_file: str
    weights: dict[str, Any]
    run: Callable[[Array], Array] = field(repr=False)
    about: str = ""  # the weights, in words
    notes: tuple[str, ...] = ()

    def predict(self, x: Array) -> Array:
        """Class probabilities ``(n, classes)`` (binary: ``[P(0), P(1)]``) or values ``(n,)``."""
        return self.run(np.asarray(x, np.float32))

    def weights_sentence(self) -> str:
        """One line for a report: which weights the model runs with."""
        return self.about


def open_model(model: Path | None, state_dir: Path | None, version: int | None,
               threads: int = 1) -> Predictor:
    """The model of ``--model`` and/or ``--state-dir`` with the weights they give.

    Raises:
        ConfigError: neither given, ``--version`` without ``--state-dir``, weights for an
            inference model, or an unreadable file or state dir (named).
        ModelError: the file is not a fedge model, or the weights do not fit it.
    """
    if version is not None and state_dir is None:
        raise ConfigError("--version N picks a checkpoint of --state-dir DIR; give both")
    if model is None and state_dir is None:
        raise ConfigError("give --model FILE.tflite, --state-dir DIR (the run's model and "
                          "weights), or both")
    if model is not None:
        try:
            data = model.read_bytes()
        except OSError as e:
            raise ConfigError(f"--model {model}: {e.strerror}") from None
        origin = str(model)
    else:
        assert state_dir is not None
        data, origin = state_model(state_dir), str(state_dir / MODEL_FILE)
    weights = None if state_dir is None else state_weights(state_dir, version)
    notes = _other_model_note(data, model, state_dir)
    return _predictor(data, origin, weights, state_dir, threads, notes)


def _other_model_note(data: bytes, model: Path | None, state_dir: Path | None) -> tuple[str, ...]:
    if model is None or state_dir is None or not (state_dir / MODEL_FILE).is_file():
        return ()
    run_model = (state_dir / MODEL_FILE).read_bytes()
    try:
        same = data[: archive_start(data)] == run_model[: archive_start(run_model)]
    except ModelError:
        return ()
    if same:
        return ()
    return (f"--model {model} is not the model file of --state-dir {state_dir} (its "
            f"{MODEL_FILE}); its weights fit, but check it is the architecture you meant",)


def _predictor(data: bytes, origin: str, weights: StateWeights | None, state_dir: Path | None,
               threads: int, notes: tuple[str, ...]) -> Predictor:
    meta = read_metadata(data)
    if meta.kind == "inference":
        if weights is not None:
            raise ConfigError(f"--state-dir {state_dir}: {origin} is an inference model whose "
                              "weights are frozen; give the trainable model (or leave out "
                              "--model to use the run's)")
        return Predictor(meta, origin, {"source": "frozen"}, _inference(data, meta, threads),
                         "the weights frozen in the inference model", notes)
    if meta.kind != "trainable":
        raise ModelError(f"{origin}: a model of kind {meta.kind!r}; fedge evaluates "
                         "'trainable' and 'inference' files")
    model = TrainableModel(data, num_threads=threads)
    if weights is not None:
        try:
            model.set_weights(weights.weights)
        except ModelError as e:
            raise ModelError(f"the weights of --state-dir {state_dir} do not fit {origin}: "
                             f"{e}") from None
        about = {"source": "state-dir", "state_dir": str(state_dir), "version": weights.version,
                 "final": weights.final, "latest": weights.latest,
                 "run_finished": weights.finished}
        return Predictor(meta, origin, about, model.predict,
                         f"{weights.describe()} of state dir {state_dir}", notes)
    if model.has_embedded_weights:
        return Predictor(meta, origin, {"source": "embedded"}, model.predict,
                         "the trained weights embedded in the model file", notes)
    untrained = (f"{origin} carries no trained weights: these are its initial ones. Pass "
                 "--state-dir DIR (the aggregator's) or a file with weights inside "
                 "(final/model.tflite, `fedge export --from-state`)")
    return Predictor(meta, origin, {"source": "initial"}, model.predict,
                     "the model file's initial (untrained) weights", (*notes, untrained))


def _inference(data: bytes, meta: ModelMetadata, threads: int) -> Callable[[Array], Array]:
    interpreter = Interpreter(data, num_threads=threads)
    batch = meta.signatures["infer"]["inputs"]["x"].shape[0] if "infer" in (
        meta.signatures) else 1

    def run(x: Array) -> Array:
        rows = []
        for start in range(0, len(x), batch):
            part = x[start : start + batch]
            padded = np.zeros((batch, *x.shape[1:]), np.float32)
            padded[: len(part)] = part
            rows.append(interpreter.run("infer", {"x": padded})["output"][: len(part)])
        out: Array = np.concatenate(rows).astype(np.float64)
        if meta.task == "regression":
            return out.reshape(len(x))
        out = np.clip(out.reshape(len(x), -1), 0.0, 1.0)
        total = out.sum(axis=1, keepdims=True)
        rescaled: Array = np.where(total > 0, out / np.where(total > 0, total, 1.0),
                                   1.0 / out.shape[1])
        return rescaled

    return run
