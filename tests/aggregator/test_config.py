"""Configuration: TOML + flags (flag wins) + secrets from the environment; errors name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.__main__ import build_parser
from aggregator.config import AggregatorConfig, build_config, check_exposure
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
    (["--max-new-clients", "3", "--min-clients", "4"], None, "--max-new-clients 3"),
    (["--max-online", "100", "--max-new-clients", "200"], None, "--max-online 100"),
    (["--max-online", "0"], None, "--max-online: expected a whole number in"),
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


# -- secure by default: an exposed broker needs TLS and --signing-key ---------------------
def no_dns(host: str) -> list[str]:
    raise AssertionError(f"{host} should not need a lookup")


@pytest.mark.parametrize("broker", [
    "mqtt://127.0.0.1:1883", "mqtt://127.3.4.5:1", "mqtt://localhost:1883",
    "mqtt://LOCALHOST.:1883", "mqtt://[::1]:1883", "mqtt://[::ffff:127.0.0.1]:1883"])
def test_a_loopback_broker_needs_neither_tls_nor_signing(tmp_path: Path, broker: str) -> None:
    assert check_exposure(config(tmp_path, "--broker", broker), resolve=no_dns) == []


@pytest.mark.parametrize(("flags", "missing"), [
    (["--broker", "mqtt://192.0.2.2:1883"], "no TLS (an mqtts:// --broker) and no --signing-key"),
    (["--broker", "mqtts://192.0.2.2:8883"], "no --signing-key: devices could not tell"),
    (["--broker", "mqtt://[fd00::2]:1883", "--signing-key", "KEY"],
     "no TLS (an mqtts:// --broker): every device's update would cross the network"),
    (["--broker", "mqtt://0.0.0.0:1883", "--signing-key", "KEY"], "no TLS"),
])
def test_an_exposed_broker_without_tls_or_signing_is_refused_saying_what_to_run(
        tmp_path: Path, flags: list[str], missing: str) -> None:
    (tmp_path / "signing.key").write_text("")
    flags = [str(tmp_path / "signing.key") if f == "KEY" else f for f in flags]
    c = config(tmp_path, *flags)
    with pytest.raises(ConfigError) as refused:
        check_exposure(c, resolve=no_dns)
    text = str(refused.value)
    assert text.startswith(f"--broker {c.broker} is not a loopback address and this "
                           f"aggregator has {missing}"), text
    assert "run `fedge provision --out DIR --federation default" in text
    assert text.endswith("pass --insecure")
    warned = check_exposure(config(tmp_path, *flags, "--insecure"), resolve=no_dns)
    assert len(warned) == 1 and warned[0].startswith("--insecure: --broker "), warned


def test_tls_and_a_signing_key_make_an_exposed_broker_fine(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_text("")
    c = config(tmp_path, "--broker", "mqtts://broker.hospital.example:8883",
               "--signing-key", str(tmp_path / "signing.key"))
    assert check_exposure(c, resolve=lambda host: ["192.0.2.7"]) == []


@pytest.mark.parametrize(("resolved", "refused"), [
    (["127.0.1.1"], False), (["127.0.0.1", "::1"], False),
    (["127.0.0.1", "192.0.2.7"], True), ([], True)])  # [] = the name does not resolve
def test_a_name_is_loopback_only_when_every_address_it_resolves_to_is(
        tmp_path: Path, resolved: list[str], refused: bool) -> None:
    c = config(tmp_path, "--broker", "mqtt://broker.lan:1883")
    if refused:
        with pytest.raises(ConfigError, match="is not a loopback address"):
            check_exposure(c, resolve=lambda host: resolved)
    else:
        assert check_exposure(c, resolve=lambda host: resolved) == []


def test_insecure_comes_from_the_toml_file_too(tmp_path: Path) -> None:
    c = config(tmp_path, toml='broker = "mqtt://192.0.2.2:1883"\ninsecure = true\n')
    assert c.insecure and check_exposure(c, resolve=no_dns)
    assert not AggregatorConfig().insecure
