"""One Reason enum for every rejection, and docs/aggregator.md lists exactly its codes."""

from __future__ import annotations

import re
from pathlib import Path

from aggregator.reasons import Reason

DOCS = Path(__file__).resolve().parents[2] / "docs" / "aggregator.md"


def documented_codes() -> set[str]:
    text = DOCS.read_text()
    table = text[text.index("| code | the update"):].split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return {code for row in rows for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


def test_every_rejection_reason_is_documented_and_every_documented_code_exists() -> None:
    assert documented_codes() == {r.value for r in Reason}
