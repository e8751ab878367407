"""The round state machine (aggregator/schedule.py), driven through the real Round by events
and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from round_kit import Driver as RoundDriver
from round_kit import update

from aggregator.reasons import Reason
from aggregator.round import Decision
from aggregator.schedule import (
    Admitted,
    Aggregate,
    Announce,
    ExtendDeadline,
    Finish,
    Phase,
    Presence,
    PresenceRefused,
    RoundsConfig,
    RoundState,
    SkipRound,
    Tick,
    initial_state,
    round_size,
    select_clients,
    step,
)
from edge_client.errors import ConfigError, ValidationError

H = "ab" * 32  # a model hash
CLIENTS = frozenset(f"dev-{i:02d}" for i in range(8))
CONFIG = RoundsConfig(federation="f", model_sha256=H, total_rounds=3, min_clients=2,
                      clients_per_round=3, round_timeout=10.0, seed=7)


class Driver(RoundDriver):
    """The round kit's driver with this module's defaults; ``answer`` makes a new update
    (a new nonce) each time, so a second one from a client is a duplicate."""

    def __init__(self, config: RoundsConfig = CONFIG, online: frozenset[str] = CLIENTS) -> None:
        super().__init__(config, online)
        self.decisions: list[Decision] = []
        self._sent = 0

    def answer(self, client: str, now: float, **kw: int) -> Decision:
        self._sent += 1
        got = update(self.config, client, kw.get("round_id", self.state.round_id),
                     kw.get("base_version", self.state.weights_version), salt=str(self._sent))
        decision = self.admit(got, now)
        self.decisions.append(decision)
        return decision


def outcome(decision: Decision) -> tuple[bool, Reason | None]:
    """(accepted, reason) of a decision, as the client's Reply says it."""
    return decision.accepted, decision.rejection and decision.rejection.reason


def of_type(actions: Any, kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def test_happy_path_runs_every_round_then_finishes() -> None:
    d = Driver()
    (announce,) = d.send(Tick(), now=0.0)
    assert announce == Announce(1, 0, tuple(d.selected()), 10.0) and len(d.selected()) == 3
    for r in range(1, 4):
        clients = d.selected()
        for t, client in enumerate(clients):
            assert outcome(d.answer(client, now=r + t * 0.1)) == (True, None)
    assert of_type(d.actions, Aggregate) == [
        Aggregate(r, a.selected, r) for r, a in enumerate(of_type(d.actions, Announce), 1)]
    assert [a.base_version for a in of_type(d.actions, Announce)] == [0, 1, 2]
    assert d.actions[-1] == Finish(rounds=3, aggregated=3, skipped=0)
    assert d.state.phase is Phase.FINISHED and d.state.weights_version == 3
    assert d.send(Tick(), now=1e6) == ()


def test_a_straggler_does_not_stall_the_round_beyond_its_deadline() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    fast, straggler = d.selected()[:2], d.selected()[2]
    for client in fast:
        d.answer(client, now=1.0)
    assert d.send(Tick(), now=9.99) == ()
    closed, announce = d.send(Tick(), now=10.0)
    assert closed == Aggregate(1, tuple(fast), 1)
    assert isinstance(announce, Announce) and announce.round_id == 2
    assert outcome(d.answer(straggler, now=11.0, round_id=1, base_version=0)) == (
        False, Reason.LATE)


def test_quorum_not_met_extends_once_then_skips_keeping_the_weights() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    d.answer(d.selected()[0], now=1.0)
    assert d.send(Tick(), now=10.0) == (ExtendDeadline(1, 20.0, accepted=1),)
    assert d.send(Tick(), now=19.0) == ()
    skip, announce = d.send(Tick(), now=20.0)
    assert skip == SkipRound(1, accepted=1, min_clients=2)
    assert isinstance(announce, Announce)
    assert (announce.round_id, announce.base_version, announce.deadline) == (2, 0, 30.0)
    assert d.state.weights_version == 0 and not d.state.extended


def test_quorum_reached_during_the_extension_aggregates_at_the_extended_deadline() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    first, second, _ = d.selected()
    d.answer(first, now=1.0)
    d.send(Tick(), now=12.0)
    d.answer(second, now=15.0)
    assert of_type(d.send(Tick(), now=22.0), Aggregate) == [Aggregate(1, (first, second), 1)]


def test_a_server_asleep_past_the_extension_skips_at_once() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    actions = d.send(Tick(), now=500.0)
    assert isinstance(actions[0], SkipRound) and not of_type(actions, ExtendDeadline)


def test_all_selected_answering_closes_the_round_before_the_deadline() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    *early, last = selected = d.selected()
    for client in early:
        d.answer(client, now=1.0)
    assert d.state.phase is Phase.COLLECTING
    d.answer(last, now=2.0)
    assert of_type(d.actions, Aggregate) == [Aggregate(1, tuple(selected), 1)]
    assert d.state.round_id == 2 and d.state.deadline == 12.0


def test_waits_for_quorum_online_before_announcing() -> None:
    d = Driver(online=frozenset())
    assert d.send(Presence("dev-00", True), now=0.0) == ()
    assert d.send(Presence("dev-00", False), now=1.0) == ()
    d.send(Presence("dev-01", True), now=2.0)
    (announce,) = d.send(Presence("dev-02", True), now=3.0)
    assert announce == Announce(1, 0, ("dev-01", "dev-02"), 13.0)


def test_min_available_holds_the_first_round_until_enough_clients_are_online() -> None:
    d = Driver(RoundsConfig("f", H, total_rounds=1, min_clients=2, clients_per_round=3,
                            min_available=4), online=frozenset())
    for i, client in enumerate(["a", "b", "c"]):
        assert d.send(Presence(client, True), now=float(i)) == ()
    (announce,) = d.send(Presence("d", True), now=5.0)
    assert isinstance(announce, Announce) and len(announce.selected) == 3


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"round_id": 3}, Reason.WRONG_ROUND),
        ({"base_version": 0}, Reason.STALE),  # round 2 runs on version 1
        ({"base_version": 5}, Reason.BASE_VERSION),
        ({"round_id": 1, "base_version": 0}, Reason.LATE),
    ],
)
def test_updates_for_the_wrong_round_or_version_are_refused(
    update: dict[str, int], reason: Reason
) -> None:
    d = Driver(RoundsConfig("f", H, total_rounds=5, min_clients=2, clients_per_round=2,
                            round_timeout=10.0))
    d.send(Tick(), now=0.0)
    for client in d.selected():
        d.answer(client, now=1.0)
    assert (d.state.round_id, d.state.weights_version) == (2, 1)
    before = d.state
    assert outcome(d.answer(d.selected()[0], now=2.0, **update)) == (False, reason)
    assert d.state == before


