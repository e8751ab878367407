"""Every poisoned update is rejected with its reason and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from aggregator import rounds
from aggregator.fedavg import Accumulator, Strategy
from aggregator.rounds import RoundsConfig, RoundState, UpdateArrived
from aggregator.validation import (
    Reason,
    ReceivedUpdate,
    RejectionCounts,
    TensorSpec,
    UpdateLimits,
    Verdict,
    delta_norm,
    validate,
)
from edge_client.errors import ConfigError

CONFIG = RoundsConfig(federation="ward-7", model_sha256="ab" * 32, total_rounds=5,
                      min_clients=2, clients_per_round=3, round_timeout=30.0)
GLOBAL = {"dense/kernel": np.zeros((4, 3), np.float32), "dense/bias": np.zeros(3, np.float32)}
SPEC = TensorSpec.of(GLOBAL)
LIMITS = UpdateLimits(max_norm=10.0, max_num_samples=5_000)


class Round:
    """The service's admit path, minus I/O: validate, then the state machine, then fold."""

    def __init__(self) -> None:
        online = RoundState(online=frozenset({"alice", "bob", "carol", "dave"}))
        self.state, actions = rounds.step(CONFIG, online, rounds.Tick(), now=0.0)
        assert isinstance(actions[0], rounds.Announce)
        self.acc: Accumulator = Strategy().accumulator()
        self.rejections = RejectionCounts()

    def admit(self, update: ReceivedUpdate) -> Verdict:
        verdict = validate(update, rounds.context(CONFIG, self.state), SPEC, LIMITS)
        self.rejections = self.rejections.add(verdict)
        if verdict.accepted:
            self.state, _ = rounds.step(CONFIG, self.state, UpdateArrived.of(update), now=1.0)
            self.acc.add(update.delta, update.num_samples)
        return verdict


def good_update(client: str, **changes: Any) -> ReceivedUpdate:
    update = ReceivedUpdate(
        federation="ward-7", round_id=1, client_id=client, base_version=0,
        model_sha256="ab" * 32, nonce="n1", num_samples=120,
        delta={"dense/kernel": np.full((4, 3), 0.1, np.float32),
               "dense/bias": np.full(3, -0.2, np.float32)},
        metrics={"loss": 0.4}, bytes_received=128,
    )
    return replace(update, **changes)


def with_tensor(name: str, value: np.ndarray[Any, Any]) -> Callable[[ReceivedUpdate], Any]:
    return lambda u: replace(u, delta={**u.delta, name: value})


def poisoned_bias(index: int, value: float) -> np.ndarray[Any, Any]:
    bias = np.full(3, -0.2, np.float32)
    bias[index] = value
    return bias


POISONS: dict[str, tuple[Callable[[ReceivedUpdate], ReceivedUpdate], Reason, str]] = {
    "nan": (with_tensor("dense/bias", poisoned_bias(1, np.nan)), Reason.NAN, "dense/bias"),
    "inf": (with_tensor("dense/bias", poisoned_bias(2, -np.inf)), Reason.INF, "dense/bias"),
    "shape": (with_tensor("dense/kernel", np.zeros((3, 4), np.float32)), Reason.SHAPE,
              "dense/kernel"),
    "dtype": (with_tensor("dense/kernel", np.zeros((4, 3), np.float64)), Reason.DTYPE,
              "float64"),
    "extra name": (with_tensor("evil", np.zeros(3, np.float32)), Reason.NAME, "evil"),
    "missing name": (lambda u: replace(u, delta={"dense/bias": u.delta["dense/bias"]}),
                     Reason.NAME, "dense/kernel"),
    "huge norm": (with_tensor("dense/kernel", np.full((4, 3), 1e3, np.float32)), Reason.NORM,
                  "norm"),
    "norm beyond float32": (with_tensor("dense/bias", np.full(3, 3e38, np.float32)),
                            Reason.NORM, "norm"),
    "zero samples": (lambda u: replace(u, num_samples=0), Reason.NUM_SAMPLES, "num_samples 0"),
    "negative samples": (lambda u: replace(u, num_samples=-5), Reason.NUM_SAMPLES, "-5"),
    "inflated samples": (lambda u: replace(u, num_samples=10**9), Reason.NUM_SAMPLES, "5000"),
    "future round": (lambda u: replace(u, round_id=7), Reason.WRONG_ROUND, "round 7"),
    "older base": (lambda u: replace(u, round_id=1, base_version=-1), Reason.STALE,
                   "base_version -1"),
    "unknown base": (lambda u: replace(u, base_version=3), Reason.BASE_VERSION,
                     "base_version 3"),
    "model hash": (lambda u: replace(u, model_sha256="cd" * 32), Reason.MODEL_HASH,
                   "model_sha256"),
    "federation": (lambda u: replace(u, federation="ward-8"), Reason.FEDERATION, "ward-8"),
}


@pytest.mark.parametrize("case", sorted(POISONS))
def test_poisoned_update_is_rejected_with_its_reason_and_changes_nothing(case: str) -> None:
    poison, reason, named = POISONS[case]
    rnd = Round()
    client = sorted(rnd.state.selected)[0]
    before = rnd.state
    verdict = rnd.admit(poison(good_update(client)))
    assert (verdict.accepted, verdict.reason) == (False, reason)
    assert named in verdict.message
    assert rnd.state == before and rnd.acc.num_updates == 0
    assert rnd.rejections.as_dict() == {reason.value: 1}
    assert rnd.admit(good_update(client)).accepted, "the client can still send a good update"


def test_duplicate_from_the_same_client_is_rejected_and_not_folded_twice() -> None:
    rnd = Round()
    client = sorted(rnd.state.selected)[0]
    assert rnd.admit(good_update(client)).accepted
    verdict = rnd.admit(good_update(client, nonce="n2"))
    assert verdict.reason is Reason.DUPLICATE and client in verdict.message
    assert rnd.acc.num_updates == 1


def test_client_not_selected_for_the_round_is_rejected() -> None:
    rnd = Round()
    outsider = ({"alice", "bob", "carol", "dave"} - rnd.state.selected).pop()
    verdict = rnd.admit(good_update(outsider))
    assert verdict.reason is Reason.NOT_SELECTED and outsider in verdict.message
    assert rnd.acc.num_updates == 0


def test_good_updates_from_all_selected_clients_are_accepted() -> None:
    rnd = Round()
    verdicts = [rnd.admit(good_update(c)) for c in sorted(rnd.state.selected)]
    assert all(v.accepted and v.reason is None for v in verdicts)
    assert rnd.acc.num_updates == 3 and rnd.rejections.as_dict() == {}


def test_rejections_are_counted_by_reason() -> None:
    rnd = Round()
    client = sorted(rnd.state.selected)[0]
    for update in [good_update(client, num_samples=0), good_update(client, num_samples=-1),
                   good_update(client, federation="x"), good_update(client)]:
        rnd.admit(update)
    assert rnd.rejections.as_dict() == {"num_samples": 2, "federation": 1}


def test_norm_counts_every_tensor_together() -> None:
    delta = {"a": np.array([3.0], np.float32), "b": np.array([4.0], np.float32)}
    assert delta_norm(delta) == pytest.approx(5.0)


@pytest.mark.parametrize("kwargs", [{"max_norm": 0.0, "max_num_samples": 10},
                                    {"max_norm": float("inf"), "max_num_samples": 10},
                                    {"max_norm": 1.0, "max_num_samples": 0}])
def test_nonsense_limits_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        UpdateLimits(**kwargs)
