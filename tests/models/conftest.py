"""Shared fixtures for the model tests: one small configuration per zoo model.

Exports cost about a second each, so every (model, optimizer) file is exported
once per session and shared by all tests in this directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

Array = npt.NDArray[Any]

#: Small configurations covering every task: binary, regression, multiclass.
CONFIGS: dict[str, tuple[tuple[int, ...], int]] = {
    "logreg": ((8,), 2),
    "mlp": ((6,), 0),
    "cnn1d": ((3, 16), 3),
    "cnn2d": ((10, 10), 4),
}
BATCH = 8


@pytest.fixture(scope="session")
def configs() -> dict[str, tuple[tuple[int, ...], int]]:
    """Model name → (input shape, classes) used throughout these tests."""
    return CONFIGS


@pytest.fixture(scope="session")
def exported() -> Callable[[str, str], bytes]:
    """``exported(model, optimizer)`` → the trainable file for ``CONFIGS[model]``, cached."""
    from models.export import export_trainable

    cache: dict[tuple[str, str], bytes] = {}

    def get(name: str, optimizer: str) -> bytes:
        if (name, optimizer) not in cache:
            shape, classes = CONFIGS[name]
            cache[name, optimizer] = export_trainable(name, shape, classes, BATCH, optimizer)
        return cache[name, optimizer]

    return get


def learnable_data(
    shape: tuple[int, ...], classes: int, n: int, seed: int
) -> tuple[Array, Array]:
    """A task every zoo model can learn: class-specific mean patterns, or a linear target."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, *shape)).astype(np.float32)
    if classes == 0:
        direction = np.random.default_rng(99).normal(size=int(np.prod(shape)))
        x = noise
        return x, (x.reshape(n, -1) @ direction / np.sqrt(direction.size)).astype(np.float32)
    patterns = np.random.default_rng(99).normal(size=(classes, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return (0.5 * noise + patterns[y]).astype(np.float32), y.astype(np.float32)


@pytest.fixture(scope="session")
def make_data() -> Callable[[tuple[int, ...], int, int, int], tuple[Array, Array]]:
    """``make_data(shape, classes, n, seed)`` → learnable ``(x, y)``."""
    return learnable_data
