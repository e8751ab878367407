"""Faults of simulated devices (tools/simulate/faults.py): reproducible, and exclusive."""

from __future__ import annotations

from tools.simulate.faults import Faults


def test_faults_are_reproducible_and_a_dropout_does_nothing_else() -> None:
    faults = Faults(dropout=0.5, slow=0.5, crash_mid_upload=0.5, duplicate_sends=0.5)
    plans = [faults.draw(7, d, r) for d in range(50) for r in range(3)]
    assert plans == [faults.draw(7, d, r) for d in range(50) for r in range(3)]
    assert all(not (p.crash or p.duplicate or p.delay) for p in plans if p.dropout)
    assert all(not p.duplicate for p in plans if p.crash)
    assert {p.dropout for p in plans} == {True, False}
