"""``fedge status`` text: the privacy budget a DP run has spent, and its finish reason."""

from __future__ import annotations

from edge_client.protocol import PRIVACY_BUDGET, Status
from tools.status.view import Snapshot, render


def test_the_status_shows_epsilon_spent_and_the_privacy_budget_finish() -> None:
    status = Status("cardio", "3f9a0c1e5b7d2468", 4, "finished", 4, 0.0, 0, 0, {}, 3,
                    {"round": 4.0, "dp_epsilon": 2.718}, 100.0, finished=PRIVACY_BUDGET)
    text = render(Snapshot("cardio", status=status), now=101.0)
    assert "privacy       epsilon 2.718 spent" in text
    assert f"FINISHED ({PRIVACY_BUDGET})" in text
    plain = Status("cardio", "3f9a0c1e5b7d2468", 4, "finished", 4, 0.0, 0, 0, {}, 3,
                   {"round": 4.0}, 100.0, finished="rounds")
    assert "privacy" not in render(Snapshot("cardio", status=plain), now=101.0)
