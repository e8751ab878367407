"""A trainable fedge model file on the device: metadata, training, evaluation, weights.

:class:`TrainableModel` drives the file's signatures through
:mod:`edge_client.runtime`; its metadata and embedded weights are read (and written) by
:mod:`edge_client.model_file` (re-exported here), which needs no interpreter.

Data conventions: ``x`` has shape ``(N, *metadata.input_shape)``; ``y`` has
shape ``(N,)`` and holds class indices ``0..classes-1`` (binary: 0/1) or, for
regression (``classes == 0``), target values. Both are fed as float32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_client.errors import ConfigError, ModelError
from edge_client.model_check import check_model_file
from edge_client.model_file import (
    SIGNATURES,
    Array,
    ModelMetadata,
    embed_weights,
    embedded_weights,
    read_metadata,
    with_schema,
)
from edge_client.runtime import Interpreter

__all__ = [
    "ModelMetadata", "TrainableModel", "embed_weights", "embedded_weights",
    "read_metadata", "with_schema",
]


class TrainableModel:
    """A trainable fedge model loaded in a TFLite interpreter.

    Example:
        >>> model = TrainableModel("cnn1d.tflite", num_threads=1)
        >>> model.set_weights(global_weights)
        >>> losses = model.fit(x, y, epochs=2, mu=0.01, rng=np.random.default_rng(0))
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike[str],
        *,
        num_threads: int | None = None,
        runtime: str | None = None,
    ) -> None:
        """Load a model from its bytes or a path.

        The file passes :func:`edge_client.model_check.check_model_file` (size, metadata
        bounds, flatbuffer structure, memory, metadata against flatbuffer) before the
        interpreter is given its flatbuffer. A file that carries weights (``weights.npz``,
        see :func:`edge_client.model_file.embed_weights`) starts with them: they are set
        right after loading, so :meth:`get_weights` returns them; otherwise the weights
        are the file's initial ones.

        Raises:
            ModelError: unreadable file, a check failed, not trainable, the file's
                signatures disagree with its metadata, its embedded weights do not fit
                it, or the runtime cannot load it (out of memory included).
            ConfigError: no usable TFLite runtime.
        """
        data = model if isinstance(model, bytes) else _read_file(model)
        checked = check_model_file(data)
        self._metadata = checked.metadata
        if self._metadata.kind != "trainable":
            raise ModelError(
                f"the model file is of kind {self._metadata.kind!r}; only 'trainable' files train"
            )
        self._interpreter = Interpreter(checked.flatbuffer, num_threads=num_threads,
                                        runtime=runtime)
        self._check_signatures()
        embedded = embedded_weights(data)
        self._embedded = embedded is not None
        if embedded is not None:
            self.set_weights(embedded)

    @property
    def metadata(self) -> ModelMetadata:
        """The file's metadata."""
        return self._metadata

    @property
    def has_embedded_weights(self) -> bool:
        """Whether the file carried trained weights (else it started from its initial ones)."""
        return self._embedded

    @property
    def runtime(self) -> str:
        """Name of the TFLite runtime in use."""
        return self._interpreter.runtime

    def fit(
        self,
        x: Array,
        y: Array,
        *,
        epochs: int = 1,
        lr: float | None = None,
        mu: float = 0.0,
        rng: np.random.Generator,
    ) -> list[float]:
        """Train on shuffled mini-batches; the last batch is zero-padded and masked.

        Args:
            x: ``(N, *input_shape)`` examples.
            y: ``(N,)`` labels (see the module docstring).
            epochs: passes over the data.
            lr: learning rate; None uses the file's default.
            mu: FedProx coefficient (0 disables); the anchor is the last ``set_weights``.
            rng: source of the shuffling order.

        Returns:
            The mean training loss of each epoch (before each step's update).

        Raises:
            ModelError: the data do not fit the model.
            ConfigError: bad epochs, learning rate or mu.
        """
        rate = self._metadata.learning_rate if lr is None else lr
        if epochs < 1 or rate is None or not rate > 0 or not mu >= 0:
            raise ConfigError(f"need epochs ≥ 1, lr > 0, mu ≥ 0; got {epochs=}, {rate=}, {mu=}")
        xs, ys = self._checked(x, y)
        scalars = {"lr": np.asarray(rate, np.float32), "mu": np.asarray(mu, np.float32)}
        losses = []
        for _ in range(epochs):
            total = 0.0
            for batch, count in self._batches(xs, ys, rng.permutation(len(xs))):
                total += float(self._interpreter.run("train", {**batch, **scalars})["loss"]) * count
            losses.append(total / len(xs))
        return losses

    def evaluate(self, x: Array, y: Array) -> tuple[float, float]:
        """Return the mean loss and the accuracy (NaN for regression) on ``x, y``.

        Raises:
            ModelError: the data do not fit the model.
        """
        xs, ys = self._checked(x, y)
        loss = correct = 0.0
        for batch, count in self._batches(xs, ys, np.arange(len(xs))):
            out = self._interpreter.run("evaluate", batch)
            loss += float(out["loss"]) * count
            correct += float(out["correct"])
        accuracy = float("nan") if self._metadata.task == "regression" else correct / len(xs)
        return loss / len(xs), accuracy

    def predict(self, x: Array) -> Array:
        """Return probabilities ``(N, classes)`` (binary: ``[P(0), P(1)]``) or values ``(N,)``.

        Raises:
            ModelError: the data do not fit the model.
        """
        xs, _ = self._checked(x, None)
        outputs = [
            self._interpreter.run("infer", {"x": batch["x"]})["output"][:count]
            for batch, count in self._batches(xs, None, np.arange(len(xs)))
        ]
        return np.concatenate(outputs)

    def get_weights(self) -> dict[str, Array]:
        """Return copies of the current weights, in metadata order."""
        out = self._interpreter.run("get_weights", {})
        return {w.name: out[w.name] for w in self._metadata.weights}

    def set_weights(self, weights: Mapping[str, Array]) -> None:
        """Set every weight; also sets the FedProx anchor and resets the optimizer state.

        Raises:
            ModelError: missing or unexpected names, or a wrong shape, dtype or a
                non-finite value; nothing is changed then.
        """
        specs = self._metadata.weights
        expected = [w.name for w in specs]
        missing = [n for n in expected if n not in weights]
        extra = sorted(set(weights) - set(expected))
        if missing or extra:
            raise ModelError(
                f"weights do not fit model {self._metadata.model!r}: "
                f"missing {missing}, unexpected {extra}"
            )
        for spec in specs:
            value = weights[spec.name]
            if not isinstance(value, np.ndarray) or value.dtype != np.dtype(spec.dtype):
                got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise ModelError(f"weight {spec.name!r} must be a {spec.dtype} array, got {got}")
            if value.shape != spec.shape:
                raise ModelError(
                    f"weight {spec.name!r} must have shape {spec.shape}, got {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ModelError(f"weight {spec.name!r} holds NaN or infinite values")
        self._interpreter.run("set_weights", {n: weights[n] for n in expected})

    def check_data(self, x: Array, y: Array | None = None) -> None:
        """Check that ``x`` (and ``y``) fit the model before any training.

        Raises:
            ModelError: wrong example shape, non-numeric or non-finite values, a
                label count that differs from the example count, or labels that
                are not class indices ``0..classes-1``.
        """
        self._checked(x, y)

    def _checked(self, x: Any, y: Any) -> tuple[Array, Array | None]:
        meta = self._metadata
        xs = np.asarray(x)
        if xs.ndim != len(meta.input_shape) + 1 or xs.shape[1:] != meta.input_shape:
            raise ModelError(
                f"model {meta.model!r} expects data of shape (N, "
                f"{', '.join(map(str, meta.input_shape))}), got data of shape {xs.shape}"
            )
        _check_values(xs, "x")
        if y is None:
            return xs.astype(np.float32), None
        ys = np.asarray(y)
        if ys.shape != (len(xs),):
            raise ModelError(f"labels must have shape ({len(xs)},) to match x, got {ys.shape}")
        _check_values(ys, "y")
        if meta.task != "regression":
            wrong = ys[(ys != np.round(ys)) | (ys < 0) | (ys > meta.classes - 1)]
            if wrong.size:
                raise ModelError(
                    f"model {meta.model!r} has {meta.classes} classes, so labels must be class "
                    f"indices 0..{meta.classes - 1}; found label {wrong[0]:g}"
                )
        return xs.astype(np.float32), ys.astype(np.float32)

    def _batches(
        self, x: Array, y: Array | None, order: Array
    ) -> Iterator[tuple[dict[str, Array], int]]:
        size = self._metadata.batch_size
        for start in range(0, len(order), size):
            index = order[start : start + size]
            count = len(index)
            batch = {"x": _padded(x[index], size)}
            if y is not None:
                batch["y"] = _padded(y[index], size)
                batch["mask"] = _padded(np.ones(count, np.float32), size)
            yield batch, count

    def _check_signatures(self) -> None:
        absent = [n for n in SIGNATURES if n not in self._metadata.signatures]
        if absent:
            raise ModelError(f"the model metadata lists no signature {', '.join(absent)}")
        for name, spec in self._metadata.signatures.items():
            if name not in self._interpreter.signatures:
                raise ModelError(f"the model file lacks signature {name!r} its metadata lists")
            actual = {k: v.shape for k, v in self._interpreter.inputs(name).items()}
            if actual != {k: v.shape for k, v in spec["inputs"].items()}:
                raise ModelError(f"signature {name!r} inputs {actual} differ from the metadata")


def _padded(values: Array, size: int) -> Array:
    if len(values) == size:
        return np.ascontiguousarray(values, np.float32)
    out = np.zeros((size, *values.shape[1:]), np.float32)
    out[: len(values)] = values
    return out


def _check_values(values: Array, name: str) -> None:
    if values.size == 0:
        raise ModelError(f"{name} holds no examples")
    if values.dtype.kind not in "biuf":
        raise ModelError(f"{name} must be numeric, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise ModelError(f"{name} holds NaN or infinite values")


def _read_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {os.fspath(path)!r}: {exc}") from exc
