"""Record-level DP-SGD on the device (``train_dp``): per-example clipping in a builtin-only
graph matches a TensorFlow reference of DP-SGD on the same batch, noise off; the noise
input is added to the clipped sum as given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf

from edge_client.model import TrainableModel
from edge_client.runtime import Interpreter
from models.export import custom_operators, export_trainable
from tests.models.test_parity import reference_logits, reference_loss

Array = npt.NDArray[Any]
BATCH = 8
TOLERANCE = 1e-5


def reference_dp_sgd_step(name: str, classes: int, start: dict[str, Array], x: Array, y: Array,
                          mask: Array, clip: float, denominator: float, lr: float
                          ) -> dict[str, Array]:
    """DP-SGD written plainly (Abadi et al. 2016): each example's gradient with its own
    GradientTape over the standard TF ops, clipped to ``clip``, summed, divided, one Keras
    SGD step (no momentum), noise 0."""
    weights = {k: tf.Variable(v) for k, v in start.items()}
    variables = list(weights.values())
    total = [tf.zeros_like(v) for v in variables]
    for i in np.flatnonzero(mask):
        with tf.GradientTape() as tape:
            loss = reference_loss(classes, reference_logits(name, weights, x[i:i + 1]),
                                  y[i:i + 1])
        grads = tape.gradient(loss, variables)
        norm = tf.linalg.global_norm(grads)
        total = [t + g * min(1.0, clip / float(norm)) for t, g in zip(total, grads, strict=True)]
    keras.optimizers.SGD(lr, momentum=0.0).apply_gradients(
        zip([t / denominator for t in total], variables, strict=True))
    return {k: v.numpy() for k, v in weights.items()}


@pytest.fixture(scope="module")
def dp_models(configs: dict[str, tuple[tuple[int, ...], int]]) -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if name not in cache:
            shape, classes = configs[name]
            cache[name] = export_trainable(name, shape, classes, BATCH, "sgd", momentum=0.0,
                                           dp_sgd=True)
        return cache[name]
    return get


def _inputs(model: Interpreter, x: Array, y: Array, mask: Array, clip: float,
            denominator: float, noise: dict[str, Array] | None = None) -> dict[str, Array]:
    weights = model.run("get_weights", {})
    noise = noise or {k: np.zeros_like(v) for k, v in weights.items()}
    return {"x": x.astype(np.float32), "y": y, "mask": mask, "lr": np.float32(0.1),
            "mu": np.float32(0.0), "clip": np.float32(clip),
            "denominator": np.float32(denominator),
            **{f"noise_{k}": v.astype(np.float32) for k, v in noise.items()}}


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn1d"])
def test_train_dp_matches_a_tensorflow_dp_sgd_reference_and_is_builtin_only(
        name: str, configs: dict[str, tuple[tuple[int, ...], int]],
        dp_models: Callable[[str], bytes],
        make_data: Callable[..., tuple[Array, Array]]) -> None:
    data = dp_models(name)
    assert custom_operators(data) == []
    model = Interpreter(data)
    shape, classes = configs[name]
    rng = np.random.default_rng(3)
    start = {k: (0.3 * rng.normal(size=v.shape)).astype(np.float32)
             for k, v in model.run("get_weights", {}).items()}
    model.run("set_weights", start)
    x, y = make_data(shape, classes, BATCH, 11)
    mask = (np.arange(BATCH) < 6).astype(np.float32)  # 2 masked rows
    grads_norms = []
    for clip in (0.05, 1e6):  # most examples clipped; none clipped
        model.run("set_weights", start)
        out = model.run("train_dp", _inputs(model, x, y, mask, clip, 5.0))
        want = reference_dp_sgd_step(name, classes, start, x, y, mask, clip, 5.0, 0.1)
        got = model.run("get_weights", {})
        for k, v in want.items():
            error = float(np.max(np.abs(got[k] - v)))
            assert error <= TOLERANCE, f"clip {clip}: {k} differs by {error:.2e}"
        grads_norms.append(float(out["clipped"]))
    assert grads_norms[0] >= 1 and grads_norms[1] == 0


def test_the_noise_input_is_added_to_the_clipped_sum(
        configs: dict[str, tuple[tuple[int, ...], int]], dp_models: Callable[[str], bytes],
        make_data: Callable[..., tuple[Array, Array]]) -> None:
    model = Interpreter(dp_models("logreg"))
    shape, classes = configs["logreg"]
    start = model.run("get_weights", {})
    x, y = make_data(shape, classes, BATCH, 1)
    mask = np.zeros(BATCH, np.float32)  # no example: the step is the noise alone
    noise = {k: np.random.default_rng(5).normal(size=v.shape).astype(np.float32)
             for k, v in start.items()}
    model.run("train_dp", _inputs(model, x, y, mask, 1.0, 4.0, noise))
    got = model.run("get_weights", {})
    for k, v in start.items():
        np.testing.assert_allclose(got[k], v - 0.1 * noise[k] / 4.0, rtol=0, atol=1e-6)


def test_a_dp_sgd_file_loads_on_the_device_with_its_metadata(
        dp_models: Callable[[str], bytes]) -> None:
    model = TrainableModel(dp_models("logreg"))  # checks metadata against the flatbuffer
    x = np.zeros((BATCH, 8), np.float32)
    assert len(model.fit(x, np.zeros(BATCH, np.float32), epochs=1,
                         rng=np.random.default_rng(0))) == 1  # plain train still works
