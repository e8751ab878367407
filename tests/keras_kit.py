"""One-step parity of an imported Keras model with the Keras model itself.

The reference is the original Keras model: its ``call(training=True)``, its loss and
regularisation losses, ``tf.GradientTape`` and a Keras optimizer. The exported file's
``train`` step (run in ``tf.lite``) must move every travelling weight, batch-norm
statistics included, the same way within :data:`TOLERANCE`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from edge_client.runtime import Interpreter
from models.export import custom_operators, export_model
from models.keras_import import Imported, convert

Array = npt.NDArray[Any]
TOLERANCE = 1e-5
LEARNING_RATE = {"sgd": 0.05, "adam": 0.01}
#: Adam's epsilon in both implementations: with Keras's default 1e-7 a gradient of
#: round-off size (1e-9, e.g. an embedding row's sum of cancelling terms) moves by a
#: sizeable part of ``lr`` in one implementation and not in the other (seen: 9e-3).
ADAM_EPSILON = 1e-4


def export_imported(imported: Imported, batch: int, optimizer: str) -> bytes:
    """The trainable file of ``imported``, SGD with momentum 0.9 or default Adam."""
    extra = {"momentum": 0.9} if optimizer == "sgd" else {"epsilon": ADAM_EPSILON}
    return export_model(imported.spec, batch, imported.weights, constants=imported.constants,
                        optimizer=optimizer, learning_rate=LEARNING_RATE[optimizer],
                        hyperparameters=extra)


def builtin_only(data: bytes) -> list[str]:
    """The file's custom (Flex) operators: empty when it runs on a plain runtime."""
    return custom_operators(data)


def keras_step(model: Any, loss: str, optimizer: str, x: Array, y: Array) -> float:
    """One training step of the Keras model itself; returns the task loss before it."""
    rate = LEARNING_RATE[optimizer]
    keras_optimizer = (keras.optimizers.SGD(rate, momentum=0.9) if optimizer == "sgd"
                       else keras.optimizers.Adam(rate, epsilon=ADAM_EPSILON))
    loss_fn = keras.losses.get(loss)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        target = y if loss == "sparse_categorical_crossentropy" else y[:, None]
        task = tf.reduce_mean(loss_fn(target, out))
        total = task + tf.add_n(model.losses) if model.losses else task
    variables = model.trainable_variables
    # Dense gradients: Keras applies an embedding's IndexedSlices row by row, squaring
    # each occurrence of a code separately in Adam's second moment; fedge's one-hot
    # embedding has a dense gradient, and Adam's rule is defined on it.
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(total, variables)]
    keras_optimizer.apply_gradients(zip(grads, variables, strict=True))
    return float(task)


def assert_one_step_parity(model: Any, loss: str, optimizer: str, x: Array, y: Array,
                           real: int | None = None) -> bytes:
    """Export ``model``, train one step on the file and on Keras; weights must agree.

    ``real`` < ``len(x)``: only the first ``real`` rows are real (mask 1); the others are
    replaced by large garbage, and Keras steps on the real rows alone.
    """
    imported = convert(model, loss=loss)
    data = export_imported(imported, len(x), optimizer)
    assert builtin_only(data) == []
    interpreter = Interpreter(data)
    real = len(x) if real is None else real
    mask = (np.arange(len(x)) < real).astype(np.float32)
    garbage = 9.0 * np.random.default_rng(99).normal(size=x.shape)
    padded = np.where(mask.reshape(-1, *[1] * (x.ndim - 1)) > 0, x, garbage)
    got_loss = float(interpreter.run("train", {
        "x": padded.astype(np.float32), "y": y.astype(np.float32), "mask": mask,
        "lr": np.float32(LEARNING_RATE[optimizer]), "mu": np.float32(0.0)})["loss"])  # fmt: skip
    want_loss = keras_step(model, loss, optimizer, x[:real], y[:real])
    assert abs(got_loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss)), (got_loss, want_loss)
    got = interpreter.run("get_weights", {})
    assert set(got) == set(imported.weights)
    for name, (layer_name, index) in imported.origin.items():
        want = model.get_layer(layer_name).get_weights()[index]
        value = got[name] if name in got else imported.constants[name]
        error = float(np.max(np.abs(value - want)))
        assert error <= TOLERANCE, f"{name} ({layer_name}[{index}]) differs by {error:.2e}"
    return data
