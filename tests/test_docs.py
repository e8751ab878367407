"""The docs say what the code does: flag tables match the parsers, metrics the registry.

* ``docs/aggregator.md``'s flag table is written by hand (defaults and meanings say more
  than ``--help``): every flag of ``fedge-aggregator`` is in it, every flag in it exists,
  and every default it states plainly is the parser's.
* The README's table of ``fedge-client`` flags is generated from the parser; rewrite it
  after changing a flag with ``FEDGE_REGENERATE_DOCS=1 .venv/bin/pytest tests/test_docs.py``.
  Every flag the README's client and aggregator sections mention exists.
* ``docs/aggregator.md``'s metrics table lists exactly the metrics the service registers.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pytest

from aggregator.__main__ import build_parser as aggregator_parser
from aggregator.config import AggregatorConfig
from aggregator.metrics import ServiceMetrics
from edge_client.__main__ import build_parser as client_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
AGGREGATOR_MD = ROOT / "docs" / "aggregator.md"
CLIENT_TABLE = ("<!-- fedge-client flags: generated from the parser by "
                "`FEDGE_REGENERATE_DOCS=1 .venv/bin/pytest tests/test_docs.py` -->",
                "<!-- fedge-client flags end -->")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every long option of ``parser`` and its action."""
    return {o: a for a in parser._actions for o in a.option_strings if o.startswith("--")}


def _section(text: str, heading: str) -> str:
    """The markdown from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = re.compile(rf"\n#{{1,{len(level)}}} ").search(text, start + len(heading) + 2)
    return text[start:end.start() if end else len(text)]


def _table(section: str) -> list[list[str]]:
    """The cells of the first markdown table in ``section`` (header and rule dropped)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return rows[2:]


# ---------------------------------------------------------------- aggregator flags


def _aggregator_rows() -> list[list[str]]:
    return _table(_section(AGGREGATOR_MD.read_text(), "## Configuration"))


def test_every_aggregator_flag_is_in_the_docs_table_and_every_documented_one_exists() -> None:
    documented = {f for row in _aggregator_rows() for f in _FLAG.findall(row[0])}
    parsed = set(_options(aggregator_parser())) - {"--help"}
    assert sorted(parsed - documented) == [], "flags missing from docs/aggregator.md"
    assert sorted(documented - parsed) == [], "docs/aggregator.md documents unknown flags"


def _stated_default(cell: str) -> str | None:
    """The default a cell states plainly (`` `x` `` or a number), else None."""
    quoted = re.fullmatch(r"`([^`]*)`.*", cell)
    if quoted:
        return quoted[1].removeprefix("./")
    number = re.match(r"[0-9][0-9,]*(\.[0-9]+)?(?=$|[ (])", cell)
    return number[0].replace(",", "") if number else None


def _default_of(flag: str, action: argparse.Action) -> Any:
    name = flag[2:].replace("-", "_")
    return getattr(AggregatorConfig(), name) if hasattr(AggregatorConfig, name) else (
        action.default)


