"""The aggregator's stage timer (tools/bench/stages.py), fed stage calls on a hand-set clock."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from aggregator.stages import Stage, StageHook
from tools.bench.stages import OTHER, StageTimer, main


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _timer() -> tuple[StageTimer, Clock]:
    clock = Clock()
    return StageTimer(clock), clock


def test_a_timer_is_the_services_stage_hook() -> None:
    hook: StageHook = StageTimer()  # mypy checks the protocol; a renamed method fails here
    with hook.stage(Stage.ADMIT):
        pass


def test_nested_stages_are_subtracted_from_the_outer_one() -> None:
    timer, clock = _timer()
    timer.round_opened(1)
    with timer.stage(Stage.AGGREGATE):
        clock.advance(1.0)
        with timer.stage(Stage.ENCODE):
            clock.advance(2.0)
            with timer.stage(Stage.CHECKPOINT):
                clock.advance(4.0)
        clock.advance(8.0)
    timer.round_closed(1)
    (window,) = timer.windows
    assert window["stages"] == {"aggregate": 9.0, "encode global weights": 2.0,
                                "save checkpoint (fsync)": 4.0, OTHER: 0.0}
    assert window["calls"] == {"aggregate": 1, "encode global weights": 1,
                               "save checkpoint (fsync)": 1}


def test_stages_add_up_to_the_window_with_the_rest_as_other_service_code() -> None:
    timer, clock = _timer()
    timer.round_opened(3)
    clock.advance(0.5)  # service code between stages
    for _ in range(3):
        with timer.stage(Stage.WAIT):
            clock.advance(1.0)
        with timer.stage(Stage.STORE):
            clock.advance(0.25)
    timer.round_closed(3)
    (window,) = timer.windows
    assert window["round"] == 3 and window["seconds"] == 4.25
    assert window["stages"] == {Stage.WAIT.value: 3.0, Stage.STORE.value: 0.75, OTHER: 0.5}
    assert sum(window["stages"].values()) == window["seconds"]
    assert window["calls"] == {Stage.WAIT.value: 3, Stage.STORE.value: 3}
    assert json.loads(json.dumps(timer.windows)) == timer.windows  # OUT.json as written


def test_only_time_inside_a_round_window_is_counted() -> None:
    timer, clock = _timer()
    with timer.stage(Stage.WAIT):  # before any round
        clock.advance(5.0)
    timer.round_opened(1)
    with timer.stage(Stage.ADMIT):
        clock.advance(1.0)
    timer.round_closed(1)
    with timer.stage(Stage.WAIT):  # between rounds
        clock.advance(5.0)
    timer.round_opened(2)
    with timer.stage(Stage.ADMIT):
        clock.advance(2.0)
    timer.round_closed(2)
    assert [(w["round"], w["stages"], w["calls"]) for w in timer.windows] == [
        (1, {Stage.ADMIT.value: 1.0, OTHER: 0.0}, {Stage.ADMIT.value: 1}),
        (2, {Stage.ADMIT.value: 2.0, OTHER: 0.0}, {Stage.ADMIT.value: 1}),
    ]


def test_a_round_that_never_closes_leaves_no_window() -> None:
    timer, clock = _timer()
    timer.round_opened(1)  # e.g. a round that timed out without a quorum
    clock.advance(1.0)
    timer.round_closed(7)  # not the open round: ignored
    timer.round_opened(2)
    clock.advance(2.0)
    timer.round_closed(2)
    timer.round_closed(2)  # closed already
    assert [(w["round"], w["seconds"]) for w in timer.windows] == [(2, 2.0)]


def test_stages_on_other_threads_are_not_timed() -> None:
    timer, clock = _timer()
    timer.round_opened(1)

    def publish_elsewhere() -> None:
        with timer.stage(Stage.PUBLISH):
            clock.advance(3.0)

    worker = threading.Thread(target=publish_elsewhere)
    worker.start()
    worker.join()
    with timer.stage(Stage.REPLY):
        clock.advance(1.0)
    timer.round_closed(1)
    (window,) = timer.windows
    assert window["calls"] == {Stage.REPLY.value: 1}
    assert window["stages"] == {Stage.REPLY.value: 1.0, OTHER: 3.0}


def test_a_stage_that_raises_is_still_timed() -> None:
    timer, clock = _timer()
    timer.round_opened(1)
    with pytest.raises(ValueError), timer.stage(Stage.INTAKE):
        clock.advance(1.5)
        raise ValueError("bad update")
    timer.round_closed(1)
    assert timer.windows[0]["stages"][Stage.INTAKE.value] == 1.5


def test_main_without_the_separator_prints_its_usage(tmp_path: Path) -> None:
    assert main([str(tmp_path / "out.json"), "--rounds", "1"]) == 2
    assert not (tmp_path / "out.json").exists()
