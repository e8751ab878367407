"""``fedge bench results`` on a tiny config: real demo runs, JSON-able, a rendered table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools.bench import command as cli
from tools.bench import results as bench
from tools.demo import DemoConfig

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_results_section_runs_every_method_and_renders_a_table(tmp_path: Path) -> None:
    study = bench.Study("seed-gaussian", 2, "natural")
    result = bench.run(quick=True, studies=[study, study], seeds=[0, 1], rounds=1,
                       out=tmp_path)
    assert json.loads(json.dumps(result)) == result
    assert result["seeds"] == [0] and result["rounds"] == 1  # quick: one study, one seed
    (measured,) = result["studies"]
    assert measured["settings"]["clients"] == 2
    runs = measured["runs"]
    assert set(runs) == {m.key for m in bench.METHODS} | {"local-only", "pooled"}
    for rows in runs.values():
        (row,) = rows
        assert row["seed"] == 0 and 0.0 <= row["accuracy"] <= 1.0
    assert runs["fedavg-int8"][0]["bytes_up_per_round"] > 0
    text = bench.render(result)
    assert "| seed-gaussian (logreg) | 2, natural | 1 × 2 |" in text
    for label in ("local-only", "FedAvg | fp32", "FedAvg | int8", "FedProx", "pooled"):
        assert label in text, label


def test_bench_all_leaves_out_the_results_section(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def fake_section(name: str) -> SimpleNamespace:
        ran.append(name)
        return SimpleNamespace(run=lambda quick: {}, render=lambda result: "")

    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=fake_section))
    args = argparse.Namespace(section="all", quick=True, json=None, results=None)
    assert cli.run(args) == 0
    assert "results" in cli.SECTIONS and cli.SECTIONS["results"] not in ran
    assert ran == [m for name, m in cli.SECTIONS.items() if name not in cli.NOT_IN_ALL]
    ran.clear()
    args.section = "results"
    assert cli.run(args) == 0
    assert ran == ["tools.bench.results"]


def test_mean_std_uses_the_sample_deviation() -> None:
    assert bench.mean_std([0.5]) == (0.5, 0.0)
    mean, std = bench.mean_std([0.9, 1.0])
    assert mean == pytest.approx(0.95) and std == pytest.approx(0.0707, abs=1e-4)


def test_a_run_is_the_demo_with_the_studys_split_and_the_methods_codec(tmp_path: Path) -> None:
    study, method = bench.Study("breast-cancer", 4, "iid"), bench.METHODS[2]
    config = bench.demo_config(study, method, seed=1, rounds=3, out=tmp_path)
    assert config == DemoConfig(dataset="breast-cancer", clients=4, partition="iid", rounds=3,
                                codec="fp32", mu=bench.MU, seed=1, out=tmp_path,
                                progress=False)
