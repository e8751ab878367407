"""The statistics phase: before round 1, the federation's statistics go into the model.

When the model's schema asks for shared scaling (``scaling = "shared"``) and has no shared
statistics yet, the aggregator reads the devices' retained statistics reports
(``stats/{client_id}``, the ones ``fedge stats`` reads), waits until ``--min-clients`` sites
of the schema's layout have reported, adds them exactly
(:func:`edge_client.feature_stats.combine`) and writes the schema with the federation's
fill values, mean/std and class counts into the model file's metadata
(:func:`edge_client.model.with_schema`). That file is what the run trains and publishes; a
device that receives it re-reads its table onto it, so every site imputes and standardises
identically without a manual ``fedge stats --out`` and re-export. The file is kept in the
state directory (``statistics/model.tflite``), so a restart trains the same model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from edge_client.errors import ProtocolError
from edge_client.feature_stats import DEFAULT_MIN_COUNT, combine, layout_sha256, shared_schema
from edge_client.model import with_schema
from edge_client.protocol import StatsReport, Topics, is_clear
from edge_client.schema import Schema
from edge_client.transport import Message, Transport

log = logging.getLogger(__name__)
STATISTICS_DIR, STATISTICS_MODEL = "statistics", "model.tflite"
POLL_S = 1.0


def needs_statistics(schema: Schema | None) -> bool:
    """The schema asks for shared scaling and does not have it yet."""
    return schema is not None and schema.scaling == "shared" and not schema.shared_scaling


def read_report(topics: Topics, message: Message) -> StatsReport | None:
    """The statistics report in ``message``; None when it is no report (another topic, or a
    cleared one).

    Raises:
        ProtocolError: an unreadable report, or one naming another client than its topic.
    """
    ref = topics.parse(message.topic)
    if ref.kind != "stats" or ref.client_id is None or is_clear(message.payload):
        return None
    report = StatsReport.decode(message.payload)
    if report.client_id != ref.client_id:
        raise ProtocolError(f"the report on {message.topic} names another client "
                            f"{report.client_id!r}")
    return report


def collect_reports(transport: Transport, topics: Topics, schema: Schema, wanted: int,
                    stop: threading.Event, clock: Callable[[], float] = time.monotonic
                    ) -> dict[str, StatsReport]:
    """The reports of ``schema``'s layout, by client id, once ``wanted`` sites sent one (or
    what came when ``stop`` is set). A report of another layout or one naming another
    client than its topic is logged and left out."""
    layout = layout_sha256(schema)
    reports: dict[str, StatsReport] = {}
    transport.subscribe(topics.stats_filter())
    said = clock()
    while len(reports) < wanted and not stop.is_set():
        message = transport.get(timeout=POLL_S)
        if message is None:
            if clock() - said >= 30:
                log.info("statistics phase: %d of %d sites reported", len(reports), wanted)
                said = clock()
            continue
        try:
            report = read_report(topics, message)
        except ProtocolError as e:
            log.warning("statistics phase: report on %s left out: %s", message.topic, e)
            continue
        if report is None:
            continue
        if report.schema_sha256 != layout:
            log.warning("statistics phase: %s reports another schema's layout; left out",
                        report.client_id)
            continue
        reports[report.client_id] = report
        log.info("statistics phase: %s reported %d rows", report.client_id, report.rows)
    return reports


def shared_model(data: bytes, schema: Schema, reports: dict[str, StatsReport]) -> bytes:
    """The model file with ``schema`` holding the reports' combined statistics.

    Raises:
        ProtocolError: the reports cannot be added (same layout hash, other bins).
        ModelError: the model file cannot carry the schema.
    """
    try:
        columns = combine(r.features for r in reports.values())
    except ValueError as e:
        raise ProtocolError(f"statistics reports cannot be added: {e}") from None
    min_count = max([DEFAULT_MIN_COUNT, *(r.min_count for r in reports.values())])
    shared = dataclasses.replace(shared_schema(schema, columns, min_count), scaling="shared")
    return with_schema(data, shared)
