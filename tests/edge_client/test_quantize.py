"""Update codecs: accuracy bounds, unbiased stochastic rounding, error feedback."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_client.errors import ValidationError
from edge_client.protocol import CODECS, Tensor, TensorSet, Update
from edge_client.quantize import (
    dequantize,
    dequantize_update,
    int8_scales,
    quantize,
    quantize_update,
    residual_from_bytes,
    residual_to_bytes,
)

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
dtypes = st.sampled_from(["float32", "float64", "float16", "int8", "int32"])


@st.composite
def arrays(draw: st.DrawFn) -> npt.NDArray[Any]:
    dtype = np.dtype(draw(dtypes))
    if dtype.kind == "f":
        bound = 1e4 if dtype.itemsize > 2 else 1e3
        width: Literal[16, 32] = 16 if dtype.itemsize == 2 else 32
        elements = st.floats(-bound, bound, width=width)
    else:
        elements = st.integers(-100, 100)
    return draw(hnp.arrays(dtype, draw(shapes), elements=elements))


def _per_element(scales: npt.NDArray[Any], ndim: int) -> npt.NDArray[Any]:
    return scales if ndim >= 2 else scales.reshape(())


@settings(max_examples=300, deadline=None)
@given(arrays(), st.sampled_from(CODECS), st.booleans(), st.integers(0, 2**32))
def test_every_codec_round_trips_every_dtype_and_shape(
    values: npt.NDArray[Any], codec: str, stochastic: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed) if stochastic else None
    tensor = quantize("w", values, codec, rng=rng)
    wire = Update("f", 1, "c", 0, "0" * 64, b"n" * 8, 1, {}, codec, (tensor,))
    decoded = Update.decode(wire.encode()).tensors[0]
    assert decoded == tensor
    restored = dequantize(decoded)
    assert restored.shape == values.shape and restored.dtype == np.float32
    exact = values.astype(np.float32).astype(np.float64)
    error = np.abs(restored.astype(np.float64) - exact)
    if codec == "fp32":
        assert np.array_equal(restored, values.astype(np.float32))
    elif codec == "fp16":
        assert np.all(error <= np.abs(exact) * 2.0**-11 + 2.0**-24)
    else:
        quantum = _per_element(int8_scales(values.astype(np.float32)).astype(np.float64),
                               values.ndim)
        bound = quantum * (1.0 if stochastic else 0.5)
        assert np.all(error <= bound * (1 + 1e-6) + np.abs(exact) * 2.0**-23)


def test_per_channel_scales_follow_the_last_axis() -> None:
    kernel = np.array([[1.0, -20.0, 0.0], [-2.54, 5.0, 0.0]], np.float32)
    scales = int8_scales(kernel)
    assert scales.shape == (3,)
    assert scales[0] >= 2.54 / 127 and scales[1] >= 20 / 127 and scales[2] == 0
    assert int8_scales(np.array(3.0, np.float32)).shape == (1,)
    assert int8_scales(np.zeros((0,), np.float32)).tolist() == [0.0]
    assert int8_scales(np.zeros((4, 0), np.float32)).shape == (0,)


def test_all_zero_empty_and_scalar_tensors() -> None:
    cases: tuple[Any, ...] = (np.zeros((3, 4)), np.zeros((0, 4)), np.zeros((4, 0)),
                              np.array(2.5), [])
    for values in cases:
        for codec in CODECS:
            restored = dequantize(quantize("t", values, codec))
            assert restored.shape == np.shape(values)
            assert np.allclose(restored, np.asarray(values, np.float32), rtol=1e-6, atol=0)


def test_round_to_nearest_error_is_at_most_half_a_quantum() -> None:
    values = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
    tensor = quantize("w", values, "int8")
    quantum = tensor.scale_values().astype(np.float64)
    error = np.abs(dequantize(tensor).astype(np.float64) - values)
    assert np.all(error <= quantum / 2 * (1 + 1e-6))
    assert np.max(error / quantum) > 0.45  # the bound is tight, not vacuous


def _mean_error(
    values: npt.NDArray[Any], draws: int, rng: np.random.Generator | None
) -> npt.NDArray[Any]:
    total = np.zeros(values.shape)
    for _ in range(draws):
        total += dequantize(quantize("w", values, "int8", rng=rng)) - values
    return total / draws


def test_stochastic_rounding_is_unbiased() -> None:
    # one element pins the scale at 0.01; the others sit at fractions of a quantum
    values = np.array([1.27, 0.003, -0.0071, 0.4949, 0.5051, 0.0], np.float32)
    quantum = float(quantize("w", values, "int8").scale_values()[0])
    draws = 4000
    # each draw's error is within one quantum, so its std is at most quantum / 2
    bound = 5 * (quantum / 2) / math.sqrt(draws)
    unbiased = _mean_error(values, draws, np.random.default_rng(7))
    assert np.all(np.abs(unbiased) < bound)
    biased = _mean_error(values, 50, None)  # round-to-nearest: same test must fail
    assert np.any(np.abs(biased) > bound)


@pytest.mark.parametrize("stochastic", [False, True])
def test_error_feedback_tracks_the_fp32_sum(stochastic: bool) -> None:
    rng = np.random.default_rng(3)
    shapes = {"kernel": (16, 4), "bias": (4,), "scalar": ()}
    residual: dict[str, npt.NDArray[Any]] = {}
    true_sum = {n: np.zeros(s) for n, s in shapes.items()}
    sent_sum = {n: np.zeros(s) for n, s in shapes.items()}
    for _ in range(300):
        delta = {n: (rng.normal(size=s) * 0.01 + 0.003).astype(np.float32)
                 for n, s in shapes.items()}
        tensors, residual = quantize_update(delta, "int8", residual,
                                            rng=rng if stochastic else None)
        for name, restored in dequantize_update(tensors).items():
            true_sum[name] += delta[name]
            sent_sum[name] += restored
        quanta = {t.name: _per_element(t.scale_values().astype(np.float64), len(t.shape))
                  for t in tensors}
    for name in shapes:
        drift = np.abs(sent_sum[name] - true_sum[name])
        assert np.all(drift <= quanta[name] * (1 + 1e-3)), name


def test_without_error_feedback_a_small_bias_is_lost() -> None:
    # the counterfactual for the test above: deltas of a third of a quantum vanish
    delta = {"w": np.array([1.27, 0.0033], np.float32)}
    sent = sum(dequantize_update(quantize_update(delta, "int8")[0])["w"][1] for _ in range(30))
    assert sent == 0.0
    residual: dict[str, npt.NDArray[Any]] = {}
    total = 0.0
    for _ in range(30):
        tensors, residual = quantize_update(delta, "int8", residual)
        total += float(dequantize_update(tensors)["w"][1])
    assert abs(total - 30 * 0.0033) <= 0.01


def test_residual_serialises_losslessly() -> None:
    rng = np.random.default_rng(5)
    residual = {"a": rng.normal(size=(3, 2)).astype(np.float32),
                "b": np.float32(0.5) * np.ones((), np.float32), "c": np.zeros((0,), np.float32)}
    restored = residual_from_bytes(residual_to_bytes(residual))
    assert restored.keys() == residual.keys()
    for name in residual:
        assert np.array_equal(restored[name], residual[name])
        assert restored[name].dtype == np.float32


def test_residual_must_fit_the_update() -> None:
    with pytest.raises(ValidationError, match="do not match"):
        quantize_update({"a": np.zeros(2)}, "int8", {"b": np.zeros(2, np.float32)})
    with pytest.raises(ValidationError, match="shape"):
        quantize_update({"a": np.zeros(2)}, "int8", {"a": np.zeros(3, np.float32)})


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValidationError, match="non-finite"):
        quantize("w", np.array([1.0, np.nan]), "int8")
    with pytest.raises(ValidationError, match="unknown codec"):
        quantize("w", np.zeros(2), "int4")
    with pytest.raises(ValidationError, match="not numeric"):
        quantize("w", np.array(["a"]), "fp32")
    lossy = TensorSet((quantize("a", np.ones(2), "int8"),)).encode()
    with pytest.raises(ValidationError, match="expected fp32"):
        residual_from_bytes(lossy)


def test_fp16_clips_instead_of_overflowing() -> None:
    restored = dequantize(quantize("w", np.array([1e6, -1e6], np.float32), "fp16"))
    assert restored.tolist() == [65504.0, -65504.0]


def test_wire_tensor_is_self_describing() -> None:
    tensor = quantize("conv/kernel", np.ones((2, 3), np.float32), "int8")
    assert (tensor.codec, tensor.dtype, tensor.shape) == ("int8", "int8", (2, 3))
    assert len(tensor.scales) == 3 * 4 and len(tensor.data) == 6
    assert isinstance(tensor, Tensor)
