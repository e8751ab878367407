"""The round bench's summary and table (tools/bench/round.py), on hand-made measurements."""

from __future__ import annotations

from typing import Any

from aggregator.stages import Stage
from tools.bench import round as bench
from tools.bench.monitor import FloorRun, RoundRun
from tools.bench.stages import OTHER

FLOORS = [FloorRun(0.10, 10, 1000), FloorRun(0.12, 10, 1000)]
ROUNDS = [RoundRun(1, 0.30, 1000.0), RoundRun(2, 0.20, 2000.0)]
EVENTS = [{"event": "sent", "round": r, "bytes": 100, "encode_s": 0.01, "at": at + 0.05}
          for r, at in ((1, 1000.0), (2, 2000.0)) for _ in range(10)]


def _result(stages: dict[str, Any]) -> dict[str, Any]:
    row = {"n": 10, "variant": bench.VARIANT, "processes": 1, "chunks_per_update": 1,
           **bench._summary(FLOORS, ROUNDS, stages, EVENTS)}
    return {"model": "mlp 3072 inputs, 10 classes", "params": 99034, "codec": "int8",
            "max_payload": 131072, "repeats": 2, "state_filesystem": "ext4", "rows": [row],
            "goal": "round <= 1.5x floor at N = 100", "goal_met": None}


def test_the_median_rounds_window_gives_the_stage_table() -> None:
    window = {"round": 1, "seconds": 0.2, "calls": {Stage.REPLY.value: 10},
              "stages": {Stage.REPLY.value: 0.05, Stage.WAIT.value: 0.1, OTHER: 0.05}}
    result = _result({"windows": [window]})
    (row,) = result["rows"]
    assert row["median_round"] == 1 and row["window_seconds"] == 0.2  # the slower of two
    assert row["round_update_bytes"] == row["floor_bytes"] == 1000
    text = bench.render(result)
    assert "| reply publish (waits PUBACK) | 0.050 |" in text
    assert f"| {OTHER} | 0.050 |" in text
    assert "| **announcement → round closed** | 0.200 |" in text
    assert "| 10 | as shipped | 0.110 | 0.250 | 2.3 | 1,000 | 0.100 | 0.050 | 5.0 |" in text


def test_without_a_window_from_the_service_the_round_is_still_reported() -> None:
    result = _result({"windows": []})  # the service did not call its stage hook
    (row,) = result["rows"]
    assert row["window_seconds"] is None and row["stages"] == {} and row["calls"] == {}
    text = bench.render(result)
    assert "| 10 | as shipped | 0.110 | 0.250 | 2.3 | 1,000 | 0.100 | 0.050 | 0.0 |" in text
    assert "Where the round's time goes: not reported" in text
