"""``fedge stats``: the federation's table statistics, added up from the devices' reports.

Every device run with ``--schema`` publishes (retained) the statistics of its table: per
column the count of values and missing cells, sum and sum of squares, min and max, counts
in fixed histogram bins, category counts; never a row, and no column with fewer than its
``--min-count`` values. This command reads them, adds them exactly (the federated mean and
standard deviation are those of all sites' rows pooled) and prints the table, with every
bin or category count below ``--min-count`` suppressed: a cohort feasibility check before
training. ``--schema FILE --out FILE`` writes the schema with the federation's statistics
(fill values of missing = "mean"/"median", shared mean and std: every site then
standardises identically); export the model with that schema. See docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from aggregator.statistics import read_report
from edge_client.errors import ConfigError, ProtocolError
from edge_client.feature_stats import DEFAULT_MIN_COUNT, combine, layout_sha256, shared_schema
from edge_client.protocol import Topics
from edge_client.schema import load_schema, schema_toml
from edge_client.transport import Transport
from tools import observer
from tools.stats.view import Collected, as_json, render

QUIET_S = 0.5  # retained reports come in a burst after the subscribe: stop after this lull

EPILOG = """\
examples:
  fedge stats --broker mqtt://127.0.0.1:1883 --federation cardio
  fedge stats --broker mqtts://broker:8883 --ca ca.pem --cert aggregator.pem \\
      --key aggregator.key --federation cardio --json
  fedge stats --federation cardio --schema schema.toml --out shared.toml

exit status: 0 when the reports were read, 1 when the broker cannot be reached, 2 on a
usage error.
"""


def add_parser(sub: Any) -> None:
    """Registers ``fedge stats``."""
    p = sub.add_parser("stats", help="federated statistics of the devices' tables "
                       "(counts, means, histograms; small cells suppressed)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    observer.add_flags(p, cert_help="client certificate (mutual TLS; the provisioned "
                       "aggregator's may read the reports)")
    p.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT, metavar="N",
                   help="suppress every shown bin or category count below N (and below each "
                   f"site's own threshold); default {DEFAULT_MIN_COUNT}")
    p.add_argument("--schema", type=Path, metavar="TOML", help="add only the reports of this "
                   "schema (default: the layout most sites report)")
    p.add_argument("--out", type=Path, metavar="TOML", help="with --schema: write it with the "
                   "federation's fill values and shared mean/std")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the retained reports; default 5")
    p.set_defaults(func=run)


def collect(transport: Transport, topics: Topics, timeout: float) -> Collected:
    """Subscribes to every device's report and reads them until a lull (or ``timeout``)."""
    found = Collected(topics.federation)
    transport.subscribe(topics.stats_filter())
    until = time.monotonic() + timeout
    while (left := until - time.monotonic()) > 0:
        message = transport.get(timeout=min(left, QUIET_S))
        if message is None:
            break
        try:
            report = read_report(topics, message)
        except ProtocolError as e:
            found.ignored[message.topic.rsplit("/", 1)[-1][:64]] = f"left out: {e}"
            continue
        if report is None:
            continue
        found.reports[report.client_id] = report
    return found


def _same_layout(found: Collected, sha: str | None) -> Collected:
    """Keeps the reports of one schema layout (``sha``, or the commonest)."""
    shas = [r.schema_sha256 for r in found.reports.values()]
    chosen = sha or max(set(shas), key=shas.count, default="")
    kept = Collected(found.federation, ignored=dict(found.ignored))
    for who, report in found.reports.items():
        if report.schema_sha256 == chosen:
            kept.reports[who] = report
        else:
            kept.ignored[who] = "its statistics follow another schema"
    return kept


def run(args: argparse.Namespace) -> int:
    """Runs ``fedge stats``."""
    if args.min_count < 1:
        raise ConfigError("--min-count must be at least 1")
    if args.out is not None and args.schema is None:
        raise ConfigError("--out writes the --schema with the federation's statistics: give "
                          "--schema too")
    schema = None if args.schema is None else load_schema(args.schema)
    topics = observer.topics(args)
    transport = observer.connect(args, "stats")
    if transport is None:
        return 1
    try:
        found = collect(transport, topics, args.timeout)
    finally:
        transport.stop()
    found = _same_layout(found, None if schema is None else layout_sha256(schema))
    min_count = max([args.min_count, *(r.min_count for r in found.reports.values())])
    try:
        columns = combine(r.features for r in found.reports.values())
    except ValueError as e:  # same layout hash, other bins: a report that lies
        raise ProtocolError(f"reports cannot be added: {e}") from None
    if args.json:
        print(json.dumps(as_json(found, columns, min_count), indent=1, sort_keys=True))
    else:
        print(render(found, columns, min_count))
    if args.out is not None and schema is not None:
        args.out.write_text(schema_toml(shared_schema(schema, columns, min_count)))
        print(f"wrote {args.out}: the schema with the federation's statistics",
              file=sys.stderr if args.json else sys.stdout)
    return 0
