"""One path: the zoo's imaging model is exactly what its Keras twin imports to, and the
twin (without dropout, which draws its own mask) trains one step like Keras."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers
from keras_kit import assert_one_step_parity

from models.keras_import import convert
from models.zoo import build


def _imaging_twin(shape: tuple[int, int, int], classes: int, dropout: float) -> keras.Model:
    def block(filters: int) -> list[layers.Layer]:
        return [layers.SeparableConv2D(filters, 3, padding="same"), layers.BatchNormalization(),
                layers.ReLU(), layers.MaxPooling2D(2)]

    stem = [layers.Conv2D(16, 3, strides=2, padding="same"), layers.BatchNormalization(),
            layers.ReLU()]
    drop = [layers.Dropout(dropout)] if dropout else []
    return keras.Sequential([keras.Input(shape), *stem, *block(32), *block(64),
                             layers.GlobalAveragePooling2D(), *drop,
                             layers.Dense(classes, activation="softmax")])


def test_the_imaging_model_is_its_keras_twin() -> None:
    twin = convert(_imaging_twin((64, 64, 3), 7, 0.2), loss="sparse_categorical_crossentropy")
    assert twin.spec.layers == build("imaging", (64, 64, 3), 7).layers


def test_the_imaging_twin_trains_one_step_like_keras() -> None:
    keras.utils.set_random_seed(1)
    model = _imaging_twin((16, 16, 3), 3, 0.0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4).astype(np.float32)
    assert_one_step_parity(model, "sparse_categorical_crossentropy", "sgd", x, y)
