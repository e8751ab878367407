"""The one configuration reader of fedge's commands: TOML file, then flags, then secrets.

A command describes its configuration as a frozen dataclass (``ClientConfig``,
``AggregatorConfig``) and its argparse flags carry the same names. :func:`build_settings`
merges, in this order of precedence: a command-line flag, a key of the TOML file given
with ``--config`` (keys as the flags, ``-`` or ``_``, at the top level or under one
``[section]``), the dataclass default. The password comes only from ``FEDGE_PASSWORD``
or ``--password-file``, never from a flag or the file. Every value is checked against
its field's type (and the range or choices the command gives), and every error names
the flag it is about, also for a value that came from the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from edge_client.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Dataclass(Protocol):
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


C = TypeVar("C", bound=_Dataclass)

PASSWORD_ENV = "FEDGE_PASSWORD"
SECRET = "password"  # the one secret field: from PASSWORD_ENV or --password-file only


@dataclass(frozen=True)
class Bounds:
    """What a command allows beyond the field types.

    Attributes:
        ints: per int field, its smallest and largest value (None: no upper bound).
        floats: per float field, (low, high, whether low itself is allowed).
        choices: per str field that takes one of a few values, those values.
    """

    ints: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    floats: Mapping[str, tuple[float, float, bool]] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def flag(name: str) -> str:
    """The command-line flag of a config field: ``min_clients`` → ``--min-clients``."""
    return "--" + name.replace("_", "-")


def provision_hint(federation: str, host: str) -> str:
    """What to run instead of ``--insecure``: the command that makes a protected federation
    (said by both commands when they refuse a broker other machines can reach)."""
    return (f"run `fedge provision --out DIR --federation {federation} --device-ids ID,... "
            f"--broker-host {host}` and start with the commands it writes to DIR/README.txt")


def load_toml(path: Path, what: str) -> dict[str, Any]:
    """The one TOML file reader: the document as a dict.

    Raises:
        ConfigError: unreadable file or invalid TOML; the message starts with ``what`` and
            the path.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path}: not valid TOML: {e}") from None


def read_toml(path: Path, section: str) -> dict[str, Any]:
    """The keys of a TOML config, ``-`` turned into ``_``, from ``[section]`` if it has one.

    Raises:
        ConfigError: unreadable or invalid TOML, or ``[section]`` is not a table.
    """
    raw = load_toml(path, "--config")
    table = raw.get(section, raw)
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: [{section}] must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def build_settings(cls: type[C], args: argparse.Namespace, env: Mapping[str, str] | None,
                   *, section: str, bounds: Bounds) -> C:
    """Merges defaults, the TOML file (``args.config``), flags and the password into ``cls``.

    Args:
        cls: the command's frozen config dataclass; a ``password`` field gets the secret.
        args: parsed flags, named as the fields; None means "not given".
        env: the environment (``os.environ`` when None).
        section: the TOML table that may hold the keys, e.g. ``client``.
        bounds: ranges and choices of the fields that need them.

    Raises:
        ConfigError: an unknown key, a bad value (the message names the flag), or the
            password in the config file.
    """
    env = os.environ if env is None else env
    kinds = _kinds(cls)
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file:
        for k, v in read_toml(Path(config_file), section).items():
            if k in (SECRET, f"{SECRET}_file"):
                raise ConfigError(f"--config {config_file}: put the password in {PASSWORD_ENV} "
                                  "or pass --password-file, not in the config file")
            if k not in kinds:
                raise ConfigError(f"--config {config_file}: unknown key {k!r}")
            values[k] = v
    values.update({k: getattr(args, k) for k in kinds if getattr(args, k, None) is not None})
    checked = {k: _coerce(k, kinds[k], v, bounds) for k, v in values.items()}
    if SECRET in {f.name for f in dataclasses.fields(cls)}:
        checked[SECRET] = _password(args, env)
    return cls(**checked)


def _password(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    path = getattr(args, "password_file", None)
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"--password-file {path}: {e.strerror}") from None
    return env.get(PASSWORD_ENV)


def _kinds(cls: type[_Dataclass]) -> dict[str, type]:
    """Each settable field's value type (``X | None`` → ``X``; ``tuple[str, ...]`` → tuple)."""
    hints = typing.get_type_hints(cls)
    kinds: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        if f.name == SECRET:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        kind = typing.get_origin(hint) or hint
        if kind not in (Path, str, int, float, bool, tuple):
            raise TypeError(f"{cls.__name__}.{f.name}: no reader for {hints[f.name]}")
        kinds[f.name] = kind
    return kinds


def _coerce(name: str, kind: type, value: Any, bounds: Bounds) -> Any:
    where = flag(name)
    if name in bounds.choices:
        text = str(value)  # mqtt-version 5 may come from TOML as an integer
        if text not in bounds.choices[name]:
            raise ConfigError(f"{where}: expected one of {', '.join(bounds.choices[name])}, "
                              f"got {value!r}")
        return text
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        return _int(where, value, *bounds.ints[name])
    if kind is float:
        return _float(where, value, *bounds.floats[name])
    if kind is tuple:  # a list of names: a TOML array, or comma-separated
        if isinstance(value, str):
            return tuple(value.split(","))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of names, got {value!r}")
        return tuple(value)
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return Path(value) if kind is Path else str(value)


def _int(where: str, value: Any, low: int, high: int | None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{where}: expected a whole number {allowed}, got {value!r}")
    return int(value)


def _float(where: str, value: Any, low: float, high: float, low_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    number = float(value)
    above = number >= low if low_ok else number > low
    if not (math.isfinite(number) and above and number <= high):
        bracket = "[" if low_ok else "("
        raise ConfigError(f"{where}: expected a number in {bracket}{low}, {high}], got {value!r}")
    return number
