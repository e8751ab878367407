"""The ``fedge`` command and what its sub-commands share; one package per command.

- :mod:`tools.cli`: the entry point, :func:`main`; ``python -m tools`` is the same.
- :mod:`tools.demo`: ``fedge demo``, a federation on this machine with its baselines.
- :mod:`tools.simulate`: ``fedge simulate``, a fleet of simulated devices with faults.
- :mod:`tools.bench`: ``fedge bench``, every figure next to its reference.
- :mod:`tools.provision`: ``fedge provision``, keys, certificates and a broker config.
- :mod:`tools.export`: ``fedge export``, a trainable ``.tflite`` from the model zoo or an
  aggregator state dir's weights, and int8 inference models.
- :mod:`tools.evaluate`: ``fedge evaluate`` and ``fedge predict``, the final model on new data.
- :mod:`tools.status`: ``fedge status``, a federation's state from the retained topics.
- :mod:`tools.state`: reads an aggregator's state dir (its model file, any version's weights).
- :mod:`tools.extras`: which pip extra a command needs, said before it starts.
- :mod:`tools.reliability`: ``fedge reliability-report``, docs/reliability.md.
- :mod:`tools.runtime`: the local runtime: throw-away brokers, child processes, a
  federation run.
- :mod:`tools.datasets`: offline datasets and partitioners.
"""

from tools.cli import COMMANDS, main

__all__ = ["COMMANDS", "main"]
