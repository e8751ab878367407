"""The ``fedge`` command: one entry point for the tools.

Each sub-command has a module exposing ``add_parser(subparsers)`` (which registers the
sub-command and sets ``func``): its package's ``command`` module (``predict`` lives in the
``evaluate`` package, beside ``evaluate``), or a module of its own for the single-module
``reliability-report``. This file only wires them
together; ``python -m tools`` (``tools/__main__.py``) runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from edge_client.errors import FedgeError

log = logging.getLogger("fedge")

# sub-command name -> module with add_parser(subparsers)
COMMANDS: dict[str, str] = {
    "demo": "tools.demo.command",
    "export": "tools.export.command",
    "evaluate": "tools.evaluate.command",
    "predict": "tools.evaluate.predict",
    "bench": "tools.bench.command",
    "reliability-report": "tools.reliability",
    "provision": "tools.provision.command",
    "simulate": "tools.simulate.command",
}


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``fedge`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fedge",
        description="fedge: federated learning on health data at the edge "
        "(on-device training with the plain TFLite runtime, MQTT end to end).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fedge``; returns the process exit code (2 on a usage or input error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except FedgeError as e:
        print(f"fedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedge {args.command}: interrupted", file=sys.stderr)
        return 130
