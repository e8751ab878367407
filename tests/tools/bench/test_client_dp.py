"""``fedge bench client-dp`` on a tiny fleet: real ``fedge simulate --train`` runs with and
without client-level DP, their scores, ε spent and Z, and the rendered section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tools.bench import client_dp

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # real federations: tens of seconds


def test_tiny_sweep_reports_scores_epsilon_spent_and_noise(tmp_path: Path) -> None:
    result = client_dp.run(epsilons=(3.0, math.inf), seeds=(0,), devices=20, rounds=2,
                           workers=1, out=tmp_path)
    dp, plain = result["runs"]
    assert (dp["epsilon_target"], plain["epsilon_target"]) == (3.0, None)
    assert dp["rounds"] == plain["rounds"] == 2
    # the DP run spent a positive ε within its target, with the noise Z computed for 2 rounds
    assert 0 < dp["epsilon_spent"] <= 3.0 and dp["noise_multiplier"] > 0
    assert plain["epsilon_spent"] is None and plain["noise_multiplier"] is None
    for run, folder in ((dp, "eps-3-seed-0"), (plain, "eps-inf-seed-0")):
        # the section's accuracy is the one fedge simulate itself measured on the same model
        simulated = json.loads((tmp_path / folder / "results.json").read_text())
        assert run["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=1e-6)
        assert run["test_samples"] == simulated["train"]["test_samples"]
        assert 0 <= run["balanced_accuracy"] <= 1 and 0 <= run["macro_f1"] <= 1
    text = client_dp.render(result)
    assert "| 3 | " in text and "| ∞ (no DP) | – | – |" in text
    assert f"{dp['accuracy']:.3f}" in text and "20 devices" in text
