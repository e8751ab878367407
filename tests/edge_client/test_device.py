"""The device's data preparation (edge_client/device.py): what it trains on and what it keeps."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_client.config import ClientConfig
from edge_client.device import keep_norm_stats, prepare_data, warn_single_class
from edge_client.errors import ConfigError
from edge_client.normalise import NormStats, normalise
from edge_client.state import NORMALISATION_FILE, StateDir
from edge_client.training import LocalSplit, single_class
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet


def _csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["hr,steps,outcome"] + [f"{60 + 20 * a:.3f},{4000 + 900 * b:.1f},{int(a > b)}"
                                   for a, b in rng.normal(size=(50, 2))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_statistics_the_device_standardises_with_are_kept_in_its_state_dir(
    tmp_path: Path,
) -> None:
    config = ClientConfig(data=_csv(tmp_path / "d.csv"), label_column="outcome",
                          state_dir=tmp_path / "state")
    data, stats = prepare_data(config)
    assert stats is not None and stats.features == ("hr", "steps") and stats.count == 50
    np.testing.assert_allclose(data.x.mean(axis=0), 0, atol=1e-5)
    state = StateDir(config.state_dir)
    keep_norm_stats(state, stats)
    kept = NormStats.from_json((config.state_dir / NORMALISATION_FILE).read_text())
    assert kept == stats
    raw, _ = prepare_data(ClientConfig(data=config.data, label_column="outcome",
                                       normalise=False))
    np.testing.assert_array_equal(normalise(raw.x, kept), data.x)  # the same scaling, exactly


def test_a_device_on_raw_values_keeps_no_statistics_and_drops_stale_ones(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    (state.root / NORMALISATION_FILE).write_text("left from a run that normalised")
    data, stats = prepare_data(ClientConfig(data=_csv(tmp_path / "d.csv"),
                                            label_column="outcome", normalise=False))
    assert stats is None and data.x[:, 0].mean() > 50
    keep_norm_stats(state, stats)
    assert not (state.root / NORMALISATION_FILE).exists()


def test_no_data_file_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--data is required"):
        prepare_data(ClientConfig())


def test_single_class_names_the_one_class_of_labels_only() -> None:
    assert single_class(np.full(7, 2, np.int64)) == 2
    assert single_class(np.array([0, 1, 0], np.int64)) is None
    assert single_class(np.zeros(5, np.float32)) is None  # regression targets
    assert single_class(np.zeros(0, np.int64)) is None


@pytest.mark.broker
def test_a_device_training_on_one_class_warns_naming_it_and_its_count(
        broker: MosquittoBroker, namespace: str, tmp_path: Path) -> None:
    """Issue 14, finding 10: a site whose data holds one class trained without a word."""
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    np.savez(tmp_path / "one-class.npz", x=x, y=np.ones(40, np.int64))
    with Fleet(tmp_path / "logs") as fleet:
        child = fleet.start("site", "edge_client", [
            "--broker", broker.url, "--federation", namespace, "--client-id", "site-1",
            "--data", str(tmp_path / "one-class.npz"), "--state-dir", str(tmp_path / "s")])
        end = time.monotonic() + 60
        while "local samples" not in child.tail(200) and child.proc.poll() is None:
            assert time.monotonic() < end, child.tail(30)
            time.sleep(0.1)
        log = child.tail(200)
        fleet.stop(child)
    assert ("client site-1: local training data holds one class only: all 32 training "
            "samples are class 1") in log, log


def test_two_classes_give_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    x = np.zeros((10, 2), np.float32)
    warn_single_class("site-2", LocalSplit.of(x, np.array([0, 1] * 5, np.int64), seed=0))
    assert "one class" not in caplog.text
