"""Client configuration: TOML file, then flags, then environment for secrets.

Built once in ``__main__`` into a frozen :class:`ClientConfig`; nothing deeper
reads configuration. Precedence: command-line flag > TOML value > default.
Secrets come only from the environment (``FEDGE_PASSWORD``) or a file
(``--password-file``), never from flags or TOML.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_client.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ClientConfig:
    """Everything the edge client needs to run (see ``fedge-client --help``)."""

    broker: str = "mqtt://127.0.0.1:1883"
    federation: str = "default"
    prefix: str = "fedge"
    client_id: str | None = None
    data: Path | None = None
    label_column: str | None = None
    features: tuple[str, ...] | None = None
    window: int | None = None
    stride: int | None = None
    group_column: str | None = None
    state_dir: Path = Path("fedge-state")
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    mqtt_version: str = "5"
    once: bool = False
    max_rounds: int | None = None
    threads: int = 1
    max_payload: int = 128 * 1024
    verify_key: Path | None = None
    seed: int | None = None
    normalise: bool = True


_PATHS = {"data", "state_dir", "ca", "cert", "key", "verify_key"}
_INTS = {"window", "stride", "max_rounds", "threads", "max_payload", "seed"}


def read_toml(path: Path) -> dict[str, Any]:
    """Reads a TOML config (keys as in the flags, ``-`` or ``_``)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None
    table = raw.get("client", raw)
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: [client] must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def build_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> ClientConfig:
    """Merges defaults, the TOML file (``args.config``) and flags into a :class:`ClientConfig`.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a secret in the wrong place.
    """
    env = dict(os.environ) if env is None else env
    known = {f.name for f in fields(ClientConfig)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        for k, v in read_toml(Path(args.config)).items():
            if k not in known:
                raise ConfigError(f"--config {args.config}: unknown key {k!r}")
            if k == "password":
                raise ConfigError(
                    f"--config {args.config}: put the password in FEDGE_PASSWORD or "
                    "--password-file, not in the config file"
                )
            values[k] = v
    for k in known:
        v = getattr(args, k, None)
        if v is not None:
            values[k] = v
    values["password"] = _password(args, env)
    return ClientConfig(**_coerce(values))


def _password(args: argparse.Namespace, env: dict[str, str]) -> str | None:
    pf = getattr(args, "password_file", None)
    if pf:
        try:
            return Path(pf).read_text().strip()
        except OSError as e:
            raise ConfigError(f"--password-file {pf}: {e.strerror}") from None
    return env.get("FEDGE_PASSWORD")


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for k, v in values.items():
        if v is None:
            continue
        if k in _PATHS:
            out[k] = Path(v)
        elif k in _INTS:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{k}: expected a whole number, got {v!r}")
            if v < (0 if k == "seed" else 1):
                raise ConfigError(f"{k}: must be positive, got {v}")
        elif k == "features" and isinstance(v, (list, str)):
            out[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        elif k == "mqtt_version":
            out[k] = str(v)
            if out[k] not in ("5", "3.1.1"):
                raise ConfigError(f"mqtt_version: expected 5 or 3.1.1, got {v!r}")
    return out
