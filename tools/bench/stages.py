"""The aggregator with a stage timer: ``python -m tools.bench.stages OUT.json -- AGGREGATOR-ARGS``.

Runs ``fedge-aggregator`` in this process with a :class:`StageTimer` as its stage hook
(:class:`aggregator.stages.StageHook`): the service itself says where each stage of its
work begins and ends (``with hook.stage(Stage.X):``) and when a round's window opens and
closes, so a renamed stage is a type error, not a silently missing measurement.

Only stages run on the service's worker (the main thread) are timed, and times are
**exclusive**: a stage inside another is subtracted from the outer one, so per round the
stages add up to the worker's wall time in the window. A window runs from
:meth:`~StageTimer.round_opened` (before the round is announced) to
:meth:`~StageTimer.round_closed` (its new global model published); the time in it outside
every stage is :data:`OTHER`. Every closed window is written to OUT.json at exit::

    {"windows": [{"round": 1, "seconds": 0.25,
                  "stages": {"validation": 0.01, ..., "other service code": 0.02},
                  "calls": {"validation": 10, ...}}]}
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.stages import Stage

OTHER = "other service code"  # window time outside every stage (the service's own loop)
USAGE = "usage: python -m tools.bench.stages OUT.json -- AGGREGATOR-ARGS"


@dataclass
class _Window:
    """One open round window: its start and the exclusive time per stage so far."""

    round_id: int
    start: float
    seconds: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)


class StageTimer:
    """Exclusive wall time per :class:`Stage`, totalled per round window.

    A :class:`aggregator.stages.StageHook`; ``clock`` returns seconds from any origin
    (``time.perf_counter``; a test passes its own).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.windows: list[dict[str, Any]] = []  # closed windows, in the layout of OUT.json
        self._clock = clock
        self._open: _Window | None = None
        self._children: list[float] = []  # time spent in nested stages, per active stage

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        """Times the block as ``stage``, minus the stages nested in it (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._children.append(0.0)
        start = self._clock()
        try:
            yield
        finally:
            spent = self._clock() - start
            nested = self._children.pop()
            if self._children:
                self._children[-1] += spent
            if self._open is not None:
                seconds = self._open.seconds
                seconds[stage.value] = seconds.get(stage.value, 0.0) + spent - nested
                self._open.calls[stage.value] += 1

    def round_opened(self, round_id: int) -> None:
        """Opens the window of ``round_id`` (a window still open is dropped: not closed)."""
        self._open = _Window(round_id, self._clock())

    def round_closed(self, round_id: int) -> None:
        """Closes the window of ``round_id``; nothing happens for a round with no open window."""
        window = self._open
        if window is None or window.round_id != round_id:
            return
        self._open = None
        seconds = self._clock() - window.start
        stages = dict(window.seconds)
        stages[OTHER] = seconds - sum(stages.values())
        self.windows.append({"round": round_id, "seconds": seconds, "stages": stages,
                             "calls": dict(window.calls)})


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the aggregator with a timer; writes the round windows to the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    out, aggregator_args = Path(args[0]), args[2:]
    timer = StageTimer()
    from aggregator.__main__ import main as aggregator_main

    try:
        return aggregator_main(aggregator_args, stages=timer)
    finally:
        out.write_text(json.dumps({"windows": timer.windows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
