"""The history of a run: one ``history.jsonl`` line per closed round, and its reader.

:class:`OpenRound` counts the traffic and timing of the round in progress (owned by
:class:`aggregator.round.Round`) and makes its line when it closes; :func:`read_history`
reads the lines back, for the service's recovery and for the tools.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"


@dataclass
class OpenRound:
    """Traffic and timing of the round in progress, for its history line.

    Counted since this process started the round (or restored it after a crash).
    """

    round_id: int
    selected: tuple[str, ...]
    started: float
    bytes_in: int = 0
    bytes_out: int = 0
    rejections: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(self, summary: Mapping[str, Any], outcome: str, version: int,
               now: float) -> dict[str, Any]:
        """The ``history.jsonl`` line of this round closing with ``outcome`` at ``now``.

        Args:
            summary: participants, samples and mean metrics of the accepted updates.
            outcome: ``aggregated`` or ``skipped``.
            version: the global weights version after the round.
            now: unix time of the close.
        """
        return {
            "round": self.round_id, "outcome": outcome, "version": version,
            **summary, "selected": list(self.selected), "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "rejections": dict(sorted(self.rejections.items())),
            "duration_s": round(max(0.0, now - self.started), 3), "closed_at": round(now, 3),
        }


def read_history(state_dir: Path) -> list[dict[str, Any]]:
    """The ``history.jsonl`` records of a state dir, oldest first (read-only; [] if none yet)."""
    p = Path(state_dir) / HISTORY_FILE
    if not p.exists():
        return []
    records = []
    for line in p.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a crash mid-append
    return records
