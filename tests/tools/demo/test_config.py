"""The demo's settings (tools/demo/config.py): one set of defaults, built once from the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_client.errors import ConfigError
from tools.cli import build_parser
from tools.datasets import load_dataset
from tools.demo import DemoConfig, config_of, defaults_for


def _config(*flags: str) -> DemoConfig:
    return config_of(build_parser().parse_args(["demo", *flags]))


def test_no_flags_give_the_config_defaults() -> None:
    assert _config() == DemoConfig()


def test_every_flag_reaches_the_config() -> None:
    config = _config("--dataset", "breast-cancer", "--clients", "3", "--rounds", "4",
                     "--partition", "dirichlet", "--alpha", "0.3", "--codec", "fp16",
                     "--strategy", "median", "--weighting", "uniform", "--epochs", "2",
                     "--lr", "0.2", "--mu", "0.01", "--seed", "5", "--broker", "mqtt://h:1",
                     "--embedded-broker", "--out", "o", "--json", "r.json", "--plot", "p.png",
                     "--round-timeout", "9", "--no-progress", "--keras", "m.keras")
    assert config == DemoConfig(
        dataset="breast-cancer", clients=3, rounds=4, partition="dirichlet", alpha=0.3,
        codec="fp16", strategy="median", weighting="uniform", epochs=2, lr=0.2, mu=0.01,
        seed=5, broker="mqtt://h:1", embedded_broker=True, out=Path("o"),
        json_path=Path("r.json"), plot_path=Path("p.png"), round_timeout=9.0, progress=False,
        keras=Path("m.keras"))
    assert config.results_path == Path("r.json") and config.rounds_png == Path("p.png")


def test_results_and_plot_default_to_the_out_folder() -> None:
    config = DemoConfig(out=Path("w"))
    assert config.results_path == Path("w/results.json")
    assert config.rounds_png == Path("w/rounds.png")


def test_fewer_than_one_client_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--clients must be at least 1"):
        _config("--clients", "0")


def test_unset_settings_take_the_dataset_defaults() -> None:
    d = defaults_for(load_dataset("seed-gaussian"), DemoConfig())
    assert (d.clients, d.partition, d.rounds, d.epochs, d.lr) == (2, "natural", 10, 2, 0.1)
    d = defaults_for(load_dataset("seed-gaussian"), DemoConfig(rounds=3, epochs=1, lr=0.5))
    assert (d.rounds, d.epochs, d.lr) == (3, 1, 0.5)
