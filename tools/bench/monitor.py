"""Watches a federation from outside, for ``fedge bench round``: rounds, global models, floor.

A :class:`Monitor` is one MQTT subscriber (the project's paho adapter, clean session,
automatic QoS 1 acknowledgement). It times a real round from the moment it receives
the aggregator's ``Round`` to the moment it receives the ``Manifest`` of the new global
weights, and it measures the **transport floor**: it publishes a ``Round`` on a second
federation's topic, the simulated devices answer with precomputed chunks of the same
size, and it counts them as their one subscriber until all have arrived. Both times
are taken by this one process, on receipt, with the same clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from edge_client.errors import FedgeError, ProtocolError
from edge_client.protocol import Hyperparameters, Manifest, Round, Topics
from edge_client.transport import BrokerConfig, MqttTransport

FLOOR_SHA = "0" * 64  # the floor's Round names no real model
FLOOR_RUN = "0" * 16  # as long as a real run id, so the floor sends the same bytes


class MonitorError(FedgeError):
    """What the monitor waited for did not come in time."""


@dataclass(frozen=True)
class FloorRun:
    """One transport-floor measurement."""

    seconds: float
    messages: int
    bytes: int


@dataclass(frozen=True)
class RoundRun:
    """One real round, seen from outside."""

    round_id: int
    seconds: float  # Round received → Manifest of the new version received
    announced_at: float  # unix time of the Round's receipt


def _kind(topics: Topics, topic: str) -> str:
    """The kind of ``topic`` in ``topics``' federation, or "" for any other topic."""
    try:
        return topics.parse(topic).kind
    except ProtocolError:
        return ""


class Monitor:
    """See the module docstring; use as a context manager."""

    def __init__(self, url: str, topics: Topics, floor: Topics, mqtt_version: str = "5") -> None:
        self.topics, self.floor_topics = topics, floor
        self._t = MqttTransport(BrokerConfig(url, f"monitor-{topics.federation}",
                                             mqtt_version=mqtt_version, durable=False))

    def __enter__(self) -> Monitor:
        self._t.start(wait=10.0)
        for f in (self.topics.round(), self.topics.manifest(), self.floor_topics.round(),
                  self.floor_topics.update_filter()):
            self._t.subscribe(f)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._t.stop()

    def floor(self, round_id: int, selected: Sequence[str], expected: int,
              timeout: float = 120.0) -> FloorRun:
        """Triggers the devices and times until ``expected`` update chunks have arrived."""
        trigger = Round(federation=self.floor_topics.federation, round_id=round_id,
                        weights_version=0, model_sha256=FLOOR_SHA, deadline=time.time() + 600,
                        hyperparameters=Hyperparameters(epochs=1, batch_size=32,
                                                        learning_rate=0.01),
                        codec="int8", selected=tuple(selected), run_id=FLOOR_RUN)
        self._t.publish(self.floor_topics.round(), trigger.encode(), timeout=None)
        end = time.monotonic() + timeout
        start: float | None = None
        last, count, size = 0.0, 0, 0
        while count < expected:
            message = self._t.get(timeout=max(0.0, end - time.monotonic()))
            now = time.perf_counter()
            if message is None:
                raise MonitorError(f"floor round {round_id}: {count} of {expected} chunks "
                                   f"after {timeout:.0f}s")
            if message.topic == self.floor_topics.round():
                start = now if start is None else start
            elif _kind(self.floor_topics, message.topic) == "update":
                count, size, last = count + 1, size + len(message.payload), now
        if start is None:
            raise MonitorError("the floor trigger never came back")
        return FloorRun(last - start, count, size)

    def rounds(self, count: int, alive: Callable[[], bool], timeout: float) -> list[RoundRun]:
        """Times rounds 1..``count``: Round received → Manifest of that version received.

        Raises:
            MonitorError: ``alive()`` turned false or ``timeout`` passed first.
        """
        announced: dict[int, tuple[float, float]] = {}
        published: dict[int, float] = {}
        end = time.monotonic() + timeout
        while len(published) < count:
            message = self._t.get(timeout=0.5)
            now = time.perf_counter()
            if message is None:
                if not alive() or time.monotonic() > end:
                    raise MonitorError(f"{len(published)} of {count} rounds published")
                continue
            kind = _kind(self.topics, message.topic) if message.payload else ""
            if kind == "round":
                r = Round.decode(message.payload)
                announced.setdefault(r.round_id, (now, time.time()))
            elif kind == "manifest":
                version = Manifest.decode(message.payload).weights_version
                if version in announced:  # round r makes version r (no round is skipped)
                    published.setdefault(version, now)
        return [RoundRun(r, published[r] - announced[r][0], announced[r][1])
                for r in sorted(published)]
