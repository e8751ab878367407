"""The client's state directory: one client-id rule with the protocol and the aggregator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError, ProtocolError, ValidationError
from edge_client.protocol import Topics, is_id
from edge_client.state import StateDir

TRICKY = ["dev-1", "c.1", "A_b", "9" * 64, "-a", "_a", ".", "..", ".hidden", "a.", "a-",
          "", "a/b", "a+b", "#", "a\n", "a b", "é", "x" * 65]


def _device_accepts(state: StateDir, cid: str) -> bool:
    try:
        return state.client_id(cid) == cid
    except ConfigError:
        return False


def _protocol_accepts(cid: str) -> bool:
    try:
        Topics("f").update(cid)
    except ProtocolError:
        return False
    return True


def _store_accepts(store: AggregatorStore, cid: str) -> bool:
    try:
        store.save_accepted(1, cid, b"update")
    except ValidationError:
        return False
    return store.accepted_payload(1, cid) == b"update"


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> tuple[StateDir, AggregatorStore]:
    """A device's state directory and an aggregator's store (storing is idempotent)."""
    tmp = tmp_path_factory.mktemp("ids")
    return StateDir(tmp / "device"), AggregatorStore(tmp / "aggregator")


def _verdicts(sides: tuple[StateDir, AggregatorStore], cid: str) -> tuple[bool, ...]:
    state, store = sides
    return _device_accepts(state, cid), _protocol_accepts(cid), _store_accepts(store, cid)


@pytest.mark.parametrize("cid", TRICKY)
def test_device_protocol_and_aggregator_store_accept_the_same_client_ids(
        sides: tuple[StateDir, AggregatorStore], cid: str) -> None:
    """A device id the client accepts is one the topics carry and the aggregator can store."""
    assert _verdicts(sides, cid) == (is_id(cid),) * 3


@settings(max_examples=200, deadline=None)
@given(cid=st.from_regex(r"[A-Za-z0-9_.\-/+#$\n ]{0,66}", fullmatch=True))
def test_the_three_sides_agree_on_any_near_id(sides: tuple[StateDir, AggregatorStore],
                                              cid: str) -> None:
    assert _verdicts(sides, cid) == (is_id(cid),) * 3


def test_a_bad_client_id_names_the_flag_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--client-id '-a': use 1-64 characters of"):
        StateDir(tmp_path).client_id("-a")


def test_an_id_made_once_is_kept_and_a_corrupted_one_is_a_clear_error(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    made = state.client_id(None)
    assert is_id(made) and StateDir(tmp_path).client_id(None) == made
    (tmp_path / "client_id").write_text("../../etc")
    with pytest.raises(ConfigError, match=re.escape("client_id holds '../../etc'")):
        state.client_id(None)
    assert state.client_id("dev-2") == "dev-2"  # a flag still wins
