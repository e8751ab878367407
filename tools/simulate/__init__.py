"""``fedge simulate``: a fleet of simulated devices with faults against the real aggregator.

- :mod:`~tools.simulate.command`: the command (flags, broker, devices, aggregator, report).
- :mod:`~tools.simulate.device`: one simulated device on the real wire protocol.
- :mod:`~tools.simulate.faults`: faults drawn reproducibly per device and round.
- :mod:`~tools.simulate.pool`: the coordinator's side: worker processes and their events.
- :mod:`~tools.simulate.spec`: what a worker runs, as JSON (shared by both sides).
- :mod:`~tools.simulate.worker`: the worker process, ``python -m tools.simulate.worker``
  (not imported here, so that ``-m`` runs it once).
- :mod:`~tools.simulate.report`: per-round rows joining the aggregator's history with the
  devices' events.

``fedge bench round`` uses the same devices for its transport floor.
"""

from tools.simulate.command import add_parser, run
from tools.simulate.device import DeviceSpec, Link, SimDevice, UpdateSource, update_chunks
from tools.simulate.faults import Faults, Plan
from tools.simulate.pool import DevicePool, default_processes, fleet_devices
from tools.simulate.report import format_row, rows_of, summary
from tools.simulate.spec import WorkerSpec

__all__ = [
    "DevicePool", "DeviceSpec", "Faults", "Link", "Plan", "SimDevice", "UpdateSource",
    "WorkerSpec", "add_parser", "default_processes", "fleet_devices", "format_row", "rows_of",
    "run", "summary", "update_chunks",
]
