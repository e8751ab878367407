"""The accepted updates of one round: their aggregate so far and what history records.

A :class:`RoundLedger` folds each accepted update into the strategy's accumulator
as it arrives (memory O(model) for the weighted means), and remembers per client
the nonce (to answer a re-sent update), the sample count and the metrics.
Folding the same updates in the same order gives bit-identical sums, which is
how a restart reproduces an uninterrupted run exactly (see :mod:`aggregator.store`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.fedavg import Accumulator, Strategy
from aggregator.validation import ReceivedUpdate
from edge_client.errors import ValidationError


class RoundLedger:
    """What round ``round_id`` has accepted so far."""

    def __init__(self, round_id: int, strategy: Strategy) -> None:
        """An empty ledger for ``round_id`` aggregating with ``strategy``."""
        self.round_id = round_id
        self._accumulator: Accumulator = strategy.accumulator()
        self._nonces: dict[str, str] = {}
        self._samples: dict[str, int] = {}
        self._metric_sums: dict[str, float] = {}
        self._metric_weights: dict[str, float] = {}

    def fold(self, update: ReceivedUpdate) -> None:
        """Add one accepted update.

        Raises:
            ValidationError: the update belongs to another round, or its client is
                already in the ledger.
        """
        if update.round_id != self.round_id or update.client_id in self._nonces:
            raise ValidationError(f"ledger of round {self.round_id} cannot take round "
                                  f"{update.round_id} from {update.client_id!r} (again)")
        self._accumulator.add(update.delta, update.num_samples)
        self._nonces[update.client_id] = update.nonce
        self._samples[update.client_id] = update.num_samples
        for name, value in update.metrics.items():
            self._metric_sums[name] = self._metric_sums.get(name, 0.0) + value * update.num_samples
            self._metric_weights[name] = self._metric_weights.get(name, 0.0) + update.num_samples

    def nonce_of(self, client_id: str) -> str | None:
        """The nonce (hex) of ``client_id``'s accepted update, or None."""
        return self._nonces.get(client_id)

    @property
    def participants(self) -> tuple[str, ...]:
        """Clients folded in, sorted."""
        return tuple(sorted(self._nonces))

    @property
    def samples(self) -> int:
        """Training examples behind the folded updates (as claimed, before any cap)."""
        return sum(self._samples.values())

    def metrics(self) -> dict[str, float]:
        """Each client metric averaged over the updates reporting it, weighted by num_samples."""
        return {name: self._metric_sums[name] / self._metric_weights[name]
                for name in sorted(self._metric_sums)}

    def delta(self) -> Mapping[str, npt.NDArray[np.float64]]:
        """The aggregated delta of the folded updates.

        Raises:
            ValidationError: nothing was folded.
        """
        return self._accumulator.result()

    def summary(self) -> dict[str, Any]:
        """Participants, samples and mean metrics, as a history line records them."""
        return {"participants": list(self.participants), "samples": self.samples,
                "metrics": self.metrics()}


@dataclass
class OpenRound:
    """Traffic and timing of the round in progress, for its history line.

    Counted since this process started the round (or restored it after a crash).
    """

    round_id: int
    selected: tuple[str, ...]
    started: float
    bytes_out_at_start: int = 0
    bytes_in: int = 0
    rejections: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(self, ledger: RoundLedger, outcome: str, version: int, bytes_out: int,
               now: float) -> dict[str, Any]:
        """The ``history.jsonl`` line of this round closing with ``outcome`` at ``now``.

        Args:
            ledger: the round's accepted updates.
            outcome: ``aggregated`` or ``skipped``.
            version: the global weights version after the round.
            bytes_out: the publisher's byte count now.
            now: unix time of the close.
        """
        return {
            "round": self.round_id, "outcome": outcome, "version": version,
            **ledger.summary(), "selected": list(self.selected), "bytes_in": self.bytes_in,
            "bytes_out": bytes_out - self.bytes_out_at_start,
            "rejections": dict(sorted(self.rejections.items())),
            "duration_s": round(max(0.0, now - self.started), 3), "closed_at": round(now, 3),
        }
