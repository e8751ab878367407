"""``fedge schema``: propose a federation's data schema from a sample CSV, or show one.

``fedge schema infer DATA.csv --label-column L --out schema.toml`` writes an editable TOML
(each column numeric or categorical, how missing cells are filled, the label's classes) and
names the columns it left out (free text, identifiers, empty columns). ``fedge schema show
FILE`` prints a schema TOML, or the schema a model file carries. Give the TOML to
``fedge export --schema`` (it sets the model's input width) and to every ``fedge-client
--schema``; ``fedge stats --schema schema.toml --out shared.toml`` adds the federation's
statistics (fill values and shared scaling). See docs/data.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_client.errors import ConfigError
from edge_client.model_file import read_schema
from edge_client.schema import schema_toml
from tools.schema.infer import MAX_CATEGORIES_DEFAULT, infer_schema
from tools.schema.view import render_schema

EPILOG = """\
examples:
  fedge schema infer visits.csv --label-column outcome --out schema.toml
  fedge schema show schema.toml
  fedge schema show model.tflite
"""


def add_parser(subparsers: Any) -> None:
    """Registers ``fedge schema`` with its ``infer`` and ``show`` actions."""
    p = subparsers.add_parser("schema", help="propose (infer) or show a federation's data schema",
                              description=__doc__, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    infer = actions.add_parser("infer", help="propose a schema TOML from a sample CSV",
                               description="propose a schema TOML from a sample CSV")
    infer.add_argument("data", type=Path, metavar="DATA.csv", help="a sample of the table")
    infer.add_argument("--label-column", required=True, metavar="COLUMN",
                       help="the column holding the label (or regression target)")
    infer.add_argument("--out", required=True, type=Path, metavar="FILE.toml",
                       help="where to write the schema (refused if it exists, unless --force)")
    infer.add_argument("--regression", action="store_true",
                       help="the label is a numeric target (default: classes)")
    infer.add_argument("--max-categories", type=int, default=MAX_CATEGORIES_DEFAULT,
                       metavar="N", help="a text column with more distinct values is left out "
                       f"(identifier or free text); default {MAX_CATEGORIES_DEFAULT}")
    infer.add_argument("--force", action="store_true", help="overwrite --out")
    infer.set_defaults(func=run_infer)
    show = actions.add_parser("show", help="print a schema TOML or a model file's schema",
                              description="print a schema TOML or a model file's schema")
    show.add_argument("file", type=Path, metavar="FILE", help="schema.toml or model.tflite")
    show.add_argument("--out", type=Path, metavar="FILE.toml", help="also write the schema "
                      "as TOML (e.g. the one a model file carries)")
    show.add_argument("--force", action="store_true", help="overwrite --out")
    show.set_defaults(func=run_show)


def run_infer(args: argparse.Namespace) -> int:
    """Runs ``fedge schema infer``."""
    if args.max_categories < 1:
        raise ConfigError("--max-categories must be at least 1")
    if args.out.exists() and not args.force:
        raise ConfigError(f"--out {args.out} exists; pass --force to overwrite it")
    schema = infer_schema(args.data, args.label_column, regression=args.regression,
                          max_categories=args.max_categories)
    args.out.write_text(schema_toml(schema))
    print(render_schema(schema))
    print(f"wrote {args.out}: edit it, then give it to fedge export --schema and every "
          "fedge-client --schema")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Runs ``fedge schema show``."""
    schema = read_schema(args.file)
    print(render_schema(schema))
    if args.out is not None:
        if args.out.exists() and not args.force:
            raise ConfigError(f"--out {args.out} exists; pass --force to overwrite it")
        args.out.write_text(schema_toml(schema))
        print(f"wrote {args.out}")
    return 0
