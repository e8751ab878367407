"""``fedge bench``: every figure measured side by side with its reference, in one run.

- :mod:`~tools.bench.command`: the command; :data:`SECTIONS` names each section's module,
  which has ``run(quick) -> dict`` and ``render(result) -> str``.
- sections: :mod:`~tools.bench.train`, :mod:`~tools.bench.codec`,
  :mod:`~tools.bench.aggregate`, :mod:`~tools.bench.client`, :mod:`~tools.bench.round`
  (with :mod:`~tools.bench.monitor`, the round's outside observer, and
  :mod:`~tools.bench.stages`, the aggregator's stage timer), :mod:`~tools.bench.results`,
  :mod:`~tools.bench.privacy` (on-device DP-SGD, accuracy against ε).
- :mod:`~tools.bench.report`: the machine line and the sections of ``docs/results.md``.

The sections are imported by name when they run; ``tools.bench.aggregate`` and
``tools.bench.stages`` also run as ``python -m``, so nothing here imports them.
"""

from tools.bench.command import NOT_IN_ALL, SECTIONS, add_parser, run
from tools.bench.report import machine_description, update_results

__all__ = ["NOT_IN_ALL", "SECTIONS", "add_parser", "machine_description", "run",
           "update_results"]
