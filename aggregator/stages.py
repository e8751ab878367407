"""Stage timing: where a round's wall time goes, as reported by the service itself.

The service wraps each stage of its work in ``with hook.stage(Stage.X):`` and marks the
round window (:meth:`StageHook.round_opened`, :meth:`StageHook.round_closed`). The default
:data:`NO_STAGES` does nothing; ``fedge bench round`` passes a timer (tools/bench) that
totals exclusive wall time per stage and round. A renamed stage is a type error, not a
silently missing measurement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from enum import Enum
from typing import Protocol


class Stage(str, Enum):
    """One kind of work of the service's worker; the value is the label a report shows."""

    WAIT = "wait for messages"
    INTAKE = "chunk decode, reassembly + SHA-256, update decode"
    ADMIT = "checks, round machine, fold into running sum"
    STORE = "store update (fsync)"
    SAVE_STATE = "save round.json (fsync)"
    REPLY = "reply publish (waits PUBACK)"
    AGGREGATE = "aggregate"
    ENCODE = "encode global weights"
    CHECKPOINT = "save checkpoint (fsync)"
    PUBLISH = "publish weights + manifest"
    CLEAR = "clear old weights"
    ANNOUNCE = "publish round"
    HISTORY = "history line (fsync)"


class StageHook(Protocol):
    """What the service reports its stages and round windows to."""

    def stage(self, stage: Stage) -> AbstractContextManager[None]:
        """A context manager around one piece of work of ``stage`` (may nest)."""
        ...

    def round_opened(self, round_id: int) -> None:
        """Round ``round_id`` is being announced (called before its publish)."""
        ...

    def round_closed(self, round_id: int) -> None:
        """Round ``round_id`` was aggregated and its new global model published."""
        ...


class NoStages:
    """The default hook: measures nothing."""

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        """Does nothing."""
        yield

    def round_opened(self, round_id: int) -> None:
        """Does nothing."""

    def round_closed(self, round_id: int) -> None:
        """Does nothing."""


NO_STAGES: StageHook = NoStages()
