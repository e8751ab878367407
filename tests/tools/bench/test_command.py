"""``fedge bench all --quick --json``: every section runs and reports its measurements.

The figures themselves are not asserted (they depend on the machine); their presence,
their kind and the method behind them are. Takes about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aggregator.stages import Stage
from tools.bench.stages import OTHER

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ("train", "codec", "aggregate", "client", "round")
pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    results = ROOT / "docs" / "results.md"
    before = results.read_bytes() if results.exists() else None
    res = subprocess.run([sys.executable, "-m", "tools", "bench", "all", "--quick",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (results.read_bytes() if results.exists() else None) == before  # quick: not written
    result: dict[str, Any] = json.loads(out.read_text())
    return result, res.stdout


def _positive(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_every_section_is_in_the_json_and_printed(quick: tuple[dict[str, Any], str]) -> None:
    result, stdout = quick
    assert result["quick"] is True and result["machine"]["cores"] >= 1
    assert set(SECTIONS) <= set(result["sections"])
    for name in SECTIONS:
        assert _positive(result["sections"][name]["seconds"]), name
    assert stdout.count("\n## ") >= len(SECTIONS) - 1


def test_train_codec_and_aggregate_sections_have_rows(quick: tuple[dict[str, Any], str]
                                                      ) -> None:
    s = quick[0]["sections"]
    assert {r["model"] for r in s["train"]["rows"]} >= {"logreg", "mlp"}
    assert all(set(r["codecs"]) == {"fp32", "fp16", "int8"} for r in s["codec"]["rows"])
    assert "fedge" in {r["impl"] for r in s["aggregate"]["rows"]}


def test_client_section_measures_sizes_and_peak_memory(quick: tuple[dict[str, Any], str]
                                                       ) -> None:
    c = quick[0]["sections"]["client"]
    assert c["sizes"]["method"] == "metadata"  # quick: no fresh venvs
    assert _positive(c["sizes"]["edge"]["bytes"], c["sizes"]["tensorflow"]["bytes"])
    clients = {m["client"]: m["peak_rss_bytes"] for m in c["memory"]}
    assert len(clients) == 2 and _positive(*clients.values())


def test_round_section_compares_the_aggregator_with_the_floor(
        quick: tuple[dict[str, Any], str]) -> None:
    r = quick[0]["sections"]["round"]
    assert {(row["n"], row["variant"]) for row in r["rows"]} == {(10, "shipped")}
    for row in r["rows"]:
        assert _positive(row["floor_median"], row["round_median"], row["ratio"])
        assert row["floor_bytes"] == row["round_update_bytes"]  # the same bytes both ways
        assert set(row["stages"]) <= {s.value for s in Stage} | {OTHER}  # only known stages
        assert row["calls"]["store update (fsync)"] == 10  # one per client
        assert _positive(row["window_seconds"], sum(row["stages"].values()))
