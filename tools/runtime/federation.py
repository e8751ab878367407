"""Runs one federation on this machine: a broker, the aggregator and N clients as processes.

Shared by ``fedge demo`` and ``fedge simulate``. Every participant is a separate
process talking real MQTT; :func:`run_federation` watches the aggregator's
``history.jsonl`` to report rounds as they close, and stops everything on exit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.history import read_history
from edge_client.errors import FedgeError
from tools.runtime.broker import EmbeddedBroker, MosquittoBroker, mosquitto_available
from tools.runtime.fleet import Child, Fleet

log = logging.getLogger(__name__)


class FederationError(FedgeError):
    """A participant failed; the message carries the end of its log."""


@dataclass(frozen=True)
class FederationPlan:
    """What to run: the aggregator's flags and one flag list per client."""

    out: Path
    federation: str
    model: Path
    aggregator_args: tuple[str, ...]
    client_args: tuple[tuple[str, ...], ...]
    broker: str | None = None  # an external broker URL; None starts one here
    embedded: bool = False  # the in-process amqtt broker even when mosquitto is installed
    timeout: float = 600.0


def start_broker(stack: ExitStack, external: str | None, embedded: bool = False
                 ) -> tuple[str, str]:
    """Returns (url, MQTT version): the external broker, Mosquitto, or embedded amqtt."""
    if external:
        return external, "5"
    if mosquitto_available() and not embedded:
        broker = stack.enter_context(MosquittoBroker())
        log.info("broker: mosquitto on %s", broker.url)
        return broker.url, "5"
    amqtt = stack.enter_context(EmbeddedBroker())
    log.info("broker: embedded amqtt on %s (MQTT 3.1.1; install mosquitto for MQTT 5)",
             amqtt.url)
    return amqtt.url, "3.1.1"


def run_federation(plan: FederationPlan,
                   on_round: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Runs the plan until the aggregator finishes; calls ``on_round`` per history line.

    Raises:
        FederationError: the aggregator failed, every client failed, or the timeout passed.
    """
    state = plan.out / "aggregator"
    with ExitStack() as stack:
        url, version = start_broker(stack, plan.broker, plan.embedded)
        fleet = stack.enter_context(Fleet(plan.out / "logs"))
        common = ["--broker", url, "--federation", plan.federation, "--mqtt-version", version]
        agg = fleet.start("aggregator", "aggregator",
                          [*common, "--model", str(plan.model), "--state-dir", str(state),
                           *plan.aggregator_args])
        clients = [fleet.start(f"client-{i}", "edge_client", [*common, *args])
                   for i, args in enumerate(plan.client_args)]
        seen = 0
        for row in _follow(state, agg, clients, plan.timeout):
            seen += 1
            on_round(row)
        log.info("aggregator finished after %d rounds", seen)
        return read_history(state)


def _follow(state: Path, agg: Child, clients: list[Child], timeout: float
            ) -> Iterator[dict[str, Any]]:
    deadline, seen = time.monotonic() + timeout, 0
    while True:
        rows = read_history(state)
        yield from rows[seen:]
        seen = len(rows)
        code = agg.proc.poll()
        if code is not None:
            if code != 0:
                raise FederationError(f"the aggregator exited with {code}:\n{agg.tail()}")
            yield from read_history(state)[seen:]
            return
        dead = [c for c in clients if c.proc.poll() not in (None, 0)]
        if clients and len(dead) == len(clients):
            raise FederationError(f"every client failed; {dead[0].name}:\n{dead[0].tail()}")
        if time.monotonic() > deadline:
            raise FederationError(f"no result after {timeout:.0f}s; aggregator log:\n"
                                  f"{agg.tail()}")
        time.sleep(0.2)
