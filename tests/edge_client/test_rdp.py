"""The device's own RDP accountant (numpy-free ``math``) equals ``dp_accounting``'s
RdpAccountant on the same integer orders, to 1e-9."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import rdp as dp_rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client import rdp


def reference(steps: list[tuple[float, float, int]], delta: float) -> float:
    events = [dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(z)), n) for q, z, n in steps]
    accountant = dp_rdp.RdpAccountant(orders=list(rdp.ORDERS))
    return float(accountant.compose(dp_accounting.ComposedDpEvent(events)).get_epsilon(delta))


@pytest.mark.parametrize(("steps", "delta"), [
    ([(0.05, 1.1, 1000)], 1e-5),      # a typical DP-SGD run
    ([(0.25, 0.8, 40), (0.1, 2.0, 300)], 1e-5),  # rounds with other parameters
    ([(1.0, 3.0, 5)], 1e-6),          # no sampling
    ([(0.01, 10.0, 1)], 1e-5),        # tiny: the KL bound gives 0
])
def test_epsilon_equals_dp_accounting(steps: list[tuple[float, float, int]],
                                      delta: float) -> None:
    assert rdp.epsilon(steps, delta) == pytest.approx(reference(steps, delta), abs=1e-9,
                                                      rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(q=st.floats(1e-4, 0.999), z=st.floats(0.5, 20.0), n=st.integers(1, 5000),
       delta=st.sampled_from([1e-3, 1e-5, 1e-8]))
def test_epsilon_equals_dp_accounting_for_any_parameters(q: float, z: float, n: int,
                                                         delta: float) -> None:
    assert rdp.epsilon([(q, z, n)], delta) == pytest.approx(reference([(q, z, n)], delta),
                                                            abs=1e-9, rel=1e-9)


def test_no_steps_spend_nothing_and_bad_values_are_refused() -> None:
    assert rdp.epsilon([], 1e-5) == 0.0
    with pytest.raises(ValueError, match="delta"):
        rdp.epsilon([(0.1, 1.0, 1)], 0.0)
    with pytest.raises(ValueError, match="q="):
        rdp.step_rdp(1.5, 1.0, 2)
