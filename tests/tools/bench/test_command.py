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
    assert {r["model"] for r in s["train"]["rows"]} >= {"logreg", "mlp", "cnn2d", "imaging"}
    assert all(set(r["codecs"]) == {"fp32", "fp16", "int8"} for r in s["codec"]["rows"])
    assert "fedge" in {r["impl"] for r in s["aggregate"]["rows"]}


def test_train_section_reports_gflops_beside_a_one_thread_sgemm_peak(
        quick: tuple[dict[str, Any], str]) -> None:
    t = quick[0]["sections"]["train"]
    sgemm = t["sgemm"]
    assert sgemm["n"] == 512 and sgemm["blas_threads"] in (None, 1)  # really one thread
    assert 0.1 < sgemm["gflops"] < 1000
    rows = {r["model"]: r for r in t["rows"]}
    assert rows["imaging"]["batch"] == 8 and rows["cnn2d"]["batch"] == 32
    # 3 × forward: 2 × the imaging model's 1,712,576 MACs an example, 8 examples a step
    assert rows["imaging"]["step_flops"] == 3 * 2 * 1_712_576 * 8
    for r in rows.values():
        assert _positive(r["step_flops"], r["tflite_gflops"], r["keras_gflops"]), r["model"]
        assert r["tflite_gflops"] < 4 * sgemm["gflops"]  # one thread: cannot beat the peak far
        assert r["target_met"] == (r["ratio"] >= t["target_ratio"] == 2.0)
    _, stdout = quick
    assert "GFLOP/s" in stdout and ("not met" in stdout or "| met |" in stdout)


def test_client_section_measures_sizes_and_peak_memory(quick: tuple[dict[str, Any], str]
                                                       ) -> None:
    c = quick[0]["sections"]["client"]
    assert c["sizes"]["method"] == "metadata"  # quick: no fresh venvs
    assert _positive(c["sizes"]["edge"]["bytes"], c["sizes"]["tensorflow"]["bytes"])
    clients = {(m["client"], m["model"]): m["peak_rss_bytes"] for m in c["memory"]}
    assert len(clients) == 3 and _positive(*clients.values())
    imaging = [m for m in c["memory"] if m["model"].startswith("imaging 64×64×3, batch 8")]
    assert len(imaging) == 1 and imaging[0]["bound_bytes"] == 150e6
    assert imaging[0]["within_bound"] == (imaging[0]["peak_rss_bytes"] < 150e6)
    assert 20e6 < imaging[0]["peak_rss_bytes"] < 2e9  # a real process that loaded the model


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
