"""The coordinator's side of simulated devices: worker processes and their event logs.

:class:`DevicePool` splits the devices over a few ``tools.simulate.worker`` processes
(started through :class:`~tools.runtime.fleet.Fleet`, so none outlives the caller), waits until
each reports ``ready``, and reads the JSON-line events the devices write.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tools.runtime.federation import FederationError
from tools.runtime.fleet import Child, Fleet
from tools.simulate.spec import WorkerSpec

MIN_SAMPLES, MAX_SAMPLES = 20, 200


def fleet_devices(count: int, seed: int) -> list[tuple[str, int, int]]:
    """(client id, index, samples) of ``count`` devices; sample counts drawn from ``seed``."""
    samples = np.random.default_rng(seed).integers(MIN_SAMPLES, MAX_SAMPLES, count)
    return [(f"sim-{i:04d}", i, int(samples[i])) for i in range(count)]


def default_processes(devices: int) -> int:
    """Worker processes for ``devices`` devices: one per 250, at most 8."""
    return max(1, min(8, math.ceil(devices / 250)))


class EventTail:
    """Reads the complete JSON lines appended to some files since the last read."""

    def __init__(self, paths: list[Path]) -> None:
        self._offsets = {p: 0 for p in paths}

    def read(self) -> list[dict[str, Any]]:
        """New events from every file, file by file."""
        events: list[dict[str, Any]] = []
        for path, offset in self._offsets.items():
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line being written is read next time
            self._offsets[path] = offset + end
            events += [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return events


class DevicePool:
    """Simulated devices in worker processes; see the module docstring."""

    def __init__(self, fleet: Fleet, work_dir: Path) -> None:
        self.fleet, self.work_dir = fleet, work_dir
        self.workers: list[Child] = []
        self.events: list[dict[str, Any]] = []  # everything read so far
        self._tail = EventTail([])

    def start(self, template: WorkerSpec, processes: int) -> None:
        """Starts ``processes`` workers sharing ``template.devices`` in contiguous blocks."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        devices = template.devices
        size = math.ceil(len(devices) / max(1, processes))
        paths: list[Path] = []
        for i in range(0, len(devices), size):
            n = len(paths)
            events = self.work_dir / f"events-{n}.jsonl"
            events.unlink(missing_ok=True)
            spec = dataclasses.replace(template, devices=devices[i:i + size], events=str(events))
            spec_path = self.work_dir / f"worker-{n}.json"
            spec_path.write_text(spec.to_json())
            self.workers.append(self.fleet.start(f"worker-{n}", "tools.simulate.worker",
                                                 [str(spec_path)]))
            paths.append(events)
        self._tail = EventTail(paths)

    def poll(self) -> list[dict[str, Any]]:
        """Events written since the last call (also kept in :attr:`events`).

        Raises:
            FederationError: a worker exited with an error.
        """
        new = self._tail.read()
        self.events += new
        dead = [w for w in self.workers if w.proc.poll() not in (None, 0)]
        if dead:
            raise FederationError(f"{dead[0].name} failed:\n{dead[0].tail()}")
        return new

    def wait_ready(self, timeout: float) -> None:
        """Blocks until every worker reported ``ready``.

        Raises:
            FederationError: a worker failed, or not all were ready within ``timeout``.
        """
        end = time.monotonic() + timeout
        while sum(e["event"] == "ready" for e in self.events) < len(self.workers):
            self.poll()
            if time.monotonic() > end:
                raise FederationError(f"devices not connected after {timeout:.0f}s; "
                                      f"{self.workers[0].name}:\n{self.workers[0].tail()}")
            time.sleep(0.05)  # polling files the workers append to

    def stop(self) -> None:
        """Stops every worker (devices say goodbye) and reads their last events."""
        for worker in self.workers:
            self.fleet.stop(worker, timeout=30.0)
        self.events += self._tail.read()