def test_the_defaults_docs_aggregator_md_states_are_the_real_ones() -> None:
    options, wrong = _options(aggregator_parser()), []
    for row in _aggregator_rows():
        for flag in _FLAG.findall(row[0]):
            real, stated = _default_of(flag, options[flag]), _stated_default(row[1])
            if real is None or isinstance(real, bool):
                continue  # "none", "model's", "off": said in words
            if isinstance(real, (int, float)):
                ok = stated is not None and float(stated) == float(real)
            else:
                ok = stated == str(real)
            if not ok:
                wrong.append(f"{flag}: docs say {row[1]!r}, the default is {real!r}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- client flags


def _flag_cell(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings)
    if action.nargs == 0:
        return names
    value = action.metavar or "{" + ",".join(map(str, action.choices or ())) + "}"
    return f"`{action.option_strings[-1]} {value}`"


def client_flags_table() -> str:
    """The README's table of every ``fedge-client`` flag, from the parser's help."""
    rows = ["| flag | meaning |", "| --- | --- |"]
    for action in client_parser()._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            help_text = str(action.help or "").replace("|", "\\|")
            rows.append(f"| {_flag_cell(action)} | {help_text} |")
    return "\n".join([CLIENT_TABLE[0], *rows, CLIENT_TABLE[1]])


def test_the_readme_client_flag_table_is_generated_from_the_parser() -> None:
    text = README.read_text()
    start, end = text.index(CLIENT_TABLE[0]), text.index(CLIENT_TABLE[1]) + len(CLIENT_TABLE[1])
    fresh = client_flags_table()
    if os.environ.get("FEDGE_REGENERATE_DOCS") == "1":
        README.write_text(text[:start] + fresh + text[end:])
        return
    assert text[start:end] == fresh, ("README.md's fedge-client flags differ from the parser; "
                                      "regenerate: FEDGE_REGENERATE_DOCS=1 .venv/bin/pytest "
                                      "tests/test_docs.py")


def _mentioned_flags(section: str, command: str) -> set[str]:
    """Flags given to ``command`` in the section's code blocks, and `--flags` in its prose."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, re.S)
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    found = {f for span in re.findall(r"`([^`]+)`", prose) if span.startswith("--")
             for f in _FLAG.findall(span.split()[0])}
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if command in line:
                found |= set(_FLAG.findall(line.split(command, 1)[1].split("#")[0]))
    return found


@pytest.mark.parametrize(("heading", "command", "parser"), [
    ("## Install the client on a device (Raspberry Pi)", "fedge-client", client_parser),
    ("## Run the aggregator as a service", "fedge-aggregator", aggregator_parser),
])
def test_every_flag_the_readme_mentions_exists(heading: str, command: str, parser: Any) -> None:
    mentioned = _mentioned_flags(_section(README.read_text(), heading), command)
    assert mentioned, f"no flags found under {heading!r}: is the test still reading it?"
    assert sorted(mentioned - set(_options(parser()))) == []


# ---------------------------------------------------------------- metrics


def _registered() -> set[tuple[str, str, tuple[str, ...]]]:
    metrics = ServiceMetrics()
    found = set()
    for metric in vars(metrics).values():
        kind = getattr(metric, "_type", None)
        if kind is not None:
            suffix = "_total" if kind == "counter" else ""
            found.add((metric._name + suffix, kind, tuple(metric._labelnames)))
    return found


def test_the_metrics_table_lists_exactly_the_registered_metrics() -> None:
    rows = _table(_section(AGGREGATOR_MD.read_text(), "## Metrics"))
    documented = set()
    for row in rows:
        cell = re.fullmatch(r"`([a-z_]+)(?:\{([a-z_,]+)\})?`", row[0])
        assert cell is not None, f"not a metric name: {row[0]}"
        labels = tuple(cell[2].split(",")) if cell[2] else ()
        documented.add((cell[1], row[1], labels))
    registered = _registered()
    assert registered, "no metrics found on ServiceMetrics: is the test still reading it?"
    assert sorted(registered - documented) == [], "metrics missing from docs/aggregator.md"
    assert sorted(documented - registered) == [], "docs/aggregator.md lists unknown metrics"


# ---------------------------------------------------------------- fedge commands


def _fedge_subparsers() -> dict[str, argparse.ArgumentParser]:
    from tools.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_readme_names_every_fedge_command() -> None:
    text = README.read_text()
    assert sorted(c for c in _fedge_subparsers() if f"`{c}`" not in text
                  and f"fedge {c}" not in text) == []


def test_every_fedge_command_line_in_the_readme_and_docs_uses_real_flags() -> None:
    commands, wrong = _fedge_subparsers(), []
    for page in (README, ROOT / "docs" / "evaluate.md"):
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                found = re.search(r"\bfedge ([a-z-]+)(.*)", line)
                if found is None or found[1] not in commands:
                    continue
                command, rest = commands[found[1]], found[2].split("#")[0]
                actions = next((a.choices for a in command._actions  # `fedge schema infer`
                                if isinstance(a, argparse._SubParsersAction)), {})
                words = rest.split()
                if words and words[0] in actions:
                    command = actions[words[0]]
                known = set(_options(command))
                flags = set(_FLAG.findall(rest))
                wrong += [f"{page.name}: fedge {found[1]} {f}" for f in sorted(flags - known)]
    assert wrong == []