def test_an_update_two_rounds_old_is_stale_and_one_after_finish_is_late() -> None:
    d = Driver(RoundsConfig("f", H, total_rounds=3, min_clients=2, round_timeout=10.0),
               online=frozenset({"a", "b"}))
    d.send(Tick(), now=0.0)
    for r in range(3):
        for client in ("a", "b"):
            d.answer(client, now=r + 1.0)
    assert d.state.phase is Phase.FINISHED
    assert outcome(d.answer("a", now=9.0, round_id=3, base_version=2))[1] is Reason.LATE
    assert outcome(d.answer("a", now=9.0, round_id=1, base_version=0))[1] is Reason.STALE


def test_duplicate_and_unselected_updates_are_refused() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    client, outsider = d.selected()[0], sorted(CLIENTS - d.state.selected)[0]
    d.answer(client, now=1.0)
    assert outcome(d.answer(client, now=2.0))[1] is Reason.DUPLICATE
    assert outcome(d.answer(outsider, now=2.0))[1] is Reason.NOT_SELECTED
    assert d.state.accepted == {client}


@given(order=st.permutations(sorted(CLIENTS)), round_id=st.integers(1, 10**6),
       seed=st.integers(0, 2**32))
def test_selection_depends_only_on_seed_round_and_online_set(
    order: list[str], round_id: int, seed: int
) -> None:
    config = RoundsConfig("f", H, total_rounds=3, min_clients=2, clients_per_round=3,
                          seed=seed, min_available=len(CLIENTS))
    d1, d2 = Driver(config, online=frozenset()), Driver(config, online=frozenset())
    for client in order:
        d1.send(Presence(client, True), now=0.0)
    for client in sorted(CLIENTS):
        d2.send(Presence(client, True), now=0.0)
    assert d1.state.round_id == 1 and d1.state.selected == d2.state.selected
    picked = select_clients(seed, round_id, CLIENTS, 3)
    assert picked == select_clients(seed, round_id, frozenset(order), 3)
    assert len(set(picked)) == 3 and set(picked) <= CLIENTS


def test_selection_changes_from_round_to_round() -> None:
    picks = {select_clients(7, r, CLIENTS, 3) for r in range(1, 21)}
    assert len(picks) > 5


