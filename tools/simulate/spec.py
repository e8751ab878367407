"""What one simulated-device worker process runs, as the coordinator writes it (JSON).

The coordinator (:class:`~tools.simulate.pool.DevicePool`) writes one spec per worker and
starts ``python -m tools.simulate.worker SPEC.json``, which reads it back; this module is
what both sides share, so neither imports the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tools.simulate.device import RESEND_AFTER_S
from tools.simulate.faults import Faults


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs (written as JSON by the coordinator)."""

    broker: str
    federation: str
    devices: list[tuple[str, int, int]]  # (client id, index, samples)
    shapes: dict[str, tuple[int, ...]]
    events: str
    mqtt_version: str = "5"
    prefix: str = "fedge"
    floor_federation: str | None = None
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    max_payload: int = 128 * 1024
    resend_after: float = RESEND_AFTER_S
    # --train: devices train on their shard of this dataset (split over fleet_size devices)
    # with this model file; None: precomputed random deltas
    dataset: str | None = None
    model_file: str | None = None
    fleet_size: int = 0

    def to_json(self) -> str:
        """The spec as JSON."""
        data = dict(self.__dict__, faults=self.faults.__dict__)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """Parses :meth:`to_json` output."""
        data: dict[str, Any] = json.loads(text)
        data["faults"] = Faults(**data["faults"])
        data["devices"] = [tuple(d) for d in data["devices"]]
        data["shapes"] = {k: tuple(v) for k, v in data["shapes"].items()}
        return cls(**data)
