"""``fedge status``: a federation's state, read from the broker's retained topics.

- :mod:`~tools.status.view`: the snapshot of the retained messages and how it is shown
  (terminal text or JSON); pure.
- :mod:`~tools.status.command`: the command: subscribe, collect, show, ``--watch``.
"""

from tools.status.command import add_parser, collect, run
from tools.status.view import Snapshot, as_json, render

__all__ = ["Snapshot", "add_parser", "as_json", "collect", "render", "run"]
