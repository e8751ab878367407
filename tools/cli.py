"""The ``fedge`` command: one entry point for the tools.

Each sub-command has a module exposing ``add_parser(subparsers)`` (which registers the
sub-command and sets ``func``): its package's ``command`` module (``predict`` lives in the
``evaluate`` package, beside ``evaluate``), or a module of its own for the single-module
``reliability-report``. This file only wires them
together; ``python -m tools`` (``tools/__main__.py``) runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from edge_client.errors import FedgeError
from tools.chatter import filtered_native_stderr, quiet_loggers
from tools.extras import MissingExtra

log = logging.getLogger("fedge")
VERBOSE = ("debug logging, and the TensorFlow/absl/TFLite/amqtt start-up and INFO lines that "
           "are otherwise silenced")

# sub-command name -> module with add_parser(subparsers)
COMMANDS: dict[str, str] = {
    "demo": "tools.demo.command",
    "export": "tools.export.command",
    "check-model": "tools.check.command",
    "evaluate": "tools.evaluate.command",
    "predict": "tools.evaluate.predict",
    "bench": "tools.bench.command",
    "reliability-report": "tools.reliability",
    "provision": "tools.provision.command",
    "simulate": "tools.simulate.command",
    "status": "tools.status.command",
    "schema": "tools.schema.command",
    "stats": "tools.stats.command",
}


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``fedge`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fedge",
        description="fedge: federated learning on health data at the edge "
        "(on-device training with the plain TFLite runtime, MQTT end to end).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    for command in sub.choices.values():  # `fedge demo --verbose` works too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=VERBOSE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fedge``; returns the process exit code (2 on a usage or input error).

    Unless ``--verbose``, third-party chatter is silenced (:mod:`tools.chatter`): the
    Python loggers of TensorFlow, absl, amqtt and transitions, and the native start-up and
    conversion lines TensorFlow and TFLite write to stderr themselves.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
    quiet = contextlib.nullcontext() if args.verbose else filtered_native_stderr()
    with quiet:
        logging.basicConfig(  # after the filter: log records go to the real stderr
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if not args.verbose:
            quiet_loggers()
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except MissingExtra as e:  # the message is the whole story: what, which extra, the pip line
        print(e, file=sys.stderr)
        return 2
    except FedgeError as e:
        print(f"fedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedge {args.command}: interrupted", file=sys.stderr)
        return 130
