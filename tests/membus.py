"""An in-memory MQTT stand-in for unit tests of pure logic (never the proof the system works).

:class:`MemoryBroker` keeps retained messages and delivers to every
:class:`MemoryTransport` whose filters match, with MQTT wildcard rules. It
implements the same :class:`edge_client.transport.Transport` port as the real
transport, and records every publish so tests can inspect what left a device.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from edge_client.transport import Message


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching with ``+`` (one level) and ``#`` (the rest)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return True
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


@dataclass
class MemoryBroker:
    """Retained store + subscribers; ``published`` logs (client_id, topic, payload, retain)."""

    retained: dict[str, bytes] = field(default_factory=dict)
    published: list[tuple[str, str, bytes, bool]] = field(default_factory=list)
    _subs: list[MemoryTransport] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, client_id: str) -> MemoryTransport:
        """A new transport attached to this broker."""
        t = MemoryTransport(self, client_id)
        with self._lock:
            self._subs.append(t)
        return t

    def route(self, sender: str, topic: str, payload: bytes, retain: bool) -> None:
        """Stores retained payloads and delivers to every matching subscriber."""
        with self._lock:
            self.published.append((sender, topic, payload, retain))
            if retain:
                if payload:
                    self.retained[topic] = payload
                else:
                    self.retained.pop(topic, None)
            subs = list(self._subs)
        for s in subs:
            s.deliver(topic, payload, retain=False)


class MemoryTransport:
    """One client's end of a :class:`MemoryBroker` (implements the Transport port)."""

    def __init__(self, broker: MemoryBroker, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self.filters: list[str] = []
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._mid = 0

    def deliver(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Queues a message if one of our filters matches."""
        if any(topic_matches(f, topic) for f in self.filters):
            self._mid += 1
            self._inbox.put(Message(topic, payload, 1, retain, self._mid))

    def subscribe(self, topic_filter: str, qos: int = 1, *, wait: float | None = None) -> None:
        """Subscribes and receives matching retained messages, as a broker would."""
        self.filters.append(topic_filter)
        for topic, payload in sorted(self.broker.retained.items()):
            if topic_matches(topic_filter, topic):
                self._mid += 1
                self._inbox.put(Message(topic, payload, 1, True, self._mid))

    def unsubscribe(self, topic_filter: str) -> None:
        """Stops receiving ``topic_filter``."""
        if topic_filter in self.filters:
            self.filters.remove(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = 30.0) -> None:
        """Routes through the broker."""
        self.broker.route(self.client_id, topic, payload, retain)

    def get(self, timeout: float | None) -> Message | None:
        """The next message, or None after ``timeout``."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack(self, message: Message) -> None:
        """Nothing to acknowledge in memory."""
