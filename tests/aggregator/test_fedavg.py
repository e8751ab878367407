"""Aggregation maths: streaming weighted mean, robust means, server optimizers."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aggregator.fedavg import ServerState, Strategy, WeightedMean
from edge_client.errors import ConfigError, ValidationError

Delta = dict[str, npt.NDArray[Any]]
SHAPES = {"dense/kernel": (3, 2), "dense/bias": (2,)}

finite32 = st.floats(-1e3, 1e3, allow_nan=False, width=32)
deltas = st.fixed_dictionaries(
    {name: hnp.arrays(np.float32, shape, elements=finite32) for name, shape in SHAPES.items()}
)
updates = st.lists(st.tuples(deltas, st.integers(1, 10_000)), min_size=1, max_size=8)


def reference_mean(batch: list[tuple[Delta, int]], weight: Any = lambda n: n) -> Delta:
    weights = np.array([weight(n) for _, n in batch], np.float64)
    return {
        name: np.tensordot(weights, np.stack([d[name] for d, _ in batch]).astype(np.float64), 1)
        / weights.sum()
        for name in SHAPES
    }


def fold(strategy: Strategy, batch: list[tuple[Delta, int]]) -> Delta:
    acc = strategy.accumulator()
    for delta, n in batch:
        acc.add(delta, n)
    return acc.result()


def assert_close(got: Delta, want: Delta, rtol: float = 1e-12, atol: float = 1e-9) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(batch=updates, data=st.data())
def test_streaming_mean_equals_weighted_mean_in_any_arrival_order(
    batch: list[tuple[Delta, int]], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(batch))
    assert_close(fold(Strategy(), arrival), reference_mean(batch))


@settings(max_examples=30, deadline=None)
@given(batch=updates)
def test_uniform_weighting_is_the_plain_mean(batch: list[tuple[Delta, int]]) -> None:
    got = fold(Strategy(weighting="uniform"), batch)
    assert_close(got, {k: np.mean([d[k] for d, _ in batch], axis=0, dtype=np.float64)
                       for k in SHAPES})


def test_sample_cap_limits_the_pull_of_a_client_claiming_many_samples() -> None:
    small = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    big = {k: np.ones(s, np.float32) for k, s in SHAPES.items()}
    batch = [(small, 100), (big, 1_000_000)]
    capped = fold(Strategy(sample_cap=100), batch)
    assert_close(capped, {k: np.full(s, 0.5) for k, s in SHAPES.items()})
    uncapped = fold(Strategy(), batch)
    assert uncapped["dense/bias"][0] > 0.99


@settings(max_examples=30, deadline=None)
@given(batch=updates)
def test_re_folding_the_same_updates_in_order_gives_the_identical_result(
    batch: list[tuple[Delta, int]]
) -> None:
    """What a restart relies on: the round re-folds its stored updates from scratch."""
    strategy = Strategy(sample_cap=500)
    first, again = fold(strategy, batch), fold(strategy, batch)
    for name, arr in first.items():
        np.testing.assert_array_equal(arr, again[name])


def test_memory_stays_flat_however_many_clients_are_folded() -> None:
    size = 200_000
    acc = WeightedMean()

    def arrivals(n: int) -> Any:
        for i in range(n):
            yield {"w": np.full(size, i, np.float32)}, 1

    tracemalloc.start()
    for delta, n in arrivals(50):
        acc.add(delta, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert acc.result()["w"][0] == pytest.approx(24.5)
    # float64 sum (8 B/param) + the update being folded and the next one being made (2 x 4)
    # + a bounded scratch buffer; holding the 50 updates would take 200 B/param
    assert peak < 20 * size, f"peak {peak / 1e6:.1f} MB for 50 updates of {size} params"


def test_mismatched_tensors_and_empty_rounds_are_refused() -> None:
    acc = Strategy().accumulator()
    with pytest.raises(ValidationError, match="no update"):
        acc.result()
    acc.add({"w": np.ones(3, np.float32)}, 2)
    with pytest.raises(ValidationError, match="'w'"):
        acc.add({"w": np.ones(4, np.float32)}, 2)
    with pytest.raises(ValidationError, match="differ"):
        acc.add({"v": np.ones(3, np.float32)}, 2)


def test_fedavg_moves_weights_by_server_lr_times_mean_and_keeps_dtype() -> None:
    weights = {"w": np.array([1.0, 2.0], np.float32)}
    new, state = Strategy(server_lr=0.5).apply(weights, {"w": np.array([2.0, -4.0])},
                                               ServerState())
    np.testing.assert_array_equal(new["w"], np.array([2.0, 0.0], np.float32))
    assert new["w"].dtype == np.float32
    assert state.rounds == 1


def test_fedavgm_two_rounds_match_hand_computed_momentum() -> None:
    strategy = Strategy("fedavgm", server_lr=0.5, momentum=0.9)
    x0 = {"w": np.array([0.0, 10.0], np.float32)}
    x1, s1 = strategy.apply(x0, {"w": np.array([1.0, -2.0])}, ServerState())
    # u1 = [1, -2]; x1 = x0 + 0.5·u1
    np.testing.assert_allclose(x1["w"], [0.5, 9.0])
    x2, s2 = strategy.apply(x1, {"w": np.array([3.0, 0.0])}, s1)
    # u2 = 0.9·[1, -2] + [3, 0] = [3.9, -1.8]; x2 = x1 + 0.5·u2
    np.testing.assert_allclose(x2["w"], [2.45, 8.1], rtol=1e-6)
    np.testing.assert_allclose(s2.momentum["w"], [3.9, -1.8])


def test_fedadam_two_rounds_match_hand_computed_reference() -> None:
    strategy = Strategy("fedadam", server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x0 = {"w": np.array([0.0, 1.0], np.float32)}
    x1, s1 = strategy.apply(x0, {"w": np.array([1.0, -2.0])}, ServerState())
    # m1 = 0.1·Δ1 = [0.1, -0.2]; v1 = 0.99·τ² + 0.01·Δ1² = [0.01000099, 0.04000099]
    # x1 = x0 + 0.1·m1/(√v1 + τ) = [0 + 0.1·0.1/0.1010050, 1 - 0.1·0.2/0.2010025]
    np.testing.assert_allclose(x1["w"], [0.0990050, 0.9004988], rtol=1e-6)
    x2, s2 = strategy.apply(x1, {"w": np.array([0.5, 0.0])}, s1)
    # m2 = [0.14, -0.18]; v2 = [0.0124009801, 0.0396009801]
    # x2 = x1 + 0.1·m2/(√v2 + τ) = [x1 + 0.1·0.14/0.1123597, x1 - 0.1·0.18/0.1999990]
    np.testing.assert_allclose(s2.m["w"], [0.14, -0.18])
    np.testing.assert_allclose(s2.v["w"], [0.0124009801, 0.0396009801])
    np.testing.assert_allclose(x2["w"], [0.2236049, 0.8104987], rtol=1e-6)


def test_server_state_survives_a_round_trip_through_flat_arrays() -> None:
    strategy = Strategy("fedadam")
    weights = {"dense/kernel": np.ones((2, 2), np.float32)}
    _, state = strategy.apply(weights, {"dense/kernel": np.full((2, 2), 0.5)}, ServerState())
    restored = ServerState.from_arrays(state.to_arrays())
    assert restored.rounds == 1
    after, _ = strategy.apply(weights, {"dense/kernel": np.ones((2, 2))}, restored)
    expected, _ = strategy.apply(weights, {"dense/kernel": np.ones((2, 2))}, state)
    np.testing.assert_array_equal(after["dense/kernel"], expected["dense/kernel"])
    with pytest.raises(ValidationError, match="unknown"):
        ServerState.from_arrays({"rounds": np.array(1), "velocity/w": np.ones(2)})


@settings(max_examples=40, deadline=None)
@given(batch=updates)
def test_median_is_numpy_coordinate_wise_median(batch: list[tuple[Delta, int]]) -> None:
    want = {k: np.median(np.stack([d[k] for d, _ in batch]).astype(np.float64), axis=0)
            for k in SHAPES}
    assert_close(fold(Strategy("median"), batch), want)


@settings(max_examples=40, deadline=None)
@given(batch=updates, trim=st.sampled_from([0.0, 0.1, 0.25, 0.4]))
def test_trimmed_mean_cuts_the_same_share_at_each_end(
    batch: list[tuple[Delta, int]], trim: float
) -> None:
    cut = int(trim * len(batch))
    want = {
        k: np.sort(np.stack([d[k] for d, _ in batch]).astype(np.float64), axis=0)[
            cut : len(batch) - cut].mean(axis=0)
        for k in SHAPES
    }
    assert_close(fold(Strategy("trimmed-mean", trim_fraction=trim), batch), want)


@pytest.mark.parametrize("name", ["median", "trimmed-mean"])
def test_robust_aggregates_ignore_one_poisoned_client(name: str) -> None:
    honest = [({"w": np.full(3, v, np.float32)}, 10) for v in (0.9, 1.0, 1.1, 1.0, 0.95)]
    poisoned = ({"w": np.full(3, 1e6, np.float32)}, 10_000)
    got = fold(Strategy(name, trim_fraction=0.2), [*honest, poisoned])
    assert np.all(np.abs(got["w"] - 1.0) < 0.1)


@pytest.mark.parametrize(
    "kwargs",
    [{"name": "fedprox"}, {"weighting": "random"}, {"sample_cap": 0}, {"server_lr": 0.0},
     {"momentum": 1.0}, {"beta2": -0.1}, {"tau": 0.0}, {"trim_fraction": 0.5}],
)
def test_bad_strategy_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Strategy(**kwargs)
