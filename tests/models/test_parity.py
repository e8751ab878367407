"""The builtin-only training graph computes the same steps as standard TensorFlow.

The reference below is written independently with the usual TF ops
(``tf.nn.relu``, ``tf.nn.conv1d``, ``tf.nn.avg_pool2d``,
``tf.nn.softmax_cross_entropy_with_logits``...), differentiated with
``tf.GradientTape`` and updated by a Keras optimizer. The exported file must
move every weight the same way within 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf

from edge_client.runtime import Interpreter
from models.zoo import task_of

Array = npt.NDArray[Any]
BATCH = 8
LEARNING_RATE = {"sgd": 0.1, "adam": 0.01}
TOLERANCE = 1e-5


def _dense(h: Any, w: dict[str, Any], index: int) -> Any:
    return tf.matmul(h, w[f"dense{index}_kernel"]) + w[f"dense{index}_bias"]


def reference_logits(name: str, w: dict[str, Any], x: Any) -> Any:
    """The zoo models written with standard TensorFlow ops."""
    n = x.shape[0]
    if name == "logreg":
        return _dense(tf.reshape(x, [n, -1]), w, 0)
    if name == "mlp":
        h = tf.nn.relu(_dense(tf.reshape(x, [n, -1]), w, 0))
        return _dense(tf.nn.relu(_dense(h, w, 1)), w, 2)
    if name == "cnn1d":
        h = tf.transpose(x, [0, 2, 1])
        for i in (0, 1):
            h = tf.nn.relu(tf.nn.conv1d(h, w[f"conv{i}_kernel"], 1, "VALID") + w[f"conv{i}_bias"])
            h = tf.nn.avg_pool1d(h, 2, 2, "VALID")
        return _dense(tf.reshape(h, [n, -1]), w, 0)
    h = tf.expand_dims(x, -1)
    for i in (0, 1):
        h = tf.nn.relu(tf.nn.conv2d(h, w[f"conv{i}_kernel"], 1, "VALID") + w[f"conv{i}_bias"])
        h = tf.nn.avg_pool2d(h, 2, 2, "VALID")
    return _dense(tf.reshape(h, [n, -1]), w, 0)


def reference_loss(classes: int, logits: Any, y: Any) -> Any:
    """Mean task loss with TensorFlow's fused ops."""
    task = task_of(classes)
    if task == "multiclass":
        labels = tf.one_hot(tf.cast(y, tf.int32), classes)
        per_example = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    elif task == "binary":
        per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits[:, 0])
    else:
        per_example = tf.math.squared_difference(logits[:, 0], y)
    return tf.reduce_mean(per_example)


