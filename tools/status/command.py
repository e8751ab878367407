"""``fedge status``: who is online, the run, the round and its counts, or "finished".

Reads only retained topics (manifest, round, the aggregator's status, presence), so it
works with any identity allowed to read them (a provisioned device certificate, for
example) and never disturbs the federation. ``--watch`` keeps the subscription and
redraws in place every second; ``--json`` prints one JSON document (once).
"""

from __future__ import annotations

import argparse
import json
import time

from edge_client.errors import ProtocolError
from edge_client.protocol import Manifest, Presence, Round, Status, Topics, is_clear
from edge_client.transport import Transport
from tools import observer
from tools.status.view import Snapshot, as_json, render

QUIET_S = 0.5  # retained messages come in a burst after the subscribe: stop after this lull
CLEAR_SCREEN = "\x1b[H\x1b[2J"

EPILOG = """\
examples:
  fedge status --broker mqtt://127.0.0.1:1883 --federation cardio
  fedge status --broker mqtts://broker:8883 --ca ca.pem --cert dev-1.pem --key dev-1.key \\
      --federation cardio --watch
  fedge status --federation cardio --json > status.json

exit status: 0 when the federation's state was read, 1 when the broker cannot be reached,
2 on a usage error.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``fedge status``."""
    p = sub.add_parser("status", help="a federation's run, round, counts and who is online",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    observer.add_flags(p)
    p.add_argument("--watch", action="store_true", help="keep reading; redraw every second")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the retained messages; default 5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``fedge status``."""
    topics = observer.topics(args)
    transport = observer.connect(args, "status")
    if transport is None:
        return 1
    try:
        snap = collect(transport, topics, args.timeout)
        if args.json:
            print(json.dumps(as_json(snap, time.time()), indent=1, sort_keys=True))
            return 0
        print(render(snap, time.time()), flush=True)
        while args.watch:
            read(transport, topics, snap, until=time.monotonic() + 1.0)
            print(CLEAR_SCREEN + render(snap, time.time()), flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        transport.stop()


def collect(transport: Transport, topics: Topics, timeout: float) -> Snapshot:
    """Subscribes to the retained topics and reads them until a lull (or ``timeout``)."""
    snap = Snapshot(topics.federation)
    for topic_filter in (topics.manifest(), topics.round(), topics.status(),
                         topics.presence_filter()):
        transport.subscribe(topic_filter)
    read(transport, topics, snap, until=time.monotonic() + timeout, quiet=QUIET_S)
    return snap


def read(transport: Transport, topics: Topics, snap: Snapshot, *, until: float,
         quiet: float | None = None) -> None:
    """Folds messages into ``snap`` until ``until`` (or a lull of ``quiet`` seconds)."""
    while (left := until - time.monotonic()) > 0:
        message = transport.get(timeout=min(left, quiet) if quiet else left)
        if message is None:
            if quiet:
                return
            continue
        try:
            _fold(snap, topics, message.topic, message.payload)
        except ProtocolError:
            continue  # not ours to judge here; the aggregator and devices log bad messages


def _fold(snap: Snapshot, topics: Topics, topic: str, payload: bytes) -> None:
    ref = topics.parse(topic)
    if ref.kind == "presence" and ref.client_id is not None:
        if is_clear(payload):
            snap.presence.pop(ref.client_id, None)
        else:
            snap.presence[ref.client_id] = Presence.decode(payload)
    elif ref.kind == "manifest" and not is_clear(payload):
        snap.manifest = Manifest.decode(payload)
    elif ref.kind == "round":
        snap.round = None if is_clear(payload) else Round.decode(payload)
    elif ref.kind == "status" and not is_clear(payload):
        snap.status = Status.decode(payload)
