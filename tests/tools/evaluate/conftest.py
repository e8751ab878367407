"""Fixtures of the evaluate/predict tests: one finished run per task (tests/run_kit.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from run_kit import Run, make_run


@pytest.fixture(scope="session")
def model_files(logreg_file: bytes) -> dict[str, bytes]:
    """A trainable file per task: binary logreg (4 features), multiclass and regression mlp."""
    from models.export import export_trainable

    return {"binary": logreg_file,
            "multiclass": export_trainable("mlp", (5,), 3, 8, "adam", seed=2),
            "regression": export_trainable("mlp", (5,), 0, 8, "sgd", seed=3)}


@pytest.fixture
def run_of(tmp_path: Path, model_files: dict[str, bytes]) -> Callable[[str], Run]:
    """``run_of(task)``: a finished run of that task under this test's tmp_path."""
    return lambda task: make_run(tmp_path / task, model_files[task], task)
