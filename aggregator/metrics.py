"""Prometheus metrics of the aggregator (the only module that imports prometheus-client).

Every metric lives in the service's own :class:`~prometheus_client.CollectorRegistry`,
so several services (e.g. in tests) never collide; :meth:`ServiceMetrics.serve`
exposes it on ``--metrics-port``. Names and meanings are listed in docs/aggregator.md.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

log = logging.getLogger(__name__)

_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class ServiceMetrics:
    """The aggregator's gauges, counters and histogram."""

    def __init__(self) -> None:
        """Create every metric in a fresh registry."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.round = Gauge("fedge_round", "Current round id (open, or the latest closed one)",
                           registry=r)
        self.weights_version = Gauge("fedge_weights_version", "Version of the global weights",
                                     registry=r)
        self.participants = Gauge("fedge_round_participants",
                                  "Updates accepted in the current round", registry=r)
        self.samples = Gauge("fedge_round_samples",
                             "Training examples behind the updates accepted in the current round",
                             registry=r)
        self.online = Gauge("fedge_clients_online", "Clients whose presence says online",
                            registry=r)
        self.dp_epsilon = Gauge("fedge_dp_epsilon", "Privacy budget spent: epsilon of the "
                                "run's noised rounds at its --dp-delta (0 without DP)",
                                registry=r)
        self.accepted = Counter("fedge_updates_accepted", "Updates accepted", registry=r)
        self.rejected = Counter("fedge_updates_rejected", "Updates (or chunks) rejected, by reason",
                                ["reason"], registry=r)
        self.evicted = Counter("fedge_transfers_evicted",
                               "Incomplete update transfers dropped to make room for another "
                               "(a flood of partial transfers?)", registry=r)
        self.invalid = Counter("fedge_invalid_messages",
                               "Unusable non-update messages (e.g. presence), by topic kind",
                               ["kind"], registry=r)
        self.bytes_in = Counter("fedge_received_bytes", "Payload bytes received", registry=r)
        self.bytes_out = Counter("fedge_sent_bytes", "Payload bytes published", registry=r)
        self.rounds = Counter("fedge_rounds_closed", "Rounds closed, by outcome", ["outcome"],
                              registry=r)
        self.round_duration = Histogram("fedge_round_duration_seconds",
                                        "Seconds from a round's announcement to its close",
                                        buckets=_DURATION_BUCKETS, registry=r)
        self._server: Any = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``host:port`` (a daemon thread); 0 does nothing."""
        if port == 0:
            return
        self._server = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        """Stop the HTTP endpoint, if any."""
        server = self._server
        self._server = None
        if isinstance(server, tuple):  # prometheus-client >= 0.17: (server, thread)
            server[0].shutdown()
            server[0].server_close()

    def text(self) -> str:
        """The exposition text, as an HTTP scrape would return it."""
        return generate_latest(self.registry).decode()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (0 if it was never set), e.g. for tests."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else float(found)
