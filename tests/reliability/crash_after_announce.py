"""An aggregator process that dies by SIGKILL right after it announced a round.

``python tests/reliability/crash_after_announce.py ROUND AGGREGATOR-FLAGS...``: runs
``fedge-aggregator`` (:func:`aggregator.__main__.main`) with a stage hook that kills the
process with SIGKILL as soon as the publish of round ``ROUND``'s announcement is
acknowledged by the broker: nothing the service does after that publish happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

from aggregator.__main__ import main
from aggregator.stages import Stage


class KillAfterAnnounce:
    """A :class:`~aggregator.stages.StageHook` that SIGKILLs after one round's publish."""

    def __init__(self, round_id: int) -> None:
        self.round_id, self.opened = round_id, 0

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        yield
        if stage is Stage.ANNOUNCE and self.opened == self.round_id:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def round_opened(self, round_id: int) -> None:
        self.opened = round_id

    def round_closed(self, round_id: int) -> None:
        """Nothing to do."""


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], stages=KillAfterAnnounce(int(sys.argv[1]))))
