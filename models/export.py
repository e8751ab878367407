"""Export zoo models as self-describing .tflite files that need only builtin ops.

``export_trainable`` writes a file with ``train``/``infer``/``evaluate``/
``get_weights``/``set_weights`` signatures (see :mod:`models.modules`) and
``export_inference_int8`` a post-training int8-quantized ``infer``-only file for
deployment. Both append their metadata (see :mod:`models.metadata`), and both
refuse to return a file that contains any custom (e.g. Flex) op.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from models import metadata, zoo
from models.architecture import is_state
from models.modules import InferenceModule, TrainableModule
from models.optimizers import DEFAULT_LEARNING_RATE

#: Calibration uses at most this many representative examples.
MAX_REPRESENTATIVE = 256

Array = npt.NDArray[Any]


class ExportError(RuntimeError):
    """Conversion failed, or the result would not run on a plain TFLite runtime."""


def export_trainable(
    name: str,
    input_shape: Sequence[int],
    classes: int,
    batch_size: int,
    optimizer: str = "sgd",
    seed: int = 0,
    *,
    learning_rate: float | None = None,
    hidden: Sequence[int] | None = None,
    dropout: float = 0.0,
    dp_sgd: bool = False,
    schema: Mapping[str, Any] | None = None,
    class_weights: Sequence[float] | None = None,
    **hyperparameters: float,
) -> bytes:
    """Export zoo model ``name`` as a trainable .tflite file with metadata.

    Args:
        name: one of :data:`models.zoo.NAMES`.
        input_shape: per-example input shape, e.g. ``(6, 100)`` for cnn1d.
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.
        batch_size: the fixed batch size of every signature (≥ 1).
        optimizer: "sgd" (with momentum) or "adam".
        seed: seed of the initial weights (Glorot uniform, zero biases).
        learning_rate: default learning rate written to the metadata
            (0.01 for SGD, 0.001 for Adam); ``train`` takes ``lr`` at every step.
        hidden: mlp only: hidden widths (default 32, 16).
        dropout: mlp only: dropout rate after each hidden layer.
        dp_sgd: also export the ``train_dp`` signature (record-level DP-SGD with
            per-example clipping, :mod:`models.modules`); conversion takes longer, since
            the batch is unrolled.
        **hyperparameters: ``momentum`` for SGD (0.9); ``beta_1``, ``beta_2``,
            ``epsilon`` for Adam (0.9, 0.999, 1e-7).
        schema: the federation's data schema (a dict), carried in the metadata.
        class_weights: one loss weight per class (> 0, finite) for ``train``, recorded in
            the metadata; None: unweighted.

    Returns:
        The file contents: flatbuffer followed by the metadata archive.

    Raises:
        ValueError: bad model name, shape, classes, batch size or optimizer
            (:class:`models.architecture.ArchitectureError` is a ValueError).
        ExportError: the converter failed or produced non-builtin ops.
    """
    spec = zoo.build(name, input_shape, classes, hidden=hidden, dropout=dropout)
    return export_model(spec, batch_size, zoo.initial_weights(spec, seed), None, optimizer,
                        seed, learning_rate, hyperparameters=hyperparameters, dp_sgd=dp_sgd,
                        schema=schema, class_weights=class_weights)


def export_model(
    spec: zoo.ModelSpec,
    batch_size: int,
    weights: Mapping[str, Array],
    constants: Mapping[str, Array] | None = None,
    optimizer: str = "sgd",
    seed: int | None = None,
    learning_rate: float | None = None,
    *,
    hyperparameters: Mapping[str, float] | None = None,
    dp_sgd: bool = False,
    schema: Mapping[str, Any] | None = None,
    class_weights: Sequence[float] | None = None,
) -> bytes:
    """Export any configured model (zoo or imported) with given weights as a trainable file.

    Args:
        spec: the model.
        batch_size: the fixed batch size of every signature (≥ 1).
        weights: the travelling weights, as :meth:`models.zoo.ModelSpec.weight_shapes`.
        constants: the frozen layers' weights, as ``spec.frozen_weight_shapes()``.
        optimizer, learning_rate, dp_sgd, schema, class_weights: as
            :func:`export_trainable` (DP-SGD refuses batch normalisation).
        hyperparameters: the optimizer's, as ``**hyperparameters`` of :func:`export_trainable`.
        seed: the seed of the initial weights, for the metadata (None: not seeded).

    Raises:
        ValueError: bad batch size, optimizer or weights.
        ExportError: the converter failed or produced non-builtin ops.
    """
    _check_batch_size(batch_size)
    if optimizer not in DEFAULT_LEARNING_RATE:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'sgd' or 'adam'")
    rate = DEFAULT_LEARNING_RATE[optimizer] if learning_rate is None else float(learning_rate)
    if not rate > 0:
        raise ValueError(f"learning rate must be positive, got {learning_rate}")
    _check_weights(spec, weights)
    _check_weights(spec, constants or {}, frozen=True)
    if not spec.weight_shapes():
        raise ValueError(f"{spec.name} has no trainable weights: every layer is frozen")
    if dp_sgd and any(is_state(name) for name in spec.weight_shapes()):
        raise ValueError(f"{spec.name}: DP-SGD needs each example's own gradient, and batch "
                         "normalisation's statistics mix the examples of a batch: leave out "
                         "--dp-sgd or the BatchNormalization layers")
    checked = _check_class_weights(spec, class_weights)
    try:
        module = TrainableModule(spec, batch_size, weights, optimizer, hyperparameters or {},
                                 constants, checked, dp_sgd=dp_sgd)
    except TypeError as exc:
        raise ValueError(f"bad hyperparameter for {optimizer}: {exc}") from exc
    flatbuffer = _convert(module, module.signatures(), representative=None)
    settings = {"name": optimizer, "learning_rate": rate, **module.optimizer.hyperparameters()}
    meta = metadata.describe(spec, batch_size, kind="trainable", optimizer=settings, seed=seed,
                             dp_sgd=dp_sgd, schema=schema, class_weights=checked)
    return metadata.attach(flatbuffer, meta)


def export_inference_int8(
    name: str,
    input_shape: Sequence[int],
    classes: int,
    weights: Mapping[str, Array],
    representative_x: Array,
    *,
    batch_size: int = 1,
) -> bytes:
    """Export an int8 post-training-quantized inference model from given weights.

    Weights and activations are int8 (per-channel weights); the ``infer``
    signature keeps float32 input ``x`` and output, so callers need not know
    the quantization parameters.

    Args:
        name: one of :data:`models.zoo.NAMES`.
        input_shape: per-example input shape.
        classes: 0 for regression, 2 for binary, K ≥ 3 for multiclass.
        weights: every weight by name, shapes as in :func:`models.zoo.weight_shapes`.
        representative_x: ``(N, *input_shape)`` examples to calibrate activation
            ranges (at most :data:`MAX_REPRESENTATIVE` are used).
        batch_size: fixed batch size of ``infer``.

    Raises:
        ValueError: bad model configuration, weights or representative data.
        ExportError: the converter failed or produced non-builtin ops.
    """
    spec = zoo.build(name, input_shape, classes)
    return export_spec_int8(spec, weights, representative_x, batch_size=batch_size)


def export_spec_int8(
    spec: zoo.ModelSpec,
    weights: Mapping[str, Array],
    representative_x: Array,
    *,
    constants: Mapping[str, Array] | None = None,
    batch_size: int = 1,
) -> bytes:
    """:func:`export_inference_int8` for any configured model (zoo or imported).

    ``weights`` are the travelling weights, ``constants`` the frozen layers' ones.
    """
    _check_batch_size(batch_size)
    _check_weights(spec, weights)
    _check_weights(spec, constants or {}, frozen=True)
    samples = np.asarray(representative_x, dtype=np.float32)
    if samples.ndim != len(spec.input_shape) + 1 or samples.shape[1:] != spec.input_shape:
        raise ValueError(
            f"representative_x must have shape (N, {', '.join(map(str, spec.input_shape))}), "
            f"got {samples.shape}"
        )
    if len(samples) < batch_size:
        raise ValueError(f"need at least {batch_size} representative examples, got {len(samples)}")
    module = InferenceModule(spec, batch_size, {**(constants or {}), **weights})
    flatbuffer = _convert(module, module.signatures(), representative=samples[:MAX_REPRESENTATIVE])
    meta = metadata.describe(
        spec, batch_size, kind="inference", optimizer=None, quantization="int8"
    )
    return metadata.attach(flatbuffer, meta)


def custom_operators(data: bytes) -> list[str]:
    """Return the custom (non-builtin, e.g. ``Flex*``) operators of a .tflite file."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    return [code.customCode.decode() for code in model.operatorCodes if code.customCode]


