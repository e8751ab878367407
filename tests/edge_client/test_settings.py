"""The one config reader: the client and the aggregator read TOML, flags and secrets alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.__main__ import build_parser as aggregator_parser
from aggregator.config import build_config as aggregator_config
from edge_client.__main__ import build_parser as client_parser
from edge_client.config import build_config as client_config
from edge_client.errors import ConfigError
from edge_client.settings import Bounds, build_settings, flag

Command = Callable[[Path, str, dict[str, str]], object]


def _client(tmp: Path, toml: str, env: dict[str, str]) -> object:
    (tmp / "c.toml").write_text(toml)
    return client_config(client_parser().parse_args(["--config", str(tmp / "c.toml")]), env)


def _aggregator(tmp: Path, toml: str, env: dict[str, str]) -> object:
    (tmp / "c.toml").write_text(toml)
    args = ["--model", str(tmp / "m.tflite"), "--config", str(tmp / "c.toml")]
    return aggregator_config(aggregator_parser().parse_args(args), env)


COMMANDS = {"client": _client, "aggregator": _aggregator}


@pytest.mark.parametrize("section", sorted(COMMANDS))
@pytest.mark.parametrize(("toml", "message"), [
    ('password = "x"', "put the password in FEDGE_PASSWORD or pass --password-file"),
    ('password-file = "/run/pw"', "put the password in FEDGE_PASSWORD or pass --password-file"),
    ("[{section}]\nbroker = 5", "--broker: expected a non-empty string, got 5"),
    ("{section} = 5", r"\[{section}\] must be a table"),
    ("[{section}]\ncolour = 'blue'", "unknown key 'colour'"),
    ("mqtt_version = '4'", "--mqtt-version: expected one of 5, 3.1.1, got '4'"),
    ("max-payload = 1.5", "--max-payload: expected a whole number"),
    ("state-dir = ''", "--state-dir: expected a non-empty string"),
    ("broker = ", "--config .*: not valid TOML"),
])
def test_both_commands_refuse_the_same_mistakes_naming_the_flag(
        tmp_path: Path, section: str, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.format(section=section)):
        COMMANDS[section](tmp_path, toml.format(section=section), {})


@pytest.mark.parametrize("section", sorted(COMMANDS))
def test_both_commands_take_the_password_from_the_environment(tmp_path: Path,
                                                              section: str) -> None:
    config = COMMANDS[section](tmp_path, f'[{section}]\nmqtt-version = "3.1.1"\n',
                               {"FEDGE_PASSWORD": "s3cret"})
    assert (config.password, config.mqtt_version) == ("s3cret", "3.1.1")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Plain:
    name: str = "x"


@dataclass(frozen=True)
class _Example:
    when: complex = 1j


def test_an_unreadable_config_file_names_the_flag(tmp_path: Path) -> None:
    args = argparse.Namespace(config=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"--config .*missing\.toml: No such file"):
        build_settings(_Plain, args, {}, section="x", bounds=Bounds())


def test_a_field_type_without_a_reader_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match=r"_Example\.when"):
        build_settings(_Example, argparse.Namespace(), {}, section="x", bounds=Bounds())


def test_flag_names() -> None:
    assert flag("max_transfers_per_client") == "--max-transfers-per-client"
