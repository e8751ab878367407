"""The state directory: acceptance order, idempotent writes, torn history lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator.store import AggregatorStore
from edge_client.errors import ValidationError


def test_accepted_updates_come_back_in_acceptance_order(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    for client in ("zeta", "alpha", "dev.3-x_y"):  # protocol ids, not sorted
        store.save_accepted(4, client, client.encode())
    assert store.accepted(4) == [("zeta", b"zeta"), ("alpha", b"alpha"),
                                 ("dev.3-x_y", b"dev.3-x_y")]
    assert store.accepted_payload(4, "alpha") == b"alpha"
    assert store.accepted_payload(4, "beta") is None and store.accepted(5) == []


def test_saving_again_is_idempotent_but_never_replaces(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    store.save_accepted(1, "a", b"first")
    store.save_accepted(1, "a", b"first")
    assert store.accepted(1) == [("a", b"first")]
    with pytest.raises(ValidationError, match="already has another"):
        store.save_accepted(1, "a", b"second")
    with pytest.raises(ValidationError, match="client id"):
        store.save_accepted(1, "../etc", b"x")


def test_checkpoints_by_version(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    store.save_checkpoint(0, b"w0", {"rounds": np.array(0)})
    store.save_checkpoint(1, b"w1", {"rounds": np.array(1)})
    saved = store.checkpoint(0)
    assert saved is not None and saved[0] == b"w0" and int(saved[1]["rounds"]) == 0
    latest = store.latest_checkpoint()
    assert latest is not None and latest[:2] == (1, b"w1")
    assert store.checkpoint(7) is None


def test_a_history_line_torn_by_a_crash_loses_only_itself(tmp_path: Path) -> None:
    store = AggregatorStore(tmp_path)
    store.append_history({"round": 1})
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"round": 2, "outc')  # kill -9 mid-write
    store.append_history({"round": 2})
    assert store.history() == [{"round": 1}, {"round": 2}]
