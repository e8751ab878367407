"""Configuration: TOML + flags (flag wins) + secrets from the environment; errors name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.__main__ import build_parser
from aggregator.config import AggregatorConfig, build_config
from edge_client.errors import ConfigError


def config(tmp_path: Path, *flags: str, toml: str | None = None,
           env: dict[str, str] | None = None) -> AggregatorConfig:
    argv = ["--model", str(tmp_path / "m.tflite"), *flags]
    if toml is not None:
        (tmp_path / "agg.toml").write_text(toml)
        argv += ["--config", str(tmp_path / "agg.toml")]
    return build_config(build_parser().parse_args(argv), env or {})


def test_defaults_toml_and_flags_merge_with_flags_winning(tmp_path: Path) -> None:
    c = config(tmp_path, "--rounds", "7", toml="""
[aggregator]
rounds = 3
min-clients = 4
round_timeout = 30
mqtt-version = "3.1.1"
state-dir = "/var/lib/fedge"
""")
    assert (c.rounds, c.min_clients, c.round_timeout, c.mqtt_version) == (7, 4, 30.0, "3.1.1")
    assert c.state_dir == Path("/var/lib/fedge") and c.codec == "int8" and c.max_payload == 131072
    assert c.mqtt_client_id == "fedge-aggregator-default"
    broker = c.broker_config()
    assert broker.durable and broker.manual_ack


def test_the_password_comes_from_the_environment_or_a_file_only(tmp_path: Path) -> None:
    assert config(tmp_path, env={"FEDGE_PASSWORD": "s3cret"}).password == "s3cret"
    (tmp_path / "pw").write_text("from-file\n")
    assert config(tmp_path, "--password-file", str(tmp_path / "pw")).password == "from-file"
    with pytest.raises(ConfigError, match="FEDGE_PASSWORD"):
        config(tmp_path, toml='password = "oops"')


@pytest.mark.parametrize(("flags", "toml", "message"), [
    (["--min-clients", "0"], None, "--min-clients: expected a whole number in"),
    (["--fraction", "1.5"], None, "--fraction: expected a number in"),
    (["--round-timeout", "0"], None, "--round-timeout"),
    ([], "max-update-norm = 'big'", "--max-update-norm: expected a number"),
    ([], "codec = 'int4'", "--codec: expected one of fp32, fp16, int8"),
    ([], "colour = 'blue'", "unknown key 'colour'"),
    (["--clients-per-round", "3", "--fraction", "0.5"], None, "exclude each other"),
    (["--clients-per-round", "1", "--min-clients", "2"], None, "--clients-per-round 1 is below"),
    (["--min-available", "1", "--min-clients", "2"], None, "--min-available 1 is below"),
    (["--federation", "a/b"], None, "--federation"),
    (["--prefix", "x/+"], None, "--prefix"),
    (["--broker", "http://x"], None, "--broker"),
    (["--max-payload", "100"], None, "--max-payload"),
    (["--ca", "/nonexistent.pem"], None, "--ca /nonexistent.pem: no such file"),
])
def test_bad_values_name_their_flag(tmp_path: Path, flags: list[str], toml: str | None,
                                    message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        config(tmp_path, *flags, toml=toml)


def test_model_is_required() -> None:
    with pytest.raises(ConfigError, match="--model is required"):
        build_config(build_parser().parse_args([]), {})


def test_hyperparameters_default_to_the_model_file(tmp_path: Path) -> None:
    c = config(tmp_path, "--epochs", "2")
    h = c.hyperparameters(batch_size=16, learning_rate=0.05)
    assert (h.epochs, h.batch_size, h.learning_rate, h.mu) == (2, 16, 0.05, 0.0)
    with pytest.raises(ConfigError, match="--epochs/--batch-size/--lr/--mu"):
        c.hyperparameters(batch_size=0, learning_rate=None)  # a model file saying batch 0
