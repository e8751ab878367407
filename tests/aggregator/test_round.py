"""The round object: every poisoned update is rejected with its reason and changes nothing;
what is accepted is stored before it counts, once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from round_kit import LIMITS, Driver, update

from aggregator.bounds import InfluenceBounds
from aggregator.reasons import Reason
from aggregator.schedule import RoundsConfig, Tick
from aggregator.validation import ReceivedUpdate, UpdateLimits, delta_norm
from edge_client.errors import ConfigError

CONFIG = RoundsConfig(federation="ward-7", model_sha256="ab" * 32, total_rounds=5,
                      min_clients=2, clients_per_round=3, round_timeout=30.0)


def announced() -> Driver:
    """A real round, announced to three of four online clients."""
    d = Driver(CONFIG, frozenset({"alice", "bob", "carol", "dave"}))
    d.send(Tick(), 0.0)
    return d


def good_update(client: str, **changes: Any) -> ReceivedUpdate:
    return update(CONFIG, client, 1, 0, **changes)


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
    rnd = announced()
    client = sorted(rnd.state.selected)[0]
    before = rnd.state
    verdict = rnd.admit(poison(good_update(client)), 1.0)
    assert verdict.rejection is not None
    assert (verdict.accepted, verdict.rejection.reason) == (False, reason)
    assert named in verdict.rejection.message
    assert rnd.state == before and rnd.round.participants == () and not rnd.journal.saved
    assert dict(rnd.round.traffic.rejections) == {reason.value: 1}
    assert rnd.admit(good_update(client), 1.0).accepted, "the client can still send a good one"


def test_duplicate_from_the_same_client_is_rejected_and_not_folded_twice() -> None:
    rnd = announced()
    client = sorted(rnd.state.selected)[0]
    assert rnd.admit(good_update(client), 1.0).accepted
    verdict = rnd.admit(update(CONFIG, client, 1, 0, salt="another"), 1.0)
    assert verdict.rejection is not None
    assert verdict.rejection.reason is Reason.DUPLICATE and client in verdict.rejection.message
    assert rnd.round.participants == (client,)


def test_client_not_selected_for_the_round_is_rejected() -> None:
    rnd = announced()
    outsider = ({"alice", "bob", "carol", "dave"} - rnd.state.selected).pop()
    verdict = rnd.admit(good_update(outsider), 1.0)
    assert verdict.rejection is not None
    assert verdict.rejection.reason is Reason.NOT_SELECTED
    assert outsider in verdict.rejection.message
    assert rnd.round.participants == ()


def test_good_updates_from_all_selected_clients_are_accepted() -> None:
    rnd = announced()
    verdicts = [rnd.admit(good_update(c), 1.0) for c in sorted(rnd.state.selected)]
    assert all(v.accepted and v.rejection is None for v in verdicts)
    assert len(rnd.journal.saved) == 3 and dict(rnd.round.traffic.rejections) == {}


def test_rejections_are_counted_by_reason() -> None:
    rnd = announced()
    client = sorted(rnd.state.selected)[0]
    for got in [good_update(client, num_samples=0), good_update(client, num_samples=-1),
                   good_update(client, federation="x"), good_update(client)]:
        rnd.admit(got, 1.0)
    assert dict(rnd.round.traffic.rejections) == {"num_samples": 2, "federation": 1}


def test_norm_counts_every_tensor_together() -> None:
    delta = {"a": np.array([3.0], np.float32), "b": np.array([4.0], np.float32)}
    assert delta_norm(delta) == pytest.approx(5.0)


@pytest.mark.parametrize("kwargs", [{"max_norm": 0.0, "max_num_samples": 10},
                                    {"max_norm": float("inf"), "max_num_samples": 10},
                                    {"max_norm": 1.0, "max_num_samples": 0}])
def test_nonsense_limits_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        UpdateLimits(**kwargs)


def test_an_update_is_stored_before_it_counts_and_a_failed_store_counts_nothing() -> None:
    rnd = announced()
    client = sorted(rnd.state.selected)[0]
    rnd.journal.fail = True
    verdict = rnd.admit(good_update(client), 1.0)
    assert verdict.rejection is not None and verdict.rejection.reason is Reason.STORE
    assert not verdict.stored and rnd.round.participants == () and not rnd.state.accepted
    rnd.journal.fail = False
    assert rnd.admit(good_update(client), 2.0).accepted, "the broker's redelivery counts"
    assert rnd.round.participants == (client,) and rnd.state.accepted == {client}


def test_a_re_sent_update_is_accepted_again_but_counted_once() -> None:
    rnd = announced()
    client = sorted(rnd.state.selected)[0]
    first = good_update(client)
    assert rnd.admit(first, 1.0).accepted
    again = rnd.admit(first, 2.0)
    assert again.accepted and again.resent and rnd.round.samples == first.num_samples


def test_the_aggregate_is_the_sample_weighted_mean_of_what_was_counted() -> None:
    rnd = announced()
    rnd.round.bounds = InfluenceBounds(weight_factor=0, norm_factor=0)  # the plain mean
    a, b, _ = sorted(rnd.state.selected)
    rnd.admit(update(CONFIG, a, 1, 0, samples=100, value=0.1), 1.0)
    rnd.admit(update(CONFIG, b, 1, 0, samples=300, value=0.5), 1.0)
    expected = (100 * 0.1 + 300 * 0.5) / 400
    np.testing.assert_allclose(rnd.round.delta()["dense/kernel"], expected, rtol=1e-6)
    assert rnd.round.samples == 400 and rnd.round.metrics() == {"loss": pytest.approx(0.4)}


def test_one_liar_cannot_control_the_model_with_default_bounds() -> None:
    """Issue 14, finding 1: 2 honest devices (~100 samples, delta norm ~0.1) and 1 claiming
    10⁶ samples with a delta of norm 999: the global change stays below norm 1."""
    config = RoundsConfig(federation="ward-7", model_sha256="ab" * 32, total_rounds=1,
                          min_clients=3, clients_per_round=3, round_timeout=30.0)
    d = Driver(config)
    limits = UpdateLimits(max_norm=1000.0, max_num_samples=1_000_000)  # the flag defaults
    d.round.limits = limits
    for client in ("alice", "bob", "mallory"):
        d.round.seen(client, True, 0.0)
    d.send(Tick(), 0.0)
    honest_value = 0.1 / np.sqrt(24)  # the kit: 12 weights of v and 3 of -2v, norm v·√24
    liar_value = 999 / np.sqrt(24)
    for client, samples, value in (("alice", 100, honest_value), ("bob", 110, honest_value),
                                   ("mallory", 1_000_000, liar_value)):
        decision = d.round.admit(update(config, client, 1, 0, samples=samples, value=value),
                                 1.0)
        assert decision.accepted, decision.rejection
    delta = d.round.delta()
    change = float(np.sqrt(sum(float(np.sum(v * v)) for v in delta.values())))
    assert change <= 1.0, change
    assert change == pytest.approx((100 * 0.1 + 110 * 0.1 + 330 * 0.3) / 540, rel=1e-3)
    report = d.round.record("aggregated", 1, 2.0)["bounds"]
    assert report["capped"]["mallory"] == {"claimed": 1_000_000, "weight": 330}
    assert set(report["clipped"]) == {"mallory"} and report["clip_norm"] == pytest.approx(
        0.3, rel=1e-3)


def test_a_count_above_max_num_samples_is_clipped_not_rejected() -> None:
    """Issue 14, finding 9: an honest big site (10⁹ samples > --max-num-samples 5,000) used
    to be refused after training; its update counts, weighing as the bound at most."""
    d = announced()
    d.round.bounds = InfluenceBounds(weight_factor=0, norm_factor=0)  # only the count bound
    a, b, c = sorted(d.state.selected)
    for client, samples, value in ((a, 100, 0.1), (b, 200, 0.2), (c, 10**9, 0.4)):
        verdict = d.round.admit(update(CONFIG, client, 1, 0, samples=samples, value=value),
                                1.0)
        assert verdict.accepted, verdict.rejection
    limit = LIMITS.max_num_samples
    expected = (100 * 0.1 + 200 * 0.2 + limit * 0.4) / (300 + limit)
    np.testing.assert_allclose(d.round.delta()["dense/kernel"], expected, rtol=1e-6)
    line = d.round.record("aggregated", 1, 2.0)
    assert line["bounds"]["capped"] == {c: {"claimed": 10**9, "weight": limit,
                                            "max_num_samples": limit}}
    assert line["samples"] == 300 + 10**9  # what the sites claimed


def test_the_median_cap_counts_a_claim_over_the_bound_as_the_bound() -> None:
    d = announced()
    a, b, c = sorted(d.state.selected)
    for client, samples in ((a, 4000), (b, 10**9), (c, 10**9)):  # median_low: the bound
        d.round.admit(update(CONFIG, client, 1, 0, samples=samples), 1.0)
    report = d.round.plan().report()
    limit = LIMITS.max_num_samples
    assert report["weight_cap"] == 3 * limit
    assert report["capped"] == {x: {"claimed": 10**9, "weight": limit, "max_num_samples": limit}
                                for x in (b, c)}


def test_with_everyone_in_bounds_it_is_exact_fedavg() -> None:
    d = announced()
    a, b, c = sorted(d.state.selected)
    for client, samples, value in ((a, 100, 0.1), (b, 150, 0.12), (c, 200, 0.08)):
        d.round.admit(update(CONFIG, client, 1, 0, samples=samples, value=value), 1.0)
    expected = (100 * 0.1 + 150 * 0.12 + 200 * 0.08) / 450
    np.testing.assert_allclose(d.round.delta()["dense/kernel"], expected, rtol=1e-6)
    report = d.round.record("aggregated", 1, 2.0)["bounds"]
    assert report["capped"] == {} and report["clipped"] == {}
