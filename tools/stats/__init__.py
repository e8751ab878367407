"""``fedge stats``: the devices' table statistics from the broker, added up exactly.

- :mod:`~tools.stats.view`: the combined table, JSON, and the shared-scaling schema; pure.
- :mod:`~tools.stats.command`: the command: subscribe, collect, combine, show.
"""

from edge_client.feature_stats import shared_schema
from tools.stats.command import add_parser, collect, run
from tools.stats.view import Collected, as_json, render

__all__ = ["Collected", "add_parser", "as_json", "collect", "render", "run", "shared_schema"]
