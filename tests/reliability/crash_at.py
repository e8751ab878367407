"""An aggregator process that dies by SIGKILL right after one stage of one round.

``python tests/reliability/crash_at.py STAGE ROUND AGGREGATOR-FLAGS...``: runs
``fedge-aggregator`` (:func:`aggregator.__main__.main`) with a stage hook that kills the
process with SIGKILL as soon as the work of ``STAGE`` (a :class:`~aggregator.stages.Stage`
name, e.g. ``ANNOUNCE``: the round's publish acknowledged by the broker; ``AGGREGATE``:
the round's delta computed, clipped and, with DP, spent in the ledger and noised) ends
in round ``ROUND``: nothing the service does after it happens. No test hook lives in the
service itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

from aggregator.__main__ import main
from aggregator.stages import Stage


class KillAfter:
    """A :class:`~aggregator.stages.StageHook` that SIGKILLs after one stage of one round."""

    def __init__(self, stage: Stage, round_id: int) -> None:
        self.target, self.round_id, self.opened = stage, round_id, 0

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        yield
        if stage is self.target and self.opened == self.round_id:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def round_opened(self, round_id: int) -> None:
        self.opened = round_id

    def round_closed(self, round_id: int) -> None:
        """Nothing to do."""


if __name__ == "__main__":
    sys.exit(main(sys.argv[3:], stages=KillAfter(Stage[sys.argv[1]], int(sys.argv[2]))))
