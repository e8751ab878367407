"""Client configuration: TOML, flags win over it, secrets only from the environment or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_client.__main__ import build_parser
from edge_client.config import ClientConfig, build_config, check_exposure
from edge_client.errors import ConfigError


def _config(tmp_path: Path, toml: str, *flags: str, env: dict[str, str] | None = None
            ) -> ClientConfig:
    path = tmp_path / "client.toml"
    path.write_text(toml)
    return build_config(build_parser().parse_args(["--config", str(path), *flags]), env or {})


def test_flags_win_over_the_file_and_the_password_comes_from_the_environment(
        tmp_path: Path) -> None:
    c = _config(tmp_path, '[client]\nbroker = "mqtt://a:1"\nlabel-column = "y"\nthreads = 2\n',
                "--broker", "mqtt://b:2", env={"FEDGE_PASSWORD": "s3cret"})
    assert (c.broker, c.label_column, c.threads, c.password) == (  # type: ignore[attr-defined]
        "mqtt://b:2", "y", 2, "s3cret")


@pytest.mark.parametrize(("toml", "message"), [
    ('password = "x"\n', "FEDGE_PASSWORD"),
    ('colour = "blue"\n', "unknown key 'colour'"),
    ("client = 5\n", r"\[client\] must be a table"),
    ("threads = 0\n", "--threads: expected a whole number >= 1"),
    ('password-file = "/pw"\n', "FEDGE_PASSWORD"),
    ("once = 'yes'\n", "--once: expected true or false"),
    ("mqtt-version = 4\n", "--mqtt-version: expected one of 5, 3.1.1"),
    ("broker = 1883\n", "--broker: expected a non-empty string"),
    ("features = [1, 2]\n", "--features: expected a list of names"),
    ("broker = \n", "not valid TOML"),
])
def test_bad_files_are_clear_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, toml)



def test_toml_keys_take_dashes_or_underscores_and_features_a_list_or_commas(
        tmp_path: Path) -> None:
    c = _config(tmp_path, 'label_column = "y"\nfeatures = ["a", "b"]\nstate-dir = "s"\n')
    assert (c.label_column, c.features, c.state_dir) == ("y", ("a", "b"), Path("s"))
    c = _config(tmp_path, "", "--features", "a,b", "--no-normalise", "--once")
    assert (c.features, c.normalise, c.once) == (("a", "b"), False, True)


# -- secure by default: an exposed broker needs --verify-key ------------------------------
def built(*flags: str) -> ClientConfig:
    return build_config(build_parser().parse_args(list(flags)), {})


def no_dns(host: str) -> list[str]:
    raise AssertionError(f"{host} should not need a lookup")


@pytest.mark.parametrize("broker", [
    "mqtt://127.0.0.1:1883", "mqtt://localhost:1", "mqtt://[::1]:1883", "mqtt://127.9.9.9"])
def test_a_loopback_broker_needs_no_verify_key(broker: str) -> None:
    assert check_exposure(built("--broker", broker), resolve=no_dns) == []


@pytest.mark.parametrize("broker", ["mqtt://192.0.2.2:1883", "mqtts://192.0.2.2:8883",
                                    "mqtts://broker.lan:8883"])
def test_an_exposed_broker_without_verify_key_is_refused_saying_what_to_run(
        broker: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_exposure(built("--broker", broker, "--federation", "cardio"),
                       resolve=lambda host: ["192.0.2.2"])
    text = str(refused.value)
    assert text.startswith(f"--broker {broker} is not a loopback address and there is no "
                           "--verify-key"), text
    assert "`fedge provision --out DIR --federation cardio" in text
    assert text.endswith("pass --insecure")


def test_insecure_runs_with_a_warning_and_plain_mqtt_warns_even_with_the_key(
        tmp_path: Path) -> None:
    warned = check_exposure(built("--broker", "mqtt://192.0.2.2:1883", "--insecure"),
                            resolve=no_dns)
    assert [w.split(" ", 1)[0] for w in warned] == ["--insecure:", "--broker"], warned
    assert "clear text" in warned[1]
    key = str(tmp_path / "signing.pub")
    (plain,) = check_exposure(built("--broker", "mqtt://192.0.2.2:1883", "--verify-key", key),
                              resolve=no_dns)
    assert "plain mqtt://" in plain and "clear text" in plain
    assert check_exposure(built("--broker", "mqtts://192.0.2.2:8883", "--verify-key", key),
                          resolve=no_dns) == []


def test_insecure_is_off_by_default_and_a_toml_key(tmp_path: Path) -> None:
    assert not ClientConfig().insecure
    c = _config(tmp_path, 'broker = "mqtt://192.0.2.2:1"\ninsecure = true\n')
    assert c.insecure and check_exposure(c, resolve=no_dns)


def test_a_bad_broker_url_is_named_by_its_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--broker: broker URL 'http://x'"):
        check_exposure(built("--broker", "http://x"), resolve=no_dns)
