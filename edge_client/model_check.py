"""The checks a model file passes before any TFLite interpreter sees it (numpy and stdlib).

A model file comes from the network or a disk and is untrusted: the runtimes' Python
interpreters follow its offsets unchecked (a truncated file segfaults them) and allocate
whatever its shapes ask for (a 22 KB file exported with batch size 67,108,864 asks for
16 GB). :func:`check_model_file` refuses such a file with a reason, in this order:

1. its size (at most one transfer, :data:`~edge_client.protocol.MAX_TRANSFER_BYTES`);
2. its metadata (``fedge.json``, :func:`~edge_client.model_file.read_metadata`) and their
   bounds: the batch size, each tensor and all weights together (:class:`ModelLimits`);
3. the flatbuffer's structure, exactly up to the fedge archive
   (:func:`~edge_client.flatbuffer.read_flatbuffer`);
4. the memory its tensors declare: each tensor, and all of them together (the arena
   estimate: what the runtime allocates for fixed shapes, before kernel scratch space);
5. the metadata agreeing with the flatbuffer: every signature the metadata lists exists
   with the same input and output names, shapes and dtypes, and the weights the metadata
   declare are what ``get_weights`` returns and ``set_weights`` takes.

What passes may still crash a kernel (a nonsensical op option): the first load of a new
model on a device or an aggregator is therefore made in a child process first
(:mod:`edge_client.probe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_client.errors import ModelError
from edge_client.flatbuffer import FlatModel, read_flatbuffer
from edge_client.model_file import ModelMetadata, archive_start, read_metadata
from edge_client.protocol import MAX_TRANSFER_BYTES, TensorSpec

MiB = 1 << 20


@dataclass(frozen=True)
class ModelLimits:
    """Bounds on what a model file may ask for (bytes unless named otherwise)."""

    #: what one transfer may carry: a larger file could not reach a device anyway
    max_file_bytes: int = MAX_TRANSFER_BYTES
    #: far above any on-device batch (the zoo uses 8-256); 67,108,864 was seen in the wild
    max_batch_size: int = 65_536
    #: one tensor: 64 Mi float32 values, e.g. a batch of 65,536 examples of 256 features
    max_tensor_bytes: int = 256 * MiB
    #: all weights together: the global weights travel as one Weights message
    max_weight_bytes: int = MAX_TRANSFER_BYTES
    #: every tensor of every subgraph together; a Raspberry Pi has 1-8 GiB of RAM
    max_arena_bytes: int = 512 * MiB


DEFAULT_LIMITS = ModelLimits()


@dataclass(frozen=True)
class CheckedModel:
    """A model file that passed :func:`check_model_file`."""

    metadata: ModelMetadata
    flatbuffer: bytes  # exactly the TFLite flatbuffer: what an interpreter is given
    structure: FlatModel


def _nbytes(spec: TensorSpec) -> int:
    return math.prod(spec.shape) * np.dtype(spec.dtype).itemsize


def _check_bounds(meta: ModelMetadata, limits: ModelLimits) -> None:
    if meta.batch_size > limits.max_batch_size:
        raise ModelError(f"model metadata: batch size {meta.batch_size:,} is above the bound "
                         f"of {limits.max_batch_size:,}")
    tensors = [TensorSpec("input", (meta.batch_size, *meta.input_shape), "float32"),
               TensorSpec("output", (meta.batch_size, *meta.output_shape), "float32"),
               *meta.weights,
               *(t for sig in meta.signatures.values() for side in sig.values()
                 for t in side.values())]
    for spec in tensors:
        if _nbytes(spec) > limits.max_tensor_bytes:
            raise ModelError(f"model metadata: tensor {spec.name!r} {list(spec.shape)} takes "
                             f"{_nbytes(spec):,} bytes; the bound is "
                             f"{limits.max_tensor_bytes:,}")
    weights = sum(_nbytes(w) for w in meta.weights)
    if weights > limits.max_weight_bytes:
        raise ModelError(f"model metadata: the weights take {weights:,} bytes; the bound is "
                         f"{limits.max_weight_bytes:,}")


def _check_memory(flat: FlatModel, limits: ModelLimits) -> None:
    for tensors in flat.subgraphs:
        for t in tensors:
            if t.nbytes > limits.max_tensor_bytes:
                raise ModelError(f"tensor {t.name!r} {t.dtype}{list(t.shape)} of the flatbuffer "
                                 f"takes {t.nbytes:,} bytes; the bound is "
                                 f"{limits.max_tensor_bytes:,}")
    total = flat.tensor_bytes()
    if total > limits.max_arena_bytes:
        raise ModelError(f"the model's tensors take {total:,} bytes together; the bound on "
                         f"its memory is {limits.max_arena_bytes:,}")


def _specs(tensors: dict[str, TensorSpec]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (spec.shape, spec.dtype) for name, spec in sorted(tensors.items())}


def _check_agreement(meta: ModelMetadata, flat: FlatModel) -> None:
    """The metadata describe the flatbuffer: signatures, weights and batch size."""
    for name, sides in meta.signatures.items():
        if name not in flat.signatures:
            raise ModelError(f"the model metadata list signature {name!r}; the flatbuffer "
                             f"has {', '.join(sorted(flat.signatures)) or 'none'}")
        for side, declared in sides.items():
            actual = _specs(flat.specs(name, side))
            if actual != _specs(declared):
                raise ModelError(f"signature {name!r} {side} {actual} differ from the "
                                 f"metadata's {_specs(declared)}")
        x = sides["inputs"].get("x")
        if x is not None and x.shape != (meta.batch_size, *meta.input_shape):
            raise ModelError(f"signature {name!r} input 'x' has shape {x.shape}; the metadata "
                             f"say batch size {meta.batch_size} of {meta.input_shape}")
    weights = _specs({w.name: w for w in meta.weights})
    for name, side in (("get_weights", "outputs"), ("set_weights", "inputs")):
        if name in meta.signatures and _specs(meta.signatures[name][side]) != weights:
            raise ModelError(f"signature {name!r} {side} differ from the weights the "
                             f"metadata declare {weights}")


def check_model_file(data: bytes, limits: ModelLimits = DEFAULT_LIMITS) -> CheckedModel:
    """Check a model file before any interpreter loads it (see the module docstring).

    Raises:
        ModelError: the first check that fails, saying what and the bound it broke.
    """
    if not 0 < len(data) <= limits.max_file_bytes:
        raise ModelError(f"the model file is {len(data):,} bytes; the bound is "
                         f"{limits.max_file_bytes:,}")
    meta = read_metadata(data)
    _check_bounds(meta, limits)
    flatbuffer = data[: archive_start(data)]
    structure = read_flatbuffer(flatbuffer)
    _check_memory(structure, limits)
    _check_agreement(meta, structure)
    return CheckedModel(meta, flatbuffer, structure)
