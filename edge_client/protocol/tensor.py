"""The self-describing tensor every weights, update and tensor-set payload carries.

A :class:`Tensor` names its codec, dtype and shape, and its sizes are checked
against the caps and the data length before any array is made from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.protocol.limits import (
    CODEC_DTYPES,
    MAX_ELEMENTS,
    MAX_NDIM,
    MAX_TENSORS,
    NUMPY_DTYPES,
    _check,
    _codec,
    _short,
    _text,
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor: a model weight, or a signature's input or output.

    The one description of a tensor that carries no values: the model file's metadata
    lists its weights and signatures with it, the runtime reports what a signature takes,
    and the aggregator checks every update's delta against the model's.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def of(cls, weights: Mapping[str, npt.NDArray[Any]]) -> tuple[TensorSpec, ...]:
        """The spec of a set of weights (e.g. the global model), in name order."""
        return tuple(
            cls(name, tuple(int(d) for d in arr.shape), str(arr.dtype))
            for name, arr in sorted(weights.items())
        )


@dataclass(frozen=True)
class Tensor:
    """A self-describing tensor on the wire.

    Attributes:
        name: tensor name, as in the model's weights.
        codec: ``fp32``, ``fp16`` or ``int8``.
        dtype: element type of ``data``: ``float32``, ``float16`` or ``int8``, fixed by codec.
        shape: dimensions; ``()`` is a scalar, a zero dimension an empty tensor.
        scales: int8 only: little-endian float32 scales, one per output channel
            (last axis) for >=2-D tensors, one for 0-D/1-D; empty for other codecs.
        data: elements, little-endian, C order.
    """

    name: str
    codec: str
    dtype: str
    shape: tuple[int, ...]
    scales: bytes
    data: bytes

    def __post_init__(self) -> None:
        _text(self.name, "name")
        _check(len(self.name) > 0, "name", "must not be empty")
        _codec(self.codec)
        _check(self.dtype == CODEC_DTYPES[self.codec], "dtype",
               f"{_short(self.dtype)} does not match codec {self.codec}")
        self._check_sizes()
        self._check_values()

    @property
    def channels(self) -> int:
        """Number of int8 scales this tensor needs."""
        return self.shape[-1] if len(self.shape) >= 2 else 1

    def values(self) -> npt.NDArray[Any]:
        """The raw elements as a read-only array of ``dtype`` (no copy)."""
        return np.frombuffer(self.data, dtype=NUMPY_DTYPES[self.dtype]).reshape(self.shape)

    def scale_values(self) -> npt.NDArray[np.float32]:
        """The int8 scales as a read-only float32 array (empty for other codecs)."""
        return np.frombuffer(self.scales, dtype="<f4")

    def _check_sizes(self) -> None:
        _check(len(self.shape) <= MAX_NDIM, "shape", f"more than {MAX_NDIM} dimensions")
        _check(all(0 <= d <= MAX_ELEMENTS for d in self.shape), "shape",
               f"dimensions must be in [0, {MAX_ELEMENTS}]")
        count = math.prod(self.shape)
        _check(count <= MAX_ELEMENTS, "shape", f"{count} elements exceeds {MAX_ELEMENTS}")
        expected = count * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize
        _check(len(self.data) == expected, "data", f"{len(self.data)} bytes, expected {expected} "
               f"for shape {self.shape} {self.dtype} (tensor {_short(self.name)})")
        want = 4 * self.channels if self.codec == "int8" else 0
        _check(len(self.scales) == want, "scales", f"{len(self.scales)} bytes, expected {want}")

    def _check_values(self) -> None:
        scales = self.scale_values()
        _check(bool(np.all(np.isfinite(scales) & (scales >= 0))), "scales",
               "must be finite and >= 0")
        values = self.values()
        if self.codec == "int8":
            _check(not np.any(values == -128), "data", "int8 value -128 is outside [-127, 127]")
        else:
            _check(bool(np.all(np.isfinite(values))), "data",
                   f"non-finite values (tensor {_short(self.name)})")



def _unique_tensors(tensors: tuple[Tensor, ...]) -> None:
    _check(len(tensors) <= MAX_TENSORS, "tensors", f"more than {MAX_TENSORS} tensors")
    _check(len({t.name for t in tensors}) == len(tensors), "tensors", "duplicate tensor names")