@pytest.mark.parametrize(
    ("kwargs", "online", "size"),
    [({"clients_per_round": 3}, 8, 3), ({"clients_per_round": 5}, 4, 4),
     ({"fraction": 0.3}, 10, 3), ({"fraction": 0.01}, 10, 2), ({}, 6, 6)],
)
def test_round_size_follows_config_and_never_drops_below_quorum(
    kwargs: dict[str, Any], online: int, size: int
) -> None:
    config = RoundsConfig("f", H, total_rounds=1, min_clients=2, **kwargs)
    assert round_size(config, online) == size


Arrives = tuple[str, int, int]  # an update from (client, round id, base version)


def play(d: Driver, item: Tick | Presence | Arrives, now: float) -> None:
    if isinstance(item, tuple):
        d.answer(item[0], now, round_id=item[1], base_version=item[2])
    else:
        d.send(item, now)


def script() -> list[tuple[Tick | Presence | Arrives, float]]:
    """Two rounds with a duplicate, an outsider, churn, an extension, late and stale updates.

    With seed 7, round 1 selects dev-05/06/07 and round 2 (dev-09 in, dev-03 out)
    dev-05/06, which delivered round 1, and dev-01.
    """
    return [
        (Tick(), 0.0), (("dev-05", 1, 0), 1.0), (Presence("dev-09", True), 2.0),
        (("dev-03", 1, 0), 3.0), (("dev-05", 1, 0), 4.0),
        (Tick(), 10.0), (("dev-06", 1, 0), 12.0), (Presence("dev-03", False), 13.0),
        (Tick(), 20.0), (("dev-07", 1, 0), 21.0),
        (("dev-01", 2, 1), 22.0), (("dev-09", 2, 0), 23.0),
        (("dev-05", 2, 1), 24.0), (("dev-06", 2, 1), 25.0),
        (Tick(), 40.0),
    ]


@pytest.mark.parametrize("crash_at", range(len(script()) + 1))
def test_restored_state_continues_exactly_like_the_uninterrupted_run(crash_at: int) -> None:
    events = script()
    whole = Driver()
    for event, now in events:
        play(whole, event, now)
    resumed = Driver()
    for event, now in events[:crash_at]:
        play(resumed, event, now)
    resumed.restart()
    for event, now in events[crash_at:]:
        play(resumed, event, now)
    assert resumed.actions == whole.actions and resumed.state == whole.state
    assert resumed.decisions == whole.decisions
    assert {outcome(r)[1] for r in whole.decisions} == {
        None, Reason.NOT_SELECTED, Reason.DUPLICATE, Reason.LATE, Reason.STALE}
    assert [a.round_id for a in of_type(whole.actions, Aggregate)] == [1, 2]
    assert [a.round_id for a in of_type(whole.actions, ExtendDeadline)] == [1, 3]


def test_a_corrupt_checkpoint_is_refused_naming_the_field() -> None:
    data = initial_state().to_dict()
    with pytest.raises(ValidationError, match="selected"):
        RoundState.from_dict({**data, "selected": "dev-00"})
    with pytest.raises(ValidationError, match="round_id"):
        RoundState.from_dict({**data, "round_id": -1})


@pytest.mark.parametrize("kwargs", [{"total_rounds": 0}, {"min_clients": 0},
                                    {"clients_per_round": 1}, {"fraction": 1.5},
                                    {"round_timeout": 0.0}, {"seed": -1},
                                    {"min_available": 1}, {"max_new_clients": 1},
                                    {"max_new_clients": 8, "max_online": 4}])
def test_nonsense_round_config_is_a_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RoundsConfig(**{"federation": "f", "model_sha256": "h", "total_rounds": 2,
                        "min_clients": 2, **kwargs})


def test_a_round_never_lists_more_clients_than_the_protocol_allows() -> None:
    from edge_client.protocol import MAX_SELECTED

    cfg = RoundsConfig(federation="f", model_sha256=H, total_rounds=1, min_clients=2,
                       max_new_clients=MAX_SELECTED)
    assert round_size(cfg, MAX_SELECTED + 500) == MAX_SELECTED
    online = frozenset(f"d{i}" for i in range(MAX_SELECTED + 1))
    d = Driver(cfg, online)
    (announce,) = d.send(Tick(), now=0.0)
    assert isinstance(announce, Announce) and len(announce.selected) == MAX_SELECTED