class Reference:
    """Eager TF + GradientTape + Keras optimizer, with the FedProx anchor at ``start``."""

    def __init__(self, name: str, classes: int, start: dict[str, Array], optimizer: str) -> None:
        self.name, self.classes = name, classes
        self.weights = {k: tf.Variable(v) for k, v in start.items()}
        self.anchor = {k: tf.constant(v) for k, v in start.items()}
        rate = LEARNING_RATE[optimizer]
        self.optimizer = (
            keras.optimizers.SGD(rate, momentum=0.9)
            if optimizer == "sgd"
            else keras.optimizers.Adam(rate)
        )

    def step(self, x: Array, y: Array, mu: float) -> float:
        variables = list(self.weights.values())
        with tf.GradientTape() as tape:
            loss = reference_loss(self.classes, reference_logits(self.name, self.weights, x), y)
            pairs = [(self.weights[k], a) for k, a in self.anchor.items()]
            distance = tf.add_n([tf.reduce_sum(tf.square(w - a)) for w, a in pairs])
            objective = loss + 0.5 * mu * distance
        grads = tape.gradient(objective, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return float(loss)

    def numpy(self) -> dict[str, Array]:
        return {k: v.numpy() for k, v in self.weights.items()}


def _train(
    model: Interpreter, x: Array, y: Array, n: int, lr: float, mu: float, pad_seed: int = 0
) -> float:
    """One ``train`` call on the first ``n`` rows; the other rows are masked-out garbage."""
    garbage = np.random.default_rng(pad_seed)
    rows = (np.arange(BATCH) < n).reshape(-1, *[1] * (x.ndim - 1))
    xb = np.where(rows, x, 9.0 * garbage.normal(size=x.shape))
    mask = (np.arange(BATCH) < n).astype(np.float32)
    inputs = {"x": xb.astype(np.float32), "y": y, "mask": mask}
    scalars = {"lr": np.float32(lr), "mu": np.float32(mu)}
    return float(model.run("train", {**inputs, **scalars})["loss"])


def _random_weights(model: Interpreter, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    current = model.run("get_weights", {})
    return {k: (0.3 * rng.normal(size=v.shape)).astype(np.float32) for k, v in current.items()}


def _assert_weights_close(got: dict[str, Array], want: dict[str, Array], step: int) -> None:
    for name, value in want.items():
        error = float(np.max(np.abs(got[name] - value)))
        assert error <= TOLERANCE, f"step {step}: {name} differs by {error:.2e}"


@pytest.mark.parametrize("mu", [0.0, 5.0])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn1d", "cnn2d"])
def test_train_steps_match_gradient_tape_reference(
    name: str,
    optimizer: str,
    mu: float,
    configs: dict[str, tuple[tuple[int, ...], int]],
    exported: Callable[[str, str], bytes],
    make_data: Callable[..., tuple[Array, Array]],
) -> None:
    shape, classes = configs[name]
    model = Interpreter(exported(name, optimizer))
    junk_x, junk_y = make_data(shape, classes, BATCH, 5)
    for _ in range(2):  # leave momentum/Adam state and weights that set_weights must reset
        _train(model, junk_x, junk_y, BATCH, LEARNING_RATE[optimizer], 1.0)
    start = _random_weights(model, seed=3)
    model.run("set_weights", start)
    reference = Reference(name, classes, start, optimizer)
    x, y = make_data(shape, classes, 3 * BATCH, 11)
    # The last step uses 5 real rows and 3 masked rows of garbage.
    for step, n in enumerate([BATCH, BATCH, 5]):
        xb, yb = x[step * BATCH : (step + 1) * BATCH], y[step * BATCH : (step + 1) * BATCH]
        loss = _train(model, xb, yb, n, LEARNING_RATE[optimizer], mu)
        want_loss = reference.step(xb[:n], yb[:n], mu)
        assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6), f"step {step} loss"
        _assert_weights_close(model.run("get_weights", {}), reference.numpy(), step)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn1d", "cnn2d"])
def test_masked_padding_gives_the_update_of_the_short_batch(
    name: str,
    configs: dict[str, tuple[tuple[int, ...], int]],
    exported: Callable[[str, str], bytes],
    make_data: Callable[..., tuple[Array, Array]],
) -> None:
    shape, classes = configs[name]
    x, y = make_data(shape, classes, BATCH, 2)
    results = []
    for pad_seed in (0, 1):  # two different garbage paddings
        model = Interpreter(exported(name, "sgd"))
        start = _random_weights(model, seed=4)
        model.run("set_weights", start)
        _train(model, x, y, 3, 0.1, 0.0, pad_seed=pad_seed)
        results.append(model.run("get_weights", {}))
    reference = Reference(name, classes, start, "sgd")
    reference.step(x[:3], y[:3], 0.0)
    for got in results:
        _assert_weights_close(got, reference.numpy(), 0)


WEIGHTS = {2: [0.7, 2.5], 3: [0.5, 1.0, 3.0]}


def keras_weighted_loss(classes: int, logits: Any, y: Any, class_weights: list[float]) -> Any:
    """Keras's class-weighted loss: sample_weight = w[y], mean over the batch's examples."""
    sample_weight = tf.gather(tf.constant(class_weights), tf.cast(y, tf.int32))
    if classes == 2:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        return loss(y[:, None], logits, sample_weight=sample_weight)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss(y, logits, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def weighted_files(configs: dict[str, tuple[tuple[int, ...], int]]) -> dict[str, bytes]:
    """logreg (binary) and cnn1d (3 classes) exported with class weights, SGD."""
    from models.export import export_trainable

    return {name: export_trainable(name, configs[name][0], configs[name][1], BATCH, "sgd",
                                   class_weights=WEIGHTS[configs[name][1]])
            for name in ("logreg", "cnn1d")}


@pytest.mark.parametrize("name", ["logreg", "cnn1d"])
def test_class_weighted_train_steps_match_keras_weighted_loss(
    name: str,
    configs: dict[str, tuple[tuple[int, ...], int]],
    weighted_files: dict[str, bytes],
    make_data: Callable[..., tuple[Array, Array]],
) -> None:
    from models.export import custom_operators

    shape, classes = configs[name]
    data = weighted_files[name]
    assert custom_operators(data) == []  # still builtin-only
    model = Interpreter(data)
    start = _random_weights(model, seed=3)
    model.run("set_weights", start)
    weights = {k: tf.Variable(v) for k, v in start.items()}
    optimizer = keras.optimizers.SGD(LEARNING_RATE["sgd"], momentum=0.9)
    x, y = make_data(shape, classes, 3 * BATCH, 11)
    for step, n in enumerate([BATCH, BATCH, 5]):
        xb, yb = x[step * BATCH : (step + 1) * BATCH], y[step * BATCH : (step + 1) * BATCH]
        loss = _train(model, xb, yb, n, LEARNING_RATE["sgd"], 0.0)
        variables = list(weights.values())
        with tf.GradientTape() as tape:
            want = keras_weighted_loss(classes, reference_logits(name, weights, xb[:n]), yb[:n],
                                       WEIGHTS[classes])
        optimizer.apply_gradients(zip(tape.gradient(want, variables), variables, strict=True))
        assert loss == pytest.approx(float(want), rel=1e-5, abs=1e-6), f"step {step} loss"
        _assert_weights_close(model.run("get_weights", {}), {k: v.numpy() for k, v in
                                                             weights.items()}, step)
    # evaluate stays unweighted: its loss is the plain mean
    mask = np.ones(BATCH, np.float32)
    got = float(model.run("evaluate", {"x": x[:BATCH], "y": y[:BATCH], "mask": mask})["loss"])
    now = {k: tf.constant(v) for k, v in model.run("get_weights", {}).items()}
    plain = reference_loss(classes, reference_logits(name, now, x[:BATCH]), y[:BATCH])
    assert got == pytest.approx(float(plain), rel=1e-5, abs=1e-6)


def test_class_weights_are_checked_and_recorded(
    configs: dict[str, tuple[tuple[int, ...], int]], weighted_files: dict[str, bytes]
) -> None:
    from models import metadata
    from models.export import export_trainable

    assert metadata.read(weighted_files["logreg"])["class_weights"] == WEIGHTS[2]
    for bad, message in [([1.0], "one class weight per class"), ([1.0, 0.0], "> 0")]:
        with pytest.raises(ValueError, match=message):
            export_trainable("logreg", (8,), 2, BATCH, class_weights=bad)
    with pytest.raises(ValueError, match="classification"):
        export_trainable("mlp", (6,), 0, BATCH, class_weights=[1.0])
