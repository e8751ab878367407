"""The device's data preparation (edge_client/device.py): what it trains on and what it keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_client.config import ClientConfig
from edge_client.device import keep_norm_stats, prepare_data
from edge_client.errors import ConfigError
from edge_client.normalise import NormStats, normalise
from edge_client.state import NORMALISATION_FILE, StateDir


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
