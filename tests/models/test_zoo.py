"""The zoo's shapes, names and initial weights, computed without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.architecture import ArchitectureError
from models.zoo import NAMES, build, initial_weights, weight_shapes


def test_names_list_the_zoo_models() -> None:
    assert NAMES == ("logreg", "mlp", "cnn1d", "cnn2d", "imaging")


@pytest.mark.parametrize(
    ("name", "shape", "classes", "expected"),
    [
        ("logreg", (30,), 2, {"dense0_kernel": (30, 1), "dense0_bias": (1,)}),
        ("logreg", (30,), 5, {"dense0_kernel": (30, 5), "dense0_bias": (5,)}),
        (
            "mlp", (30,), 0,
            {"dense0_kernel": (30, 32), "dense0_bias": (32,), "dense1_kernel": (32, 16),
             "dense1_bias": (16,), "dense2_kernel": (16, 1), "dense2_bias": (1,)},
        ),
        (
            "cnn1d", (6, 100), 4,
            {"conv0_kernel": (5, 6, 16), "conv0_bias": (16,), "conv1_kernel": (3, 16, 16),
             "conv1_bias": (16,), "dense0_kernel": (23 * 16, 4), "dense0_bias": (4,)},
        ),
        (
            "cnn2d", (28, 28), 10,
            {"conv0_kernel": (3, 3, 1, 8), "conv0_bias": (8,), "conv1_kernel": (3, 3, 8, 16),
             "conv1_bias": (16,), "dense0_kernel": (5 * 5 * 16, 10), "dense0_bias": (10,)},
        ),
    ],
)  # fmt: skip
def test_weight_shapes_are_ordered_and_exact(
    name: str, shape: tuple[int, ...], classes: int, expected: dict[str, tuple[int, ...]]
) -> None:
    got = weight_shapes(name, shape, classes)
    assert list(got.items()) == list(expected.items())


def test_weight_shapes_do_not_import_tensorflow() -> None:
    code = (
        "import sys; from models.zoo import weight_shapes; "
        "weight_shapes('cnn2d', (28, 28), 10); print('tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("name", "shape", "classes", "message"),
    [
        ("resnet", (4,), 2, "unknown model 'resnet'; choose one of logreg, mlp, cnn1d, cnn2d, im"),
        ("mlp", (4,), 1, "classes must be 0 .regression., 2 .binary. or at least 3"),
        ("mlp", (4,), -2, "classes must be 0"),
        ("mlp", (0,), 2, "input shape must be non-empty and positive"),
        ("cnn1d", (100,), 4, "cnn1d cannot take input shape .100,.: ChannelsLast needs a 2-D"),
        ("cnn1d", (6, 11), 4, "cnn1d cannot take input shape .6, 11.: AvgPool1D with pool 2"),
        ("cnn2d", (28, 28, 3, 1), 4, "cnn2d cannot take input shape .28, 28, 3, 1.: Conv2D needs"),
        ("imaging", (64, 64), 4, "imaging cannot take input shape .64, 64.: Conv2D needs a 3-D"),
        ("cnn2d", (6, 28), 4, "too small"),
    ],
)
def test_bad_configurations_are_rejected_with_the_reason(
    name: str, shape: tuple[int, ...], classes: int, message: str
) -> None:
    with pytest.raises(ArchitectureError, match=message):
        build(name, shape, classes)


def test_smallest_accepted_inputs_build() -> None:
    assert build("cnn1d", (1, 12), 3).weight_shapes()["dense0_kernel"] == (16, 3)
    assert build("cnn2d", (10, 10), 3).weight_shapes()["dense0_kernel"] == (16, 3)


def test_initial_weights_are_reproducible_glorot_with_zero_biases() -> None:
    spec = build("cnn1d", (6, 100), 4)
    first, again, other = (initial_weights(spec, s) for s in (7, 7, 8))
    assert list(first) == list(spec.weight_shapes())
    for name, value in first.items():
        assert value.dtype == np.float32 and value.shape == spec.weight_shapes()[name]
        np.testing.assert_array_equal(value, again[name])
    assert not np.array_equal(first["conv0_kernel"], other["conv0_kernel"])
    assert not first["conv0_bias"].any()
    limit = np.sqrt(6.0 / (5 * 6 + 5 * 16))  # fan_in and fan_out include the kernel width
    assert 0.9 * limit < np.abs(first["conv0_kernel"]).max() <= limit


def test_mlp_takes_hidden_widths_and_dropout() -> None:
    spec = build("mlp", (30,), 2, hidden=(64, 32), dropout=0.2)
    assert list(spec.weight_shapes().items()) == [
        ("dense0_kernel", (30, 64)), ("dense0_bias", (64,)), ("dense1_kernel", (64, 32)),
        ("dense1_bias", (32,)), ("dense2_kernel", (32, 1)), ("dense2_bias", (1,))]  # fmt: skip
    assert sum(type(layer).__name__ == "Dropout" for layer in spec.layers) == 2
    with pytest.raises(ArchitectureError, match="hidden widths and dropout are mlp options"):
        build("cnn1d", (6, 100), 4, dropout=0.5)
    with pytest.raises(ArchitectureError, match="Dropout rate must be in"):
        build("mlp", (30,), 2, dropout=1.0)


def test_cnn2d_takes_channels_and_imaging_takes_rgb() -> None:
    rgb = build("cnn2d", (32, 32, 3), 10).weight_shapes()
    assert rgb["conv0_kernel"] == (3, 3, 3, 8) and rgb["dense0_kernel"] == (6 * 6 * 16, 10)
    assert build("cnn2d", (28, 28), 10).weight_shapes()["conv0_kernel"] == (3, 3, 1, 8)
    imaging = build("imaging", (64, 64, 3), 7).weight_shapes()
    assert imaging["conv0_kernel"] == (3, 3, 3, 16)
    assert imaging["sepconv1_pointwise_kernel"] == (1, 1, 32, 64)
    assert imaging["bn2_moving_variance"] == (64,) and imaging["dense0_kernel"] == (64, 7)
    initial = initial_weights(build("imaging", (64, 64, 3), 7), 0)
    assert (initial["bn0_gamma"] == 1).all() and (initial["bn0_moving_variance"] == 1).all()
    assert not initial["bn0_moving_mean"].any()