def test_the_next_round_opens_after_the_close_so_a_slow_publish_never_eats_its_deadline() -> None:
    d = Driver()
    d.send(Tick(), now=0.0)
    *early, last = d.selected()
    for client in early:
        d.answer(client, now=1.0)
    closing = d.round.admit(update(CONFIG, last, 1, 0), now=2.0)
    assert [type(a) for a in closing.actions] == [Aggregate]  # not announced yet
    (announce,) = d.round.tick(now=9.0)  # the service ticks once it has published
    assert isinstance(announce, Announce) and announce.deadline == 9.0 + CONFIG.round_timeout


def test_the_machine_refuses_to_count_an_update_admission_would_refuse() -> None:
    state, _ = step(CONFIG, RoundState(online=CLIENTS), Tick(), now=0.0)
    outsider = sorted(CLIENTS - state.selected)[0]
    with pytest.raises(ValidationError, match="admission"):
        step(CONFIG, state, Admitted(outsider), now=1.0)


FAKES = frozenset(f"fake-{i:04d}" for i in range(2000))


def flooded(delivered: frozenset[str]) -> RoundState:
    """Waiting for round 2: ``delivered`` delivered round 1, 2,000 made-up ids came online."""
    return RoundState(round_id=1, weights_version=1, online=FAKES | delivered,
                      delivered=delivered)


@pytest.mark.parametrize("per_round", [2, None])
def test_ids_that_delivered_are_selected_before_a_presence_flood(per_round: int | None
                                                                 ) -> None:
    """Issue 14 finding 6: 5,000 made-up presence ids were selected instead of the devices
    that had delivered, and the rounds were skipped."""
    config = RoundsConfig("f", H, total_rounds=3, min_clients=2, clients_per_round=per_round)
    _, (announce,) = step(config, flooded(frozenset({"dev-a", "dev-b"})), Tick(), now=0.0)
    assert isinstance(announce, Announce) and {"dev-a", "dev-b"} <= set(announce.selected)
    assert len(announce.selected) == (2 if per_round else 2 + config.max_new_clients)


def test_never_delivered_ids_are_capped_per_round_and_the_untried_go_first() -> None:
    config = RoundsConfig("f", H, total_rounds=20, min_clients=2, max_new_clients=300,
                          round_timeout=1.0)
    state, now, tried = RoundState(online=FAKES | {"dev-new"}), 0.0, set()
    for round_id in range(1, 8):  # 2,001 ids, 300 a round: every id within 7 rounds
        untried = state.online - tried
        state, _ = step(config, state, Tick(), now)
        assert state.round_id == round_id and len(state.selected) == 300
        assert len(state.selected & untried) == min(300, len(untried)), round_id
        tried |= state.selected
        now += 3.0
        state, _ = step(config, state, Tick(), now)  # deadline, extension: skipped
    assert tried == state.online
    assert state.tried == tried and not state.delivered


def test_delivered_and_tried_survive_a_checkpoint_and_older_checkpoints_load() -> None:
    config = RoundsConfig("f", H, total_rounds=3, min_clients=1, clients_per_round=3)
    state, _ = step(config, RoundState(online=CLIENTS), Tick(), now=0.0)
    winner, *losers = sorted(state.selected)
    state, _ = step(config, state, Admitted(winner), now=1.0)
    state, _ = step(config, state, Tick(), now=100.0)
    assert state.delivered == {winner} and state.tried == set(losers)
    assert RoundState.from_dict(state.to_dict()) == state
    older = {k: v for k, v in state.to_dict().items() if k not in ("delivered", "tried")}
    assert RoundState.from_dict(older).delivered == frozenset()


def test_the_presence_table_is_capped_but_ids_that_delivered_always_get_in() -> None:
    config = RoundsConfig("f", H, total_rounds=3, min_clients=2, max_online=300,
                          min_available=10**6)
    state = RoundState(delivered=frozenset({"dev-a"}))
    refused = []
    for client in [*sorted(FAKES)[:400], "dev-a"]:
        state, actions = step(config, state, Presence(client, True), now=0.0)
        refused += of_type(actions, PresenceRefused)
    assert len(state.online) == 301 and "dev-a" in state.online
    assert len(refused) == 100 and refused[0] == PresenceRefused("fake-0300", 300)
    for gone in ("fake-0000", "fake-0001"):  # 299 online: room for one more
        state, _ = step(config, state, Presence(gone, False), now=0.0)
    state, actions = step(config, state, Presence("fake-0399", True), now=0.0)
    assert "fake-0399" in state.online and not actions
