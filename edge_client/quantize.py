"""Update codecs: ``fp32``, ``fp16`` and ``int8``, with error feedback.

``int8`` is symmetric: one float32 scale per output channel (the last axis) for
tensors of two or more dimensions, one per tensor for scalars and vectors, so
``value ≈ q * scale`` with ``q`` in ``[-127, 127]``. Rounding is to nearest, or
stochastic (unbiased) when a ``numpy.random.Generator`` is passed.

Error feedback keeps what quantization lost: :func:`quantize_update` adds the
previous residual to the new delta before quantizing and returns the new residual,
which the client persists with :func:`residual_to_bytes` and feeds to the next round.
Everything here is a pure function; the client owns the residual and the generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ValidationError
from edge_client.protocol import CODEC_DTYPES, CODECS, Tensor, TensorSet

Float32Array = npt.NDArray[np.float32]
Residual = dict[str, Float32Array]
INT8_LEVELS = 127
FP16_MAX = float(np.finfo(np.float16).max)


def _as_float32(values: npt.ArrayLike, name: str) -> Float32Array:
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise ValidationError(f"tensor {name!r}: dtype {array.dtype} is not numeric")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValidationError(f"tensor {name!r}: non-finite values (or beyond float32 range)")
    return array


def int8_scales(values: Float32Array) -> Float32Array:
    """Per-channel symmetric scales: ``max|x| / 127``, rounded up to a float32.

    Args:
        values: a finite float32 array.

    Returns:
        One scale per last-axis channel for >=2-D input, else a single scale;
        0 for an all-zero (or empty) channel.
    """
    magnitude = np.abs(values.astype(np.float64))
    if values.ndim >= 2:
        channels = values.shape[-1]
        if channels == 0:
            return np.zeros(0, dtype=np.float32)
        peak = magnitude.reshape(-1, channels).max(axis=0, initial=0.0)
    else:
        peak = np.array([magnitude.max(initial=0.0)])
    scales: Float32Array = (np.asarray(peak, dtype=np.float64) / INT8_LEVELS).astype(np.float32)
    # float32 rounding may land just below peak/127; one ulp up keeps |x|/scale <= 127
    low = scales.astype(np.float64) * INT8_LEVELS < peak
    scales[low] = np.nextafter(scales[low], np.float32(np.inf))
    return scales


def _per_element(scales: npt.NDArray[Any], ndim: int) -> npt.NDArray[Any]:
    return scales if ndim >= 2 else scales.reshape(())


def _int8(values: Float32Array, rng: np.random.Generator | None) -> tuple[bytes, bytes]:
    scales = int8_scales(values)
    divisor = _per_element(scales.astype(np.float64), values.ndim)
    ratio = np.divide(values.astype(np.float64), divisor,
                      out=np.zeros(values.shape, dtype=np.float64), where=divisor > 0)
    levels = np.rint(ratio) if rng is None else np.floor(ratio + rng.random(ratio.shape))
    q = np.clip(levels, -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return scales.astype("<f4").tobytes(), q.tobytes()


def quantize(
    name: str, values: npt.ArrayLike, codec: str, *, rng: np.random.Generator | None = None
) -> Tensor:
    """Encode one tensor with ``codec``.

    Args:
        name: tensor name.
        values: any finite real array; it is taken as float32.
        codec: ``fp32``, ``fp16`` (values beyond ±65504 are clipped) or ``int8``.
        rng: int8 only: stochastic rounding draws from it; ``None`` rounds to nearest.

    Returns:
        The wire :class:`~edge_client.protocol.Tensor`.

    Raises:
        ValidationError: unknown codec, non-numeric or non-finite values.
    """
    if codec not in CODECS:
        raise ValidationError(f"tensor {name!r}: unknown codec {codec!r}, expected one of {CODECS}")
    array = _as_float32(values, name)
    scales = b""
    if codec == "fp32":
        data = array.astype("<f4").tobytes()
    elif codec == "fp16":
        data = np.clip(array, -FP16_MAX, FP16_MAX).astype("<f2").tobytes()
    else:
        scales, data = _int8(array, rng)
    return Tensor(name=name, codec=codec, dtype=CODEC_DTYPES[codec],
                  shape=tuple(int(d) for d in array.shape), scales=scales, data=data)


def dequantize(tensor: Tensor) -> Float32Array:
    """Decode a wire tensor back to a new, writable float32 array."""
    values = tensor.values()
    if tensor.codec != "int8":
        return values.astype(np.float32)
    scales = _per_element(tensor.scale_values().astype(np.float64), values.ndim)
    restored: Float32Array = (values.astype(np.float64) * scales).astype(np.float32)
    return restored


def _check_residual(delta: Mapping[str, Any], residual: Mapping[str, Float32Array]) -> None:
    if residual and set(residual) != set(delta):
        raise ValidationError(
            f"residual tensors {sorted(residual)} do not match update tensors {sorted(delta)}; "
            "drop the residual when the model changes")
    for name, values in residual.items():
        if np.shape(values) != np.shape(delta[name]):
            raise ValidationError(f"residual {name!r}: shape {np.shape(values)} does not match "
                                  f"the update's {np.shape(delta[name])}")


def quantize_update(
    delta: Mapping[str, npt.ArrayLike],
    codec: str,
    residual: Mapping[str, Float32Array] | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[tuple[Tensor, ...], Residual]:
    """Quantize a model delta with error feedback.

    Args:
        delta: tensor name → update (new weights minus base weights).
        codec: ``fp32``, ``fp16`` or ``int8``.
        residual: what the previous call lost (empty or ``None`` on the first round);
            it must have the same names and shapes as ``delta``.
        rng: int8 stochastic rounding; ``None`` rounds to nearest.

    Returns:
        The wire tensors (in ``delta`` order) and the new residual
        ``delta + residual - dequantize(tensors)`` to keep for the next round.

    Raises:
        ValidationError: bad values or a residual that does not fit the delta.
    """
    residual = residual or {}
    _check_residual(delta, residual)
    tensors: list[Tensor] = []
    new_residual: Residual = {}
    for name, values in delta.items():
        corrected = _as_float32(values, name)
        if name in residual:
            corrected = corrected + _as_float32(residual[name], name)
        tensor = quantize(name, corrected, codec, rng=rng)
        tensors.append(tensor)
        new_residual[name] = (corrected - dequantize(tensor)).astype(np.float32)
    return tuple(tensors), new_residual


def dequantize_update(tensors: Iterable[Tensor]) -> dict[str, Float32Array]:
    """Decode wire tensors to name → float32 array."""
    return {tensor.name: dequantize(tensor) for tensor in tensors}


def residual_to_bytes(residual: Mapping[str, npt.ArrayLike]) -> bytes:
    """Serialise a residual losslessly (a ``TensorSet`` of fp32 tensors, no pickle)."""
    tensors = tuple(quantize(name, residual[name], "fp32") for name in sorted(residual))
    return TensorSet(tensors=tensors).encode()


def residual_from_bytes(data: bytes) -> Residual:
    """Inverse of :func:`residual_to_bytes`.

    Raises:
        ProtocolError: the bytes are not a valid fp32 tensor set.
        ValidationError: a tensor in it is not fp32.
    """
    tensors = TensorSet.decode(data).tensors
    for tensor in tensors:
        if tensor.codec != "fp32":
            raise ValidationError(f"residual {tensor.name!r}: codec {tensor.codec}, expected fp32")
    return dequantize_update(tensors)