def _check_class_weights(
    spec: zoo.ModelSpec, class_weights: Sequence[float] | None
) -> tuple[float, ...] | None:
    if class_weights is None:
        return None
    weights = tuple(float(w) for w in class_weights)
    if spec.task == "regression":
        raise ValueError("class weights need a classification model (--classes >= 2)")
    if len(weights) != spec.classes:
        raise ValueError(f"need one class weight per class ({spec.classes}), got {len(weights)}")
    if not all(np.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"class weights must be finite and > 0, got {list(weights)}")
    return weights


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")


def _check_weights(
    spec: zoo.ModelSpec, weights: Mapping[str, Array], *, frozen: bool = False
) -> None:
    expected = spec.frozen_weight_shapes() if frozen else spec.weight_shapes()
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"weights do not match {spec.name}: missing {missing}, unexpected {extra}")
    for weight_name, shape in expected.items():
        got = np.shape(weights[weight_name])
        if got != shape:
            raise ValueError(f"weight {weight_name!r} must have shape {shape}, got {got}")


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    # SavedModel logs an INFO line per signature about renamed resource inputs.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl.setLevel(level)


def _convert(module: Any, signatures: Mapping[str, Any], representative: Array | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fedge-export-") as directory, _quiet_absl():
        tf.saved_model.save(module, directory, signatures=dict(signatures))
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if representative is None:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            converter.experimental_enable_resource_variables = True
        else:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = _calibration(representative, module.batch_size)
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as exc:  # the converter raises many unrelated types
            raise ExportError(f"TFLite conversion of {module.name} failed: {exc}") from exc
    custom = custom_operators(flatbuffer)
    if custom:
        raise ExportError(f"{module.name} needs non-builtin ops {custom}; it would not load")
    return flatbuffer


def _calibration(samples: Array, batch_size: int) -> Any:
    def batches() -> Iterator[dict[str, Array]]:
        for start in range(0, len(samples) - batch_size + 1, batch_size):
            yield {"x": samples[start : start + batch_size]}

    return batches
