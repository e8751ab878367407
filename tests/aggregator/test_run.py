"""The run of a state directory: made once, kept, and never silently swapped for another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator.run import begin, load_initial_weights
from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError

SHA_A, SHA_B = "a" * 64, "b" * 64


def test_a_new_state_dir_begins_a_run_with_a_fresh_session_and_keeps_it(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    first = begin(store, SHA_A, b"model bytes", None)
    assert first.new and len(first.run_id) == 16
    assert (tmp_path / "model.tflite").read_bytes() == b"model bytes"
    again = begin(store, SHA_A, b"model bytes", None)
    assert again.run_id == first.run_id and not again.new  # a restart: the durable session


def test_another_model_on_a_run_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    begin(store, SHA_A, b"a", None)
    with pytest.raises(ConfigError, match=r"A new model is a new run.*--state-dir"):
        begin(store, SHA_B, b"b", None)


def test_initial_weights_only_begin_a_new_run(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    begin(store, SHA_A, b"a", None)
    with pytest.raises(ConfigError, match="--initial-weights starts a new run"):
        begin(store, SHA_A, b"a", tmp_path / "w.npz")


def test_a_state_dir_from_before_run_ids_keeps_its_session(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    store.save_round_state({"round_id": 3})
    run = begin(store, SHA_A, b"a", None)
    assert not run.new  # its broker session may still hold accepted updates


def test_initial_weights_must_be_the_models(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, **{"dense/kernel": np.ones((4, 2)), "dense/bias": np.zeros(2)})
    spec = {"dense/kernel": (4, 2), "dense/bias": (2,)}
    weights = load_initial_weights(path, spec)
    assert weights["dense/kernel"].dtype == np.float32
    with pytest.raises(ConfigError, match="do not fit the model"):
        load_initial_weights(path, {**spec, "dense/bias": (3,)})
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):
        load_initial_weights(tmp_path / "missing.npz", spec)
