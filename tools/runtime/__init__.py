"""The local runtime of the tools: throw-away brokers, child processes, a federation run.

- :mod:`tools.runtime.broker`: Mosquitto on a free loopback port, or the embedded amqtt broker.
- :mod:`tools.runtime.fleet`: child processes (aggregator, clients, workers) that never
  outlive the caller.
- :mod:`tools.runtime.federation`: a broker, the aggregator and N clients until the last round
  (``fedge demo``; ``fedge simulate`` uses its broker choice and error).
"""

from tools.runtime.broker import (
    EmbeddedBroker,
    MosquittoBroker,
    free_port,
    mosquitto_available,
    wait_for_port,
)
from tools.runtime.federation import FederationError, FederationPlan, run_federation, start_broker
from tools.runtime.fleet import Child, Fleet

__all__ = [
    "Child", "EmbeddedBroker", "FederationError", "FederationPlan", "Fleet", "MosquittoBroker",
    "free_port", "mosquitto_available", "run_federation", "start_broker", "wait_for_port",
]
