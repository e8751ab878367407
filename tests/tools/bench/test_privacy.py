"""``fedge bench privacy``: the hospitals' DP-SGD federation on a tiny config, the noise
calibrated to the target by the device's accountant, and the rendered table."""

from __future__ import annotations

import json

import pytest

from edge_client import rdp
from tools.bench import command as cli
from tools.bench import privacy as bench


def test_calibrate_finds_the_smallest_noise_within_the_target() -> None:
    z = bench.calibrate(0.19, 120, 3.0)
    assert rdp.epsilon([(0.19, z, 120)], bench.DELTA) <= 3.0
    assert rdp.epsilon([(0.19, 0.99 * z, 120)], bench.DELTA) > 3.0


@pytest.mark.slow
def test_privacy_section_runs_every_setting_and_spends_up_to_the_target() -> None:
    result = bench.run(quick=True, seeds=[0, 1], rounds=1)
    assert json.loads(json.dumps(result)) == result
    assert result["seeds"] == [0] and result["rounds"] == 1  # quick: one seed
    rows = result["rows"]
    assert set(rows) == {s.key for s in bench.SETTINGS}
    for setting in bench.SETTINGS:
        (row,) = rows[setting.key]
        assert 0.5 <= row["accuracy"] <= 1.0 and 0.5 <= row["roc_auc"] <= 1.0, setting.key
        if setting.epsilon is not None:  # every hospital's ledger ends at the target
            assert 0.99 * setting.epsilon <= row["epsilon_spent"] <= setting.epsilon
        else:
            assert row["epsilon_spent"] is None
    assert rows["clip-only"][0]["noise_multiplier"] == 0.0
    assert rows["non-private"][0]["noise_multiplier"] is None
    text = bench.render(result)
    for setting in bench.SETTINGS:
        assert f"| {setting.label} |" in text
    assert "privacy" in cli.NOT_IN_ALL and cli.SECTIONS["privacy"] == "tools.bench.privacy"
