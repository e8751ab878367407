"""Crash windows of the service, driven synchronously on the in-memory bus with a fake clock.

A "crash" is an exception the service does not catch (a BaseException) raised from
inside a store write; a new service on the same state directory then carries on.
The end result must be the one of an uninterrupted run, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_kit import CLIENTS, META, MODEL, Federation

from aggregator.modelfile import ModelFile
from aggregator.service import AggregatorService
from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError
from edge_client.protocol import Weights


class Crash(BaseException):
    """The process dies here."""


class CrashingStore(AggregatorStore):
    """Dies on the first ``save_round_state`` whose state has ``weights_version == 1``."""

    def save_round_state(self, state: dict[str, Any]) -> None:
        if state["weights_version"] == 1:
            raise Crash
        super().save_round_state(state)


def uninterrupted(state_dir: Path) -> bytes:
    fed = Federation(state_dir)
    service = fed.service()
    for _ in (1, 2):
        for client in CLIENTS:
            fed.send(service, client, samples=10 + CLIENTS.index(client))
    assert service.finished
    return fed.final_weights()


def test_crash_between_checkpoint_and_round_state_replays_to_the_same_weights(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path / "crash")
    service = fed.service(CrashingStore(tmp_path / "crash"))
    fed.send(service, "a", samples=10)
    fed.send(service, "b", samples=11)
    with pytest.raises(Crash):  # the last update closes round 1: dies before round.json
        fed.send(service, "c", samples=12)
    store = AggregatorStore(tmp_path / "crash")
    assert store.checkpoint(1) is not None and len(store.history()) == 1
    assert (store.load_round_state() or {})["accepted"] == ["a", "b"]
    restarted = fed.service()  # replays c's stored update and closes round 1 again
    assert fed.round().round_id == 2 and restarted.model.version == 1
    for client in CLIENTS:
        fed.send(restarted, client, samples=10 + CLIENTS.index(client))
    assert restarted.finished
    assert [h["round"] for h in store.history()] == [1, 2]
    assert fed.final_weights() == uninterrupted(tmp_path / "reference")


def test_restart_after_the_last_round_only_republishes(tmp_path: Path) -> None:
    uninterrupted(tmp_path)
    fed = Federation(tmp_path)
    service = fed.service()
    assert service.finished and service.model.version == 2
    weights = Weights.decode(AggregatorStore(tmp_path).checkpoint(2)[0])  # type: ignore[index]
    assert weights.version == 2 and len(AggregatorStore(tmp_path).history()) == 2


def test_a_state_dir_of_another_model_is_refused(tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    fed.service()
    other = {"dense/kernel": np.zeros((5, 3), np.float32), "dense/bias": np.zeros(3, np.float32)}
    with pytest.raises(ConfigError, match="another model"):
        AggregatorService(fed.config, fed.broker.connect("x"), ModelFile(
            MODEL.data, MODEL.sha256, META, other))


class FailingStore(AggregatorStore):
    """The disk is full for accepted updates."""

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        raise OSError(28, "No space left on device")


def test_an_update_that_cannot_be_stored_is_neither_counted_nor_answered(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    service = fed.service(FailingStore(tmp_path))
    assert fed.send(service, "a") is None
    assert service.state.accepted == frozenset()
    assert service.metrics.value("fedge_updates_rejected_total", {"reason": "store"}) == 1
