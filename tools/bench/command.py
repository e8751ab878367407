"""``fedge bench``: every figure measured side by side with its reference, in one run.

Each section is a module of :mod:`tools.bench` with ``run(quick) -> dict`` (JSON-able
measurements) and ``render(result) -> str`` (a Markdown section). ``fedge bench all``
runs every section but those of :data:`NOT_IN_ALL` (minutes of federations each:
``fedge bench results``, ``privacy``, ``client-dp``; run each by name); a full run rewrites
its sections of ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_client.errors import ConfigError
from tools.bench.report import machine_description, update_results

log = logging.getLogger(__name__)

SECTIONS: dict[str, str] = {
    "train": "tools.bench.train",
    "codec": "tools.bench.codec",
    "aggregate": "tools.bench.aggregate",
    "client": "tools.bench.client",
    "round": "tools.bench.round",
    "data": "tools.bench.data",
    "results": "tools.bench.results",
    "tables": "tools.bench.tables",
    "privacy": "tools.bench.privacy",
    "client-dp": "tools.bench.client_dp",
}
#: minutes of federations each: run only when named
NOT_IN_ALL = frozenset({"results", "privacy", "client-dp"})


def add_parser(sub: Any) -> None:
    """Registers ``fedge bench``."""
    p = sub.add_parser(
        "bench",
        help="measure fedge next to its references (Keras, Flower, bare MQTT)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("section", nargs="?", default="all", choices=[*SECTIONS, "all"],
                   help="what to measure (default: all, which leaves out "
                   f"{', '.join(sorted(NOT_IN_ALL))})")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, a smoke run of a minute or two; figures are not "
                   "written to docs/results.md unless --results is given")
    p.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    p.add_argument("--results", type=Path, default=None,
                   help="Markdown file to update (default: docs/results.md on a full run)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the chosen sections, prints them, writes JSON and the results file."""
    names = ([n for n in SECTIONS if n not in NOT_IN_ALL] if args.section == "all"
             else [args.section])
    results: dict[str, Any] = {"machine": machine_description(), "quick": args.quick,
                               "sections": {}}
    rendered: dict[str, str] = {}
    for name in names:
        module = importlib.import_module(SECTIONS[name])
        log.info("bench %s%s ...", name, " (quick)" if args.quick else "")
        t0 = time.perf_counter()
        result = module.run(quick=args.quick)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        results["sections"][name] = result
        rendered[name] = module.render(result)
        print(rendered[name], flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
    target = args.results or (None if args.quick else Path("docs/results.md"))
    if target is not None:
        if args.quick and args.results is None:
            raise ConfigError("refusing to write quick figures to docs/results.md")
        update_results(target, rendered, results["machine"])
        print(f"updated {target}")
    return 0
