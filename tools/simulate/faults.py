"""Faults of simulated devices, drawn reproducibly per device and round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faults:
    """Per device and round probabilities of each fault (all 0: a well-behaved fleet)."""

    dropout: float = 0.0
    slow: float = 0.0
    slow_delay: float = 5.0
    crash_mid_upload: float = 0.0
    duplicate_sends: float = 0.0

    def draw(self, seed: int, device: int, round_id: int) -> Plan:
        """What ``device`` does in ``round_id``: reproducible from the three numbers."""
        u = np.random.default_rng([seed, device, round_id]).random(4)
        dropout = bool(u[0] < self.dropout)
        crash = not dropout and bool(u[1] < self.crash_mid_upload)
        slow = not dropout and bool(u[2] < self.slow)
        return Plan(dropout=dropout, crash=crash, delay=self.slow_delay if slow else 0.0,
                    duplicate=not (dropout or crash) and bool(u[3] < self.duplicate_sends))


@dataclass(frozen=True)
class Plan:
    """A device's behaviour in one round."""

    dropout: bool
    crash: bool
    delay: float
    duplicate: bool
