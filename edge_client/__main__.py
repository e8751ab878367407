"""``fedge-client`` (``python -m edge_client``): join a federation and train on local data."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from edge_client.config import ClientConfig, build_config
from edge_client.errors import FedgeError
from edge_client.protocol import ID_RULE

log = logging.getLogger("edge_client")

EPILOG = """\
environment:
  FEDGE_PASSWORD      the MQTT password (never put it in a flag or the config file)

examples:
  fedge-client --federation cardio --data visits.csv --label-column outcome \\
      --state-dir /var/lib/fedge
  fedge-client --config /etc/fedge/client.toml --once
  fedge-client --broker mqtts://broker:8883 --ca ca.pem --cert device.pem \\
      --key device.key --verify-key signing.pub --client-id dev-1 \\
      --data wrist.csv --window 100 --stride 50 --label-column activity

A broker that is not on loopback needs --verify-key (or --insecure): see docs/security.md.

exit status: 0 when done (--once / --max-rounds / the run finished), 2 on a configuration
or data error (also: --state-dir in use by another fedge-client), 130 on Ctrl-C.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``fedge-client`` argument parser; every flag defaults to None so TOML can fill in."""
    d = ClientConfig()
    p = argparse.ArgumentParser(
        prog="fedge-client", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file with any of the "
                   "options below (keys as the flags, optionally under [client]); flags win")
    g = p.add_argument_group("federation")
    g.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port "
                   f"(TLS); default {d.broker}")
    g.add_argument("--federation", metavar="NAME",
                   help=f"federation name (topic namespace); default {d.federation}")
    g.add_argument("--prefix", metavar="PREFIX", help=f"topic prefix; default {d.prefix}")
    g.add_argument("--client-id", metavar="ID", help=f"this device's id ({ID_RULE}); "
                   "default: generated once and kept in the state dir")
    g.add_argument("--mqtt-version", choices=["5", "3.1.1"], help="MQTT protocol; default 5")
    g.add_argument("--once", action="store_true", default=None,
                   help="take part in one round, then exit 0")
    g.add_argument("--max-rounds", type=int, metavar="N",
                   help="exit 0 once the aggregator has accepted this device's update in N "
                   "rounds (a rejected update does not count); the client exits 0 anyway "
                   "when the run finishes, after saving the final model")
    g.add_argument("--resume-session", action="store_true", default=None,
                   help="resume the broker session an earlier process of this device left, "
                   "with what the broker queued in it (default: start it fresh, so nothing "
                   "queued for an earlier run reaches this one; the session is durable "
                   "while the process runs)")
    g.add_argument("--max-payload", type=int, metavar="BYTES", help="largest MQTT payload in "
                   f"bytes; bigger updates are chunked; default {d.max_payload}")
    g = p.add_argument_group("local data (never leaves the device)")
    g.add_argument("--data", type=Path, metavar="FILE", help="a .csv (with --label-column), "
                   "an .npz with x and y, or a time-series .csv of sensor channels "
                   "(with --window)")
    g.add_argument("--schema", type=Path, metavar="FILE", help="the federation's data schema: "
                   "a TOML (`fedge schema infer`) or the model file that carries it "
                   "(.tflite): --data (a CSV) is read onto it by column name, "
                   "missing cells imputed and categories one-hot encoded as it says, and "
                   "standardised with its shared statistics when it has them (docs/data.md); "
                   "replaces --label-column, --features and --window")
    g.add_argument("--min-count", type=int, metavar="N", help="with --schema: the statistics "
                   "report for `fedge stats` leaves out every column with fewer than N values "
                   f"(small-cell suppression); default {d.min_count}")
    g.add_argument("--no-stats", dest="stats", action="store_false", default=None,
                   help="with --schema: do not publish the table's statistics (counts, sums, "
                   "histograms; never rows) for `fedge stats` (default: publish, retained)")
    g.add_argument("--label-column", metavar="COLUMN", help="CSV column holding the label")
    g.add_argument("--features", metavar="COLUMNS",
                   help="comma-separated feature columns (default: all others)")
    g.add_argument("--window", type=int, metavar="ROWS",
                   help="time-series CSV: window length in rows")
    g.add_argument("--stride", type=int, metavar="ROWS", help="time-series CSV: step between "
                   "windows (default: the window length)")
    g.add_argument("--no-normalise", dest="normalise", action="store_false", default=None,
                   help="train on raw feature values (default: standardise each feature "
                   "with statistics computed on this device)")
    g.add_argument("--group-column", metavar="COLUMN", help="time-series CSV: windows never "
                   "span two values of this column (e.g. session)")
    g.add_argument("--eval-data", type=Path, metavar="FILE", help="a labelled test file of "
                   "this site (same columns as --data, scaled the same): every round, the "
                   "global model the round starts from is scored on it and only counts are "
                   "sent (confusion counts at fixed thresholds), which the aggregator adds "
                   "into a federated accuracy and ROC AUC over every site's test data")
    g.add_argument("--holdout", type=float, metavar="F", help="share of the local samples "
                   "held out to evaluate on (never trained on), in [0, 0.9]; 0 trains on "
                   f"all; default {d.holdout:g}")
    g = p.add_argument_group("security")
    g.add_argument("--ca", type=Path, metavar="PEM",
                   help="CA certificate (PEM) to verify the broker")
    g.add_argument("--cert", type=Path, metavar="PEM",
                   help="this device's certificate (PEM), for mTLS")
    g.add_argument("--key", type=Path, metavar="PEM",
                   help="this device's private key (PEM), for mTLS")
    g.add_argument("--username", metavar="NAME",
                   help="MQTT username (password from FEDGE_PASSWORD)")
    g.add_argument("--password-file", type=Path, metavar="FILE",
                   help="read the MQTT password from this file")
    g.add_argument("--verify-key", type=Path, metavar="PEM", help="the aggregator's Ed25519 "
                   "public key(s), PEM (signing.pub from `fedge provision`): a manifest, round "
                   "or reply not signed by it is refused (the current model kept, the round "
                   "not trained, the update kept pending); needs the cryptography package")
    g.add_argument("--insecure", action="store_true", default=None, help="run on a broker "
                   "that is not on loopback without --verify-key, which is refused otherwise: "
                   "anyone who can publish there could make this device train their model "
                   "(see docs/security.md)")
    g = p.add_argument_group("device")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="where the client id, "
                   f"current model, residual and unsent updates are kept; "
                   f"default ./{d.state_dir}")
    g.add_argument("--threads", type=int, metavar="N",
                   help=f"TFLite interpreter threads; default {d.threads}")
    g.add_argument("--seed", type=int, metavar="N",
                   help="seed for shuffling and stochastic rounding")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedge-client``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        config = build_config(args)
        from edge_client.device import run_client

        return run_client(config, stop)
    except FedgeError as e:
        print(f"fedge-client: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
