"""``fedge demo``: federated training on this machine, every participant a real MQTT process.

- :mod:`~tools.demo.config`: :class:`DemoConfig`, the settings of one run.
- :mod:`~tools.demo.command`: the command; :func:`federate` runs a federation and its baselines.
- :mod:`~tools.demo.prepare`: data shares and the model file, before the federation starts.
- :mod:`~tools.demo.data`: the dataset's defaults and its split into one file per client.
- :mod:`~tools.demo.evaluate`: global models, pooled and local-only baselines, via TFLite.
- :mod:`~tools.demo.report`: the JSON result and the printed table.
- :mod:`~tools.demo.plot`: the accuracy/loss PNG.

``fedge bench results`` runs :func:`federate` with its own :class:`DemoConfig`.
"""

from tools.demo.command import add_parser, config_of, federate, run
from tools.demo.config import DemoConfig
from tools.demo.data import PARTITIONS, ClientShare, DemoDefaults, defaults_for
from tools.demo.evaluate import evaluate, local_only, train_alone, weights_of_checkpoint
from tools.demo.plot import plot_rounds
from tools.demo.prepare import Setup, prepare
from tools.demo.report import build_result, print_table

__all__ = [
    "PARTITIONS", "ClientShare", "DemoConfig", "DemoDefaults", "Setup", "add_parser",
    "build_result", "config_of", "defaults_for", "evaluate", "federate", "local_only",
    "plot_rounds", "prepare", "print_table", "run", "train_alone", "weights_of_checkpoint",
]
