"""``fedge reliability-report`` (tools/reliability.py): results JSON → docs/reliability.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_client.errors import ConfigError
from tools.cli import main as fedge
from tools.reliability import load_results, render


def record(name: str, module: str, outcome: str = "pass", **extra: Any) -> dict[str, Any]:
    return {"name": name, "test": f"tests/reliability/{module}::test_x", "injected": "in | out",
            "expected": "ok", "observed": "seen\nit", "outcome": outcome, "failure": "",
            "duration_s": 1.5, "recorded_at": "2025-01-01T00:00:00+00:00", **extra}


def write(path: Path, *scenarios: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"environment": {"python": "3.11"}, "scenarios": scenarios}))
    return path


def test_the_table_lists_every_scenario_by_area_with_its_outcome(tmp_path: Path) -> None:
    results = write(tmp_path / "r.json",
                    record("garbage", "test_input_faults.py"),
                    record("broker restart", "test_process_faults.py", "fail",
                           failure="timed out"),
                    record("flood", "test_scale_faults.py", "known bug"))
    page = render(*load_results(results))
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| # | area | fault |")
    assert [row.split(" | ")[2] for row in rows[1:]] == ["broker restart", "garbage", "flood"]
    assert "in \\| out" in rows[2] and "seen it" in rows[2]  # escaped pipe, one line
    assert rows[1].endswith("| **FAIL** |") and "failed: timed out" in rows[1]
    assert rows[3].endswith("| **known bug** (reported) |")
    assert "3 scenarios: 1 pass, 1 fail, 1 known bug" in page


def test_the_command_writes_the_page_and_fails_when_a_scenario_failed(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "reliability.md"
    passing = write(tmp_path / "ok.json", record("garbage", "test_input_faults.py"))
    assert fedge(["reliability-report", "--results", str(passing), "--out", str(out)]) == 0
    assert "| 1 | input | garbage |" in out.read_text()
    failing = write(tmp_path / "bad.json", record("garbage", "test_input_faults.py", "fail"))
    assert fedge(["reliability-report", "--results", str(failing), "--out", str(out)]) == 1


@pytest.mark.parametrize("scenario", [
    {"name": "x"}, record("x", "m.py", outcome="maybe"), record("x", "m.py", duration_s="1")])
def test_a_malformed_record_is_refused_naming_it(tmp_path: Path,
                                                 scenario: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="scenario 0"):
        load_results(write(tmp_path / "r.json", scenario))


def test_missing_results_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run the fault suite first"):
        load_results(tmp_path / "none.json")
