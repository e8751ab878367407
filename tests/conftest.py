"""Shared fixtures: a real Mosquitto on a free 127.0.0.1 port, one per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from client_kit import logreg_file, make_aggregator

from tools.runtime.broker import MosquittoBroker, mosquitto_available

__all__ = ["broker", "durable_broker", "logreg_file", "make_aggregator", "namespace"]


def _need_mosquitto() -> None:
    if not mosquitto_available():
        pytest.fail(
            "mosquitto is not installed: `make test` installs it with apt-get when run as root; "
            "otherwise run `sudo apt-get install -y mosquitto`"
        )


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto (no persistence) for one test."""
    _need_mosquitto()
    b = MosquittoBroker()
    b.start()
    yield b
    b.close()


@pytest.fixture
def durable_broker() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto with persistence, so :meth:`restart` keeps sessions and retained."""
    _need_mosquitto()
    b = MosquittoBroker(persistence=True)
    b.start()
    yield b
    b.close()


@pytest.fixture
def namespace() -> str:
    """A topic prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"
