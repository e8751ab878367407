"""tools/observer.py: the flags, topics and connection that fedge status and stats share."""

from __future__ import annotations

import argparse
import socket

import pytest

from edge_client.errors import ConfigError
from tools import observer


def _args(*flags: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    observer.add_flags(p)
    p.add_argument("--timeout", type=float, default=1.0)
    return p.parse_args(list(flags))


def test_the_defaults_are_a_local_broker_and_the_default_federation() -> None:
    args = _args()
    assert (args.broker, args.federation, args.prefix, args.mqtt_version) == (
        "mqtt://127.0.0.1:1883", "default", "fedge", "5")
    assert observer.topics(args).federation == "default"


def test_a_bad_federation_names_the_flags() -> None:
    with pytest.raises(ConfigError, match="--federation/--prefix"):
        observer.topics(_args("--federation", "a/b#"))


def test_an_unreachable_broker_is_said_on_stderr_not_raised(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _args("--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "0.5")
    assert observer.connect(args, "stats") is None
    assert capsys.readouterr().err.startswith("fedge stats: error: ")
