"""``fedge simulate`` end to end (real Mosquitto, real aggregator process, worker processes):
faults never double-count, and no process outlives the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aggregator.history import read_history

pytestmark = pytest.mark.slow  # real processes: seconds each

ROOT = Path(__file__).resolve().parents[3]


def _simulate(out: Path, *flags: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "tools", "simulate", "--out", str(out),
                          "--json", str(out / "r.json"), *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "selected" in res.stdout and f"wrote {out / 'r.json'}" in res.stdout
    result: dict[str, Any] = json.loads((out / "r.json").read_text())
    return result


def _live_processes_under(path: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if str(path) in cmd and state != "Z" and int(pid) != os.getpid():
            found.append(cmd)
    return found


@pytest.mark.broker
def test_dropouts_and_duplicates_complete_every_round_and_count_each_update_once(
        tmp_path: Path) -> None:
    start = time.monotonic()
    result = _simulate(tmp_path, "--clients", "20", "--rounds", "2", "--dropout", "0.3",
                       "--duplicate-sends", "0.2", "--round-timeout", "4", "--seed", "1",
                       "--processes", "2")
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert sum(r["faults"]["duplicate"] for r in rounds) > 0  # the seed makes duplicates
    for r in rounds:
        assert r["outcome"] == "aggregated"
        assert r["participants"] <= r["selected"] == 20
        assert len(set(r["participant_ids"])) == r["participants"]
        assert r["participants"] == r["sent"]  # every complete update counted, once
        assert r["already_accepted"] == r["faults"]["duplicate"]
        assert r["received"] == r["sent"] + r["faults"]["duplicate"] + r["resent"]
        assert r["accuracy"] is None and r["bytes_up"] > 0
    for line in read_history(tmp_path / "aggregator"):
        assert len(set(line["participants"])) == len(line["participants"])
    assert result["final"]["accepted_total"] == sum(r["participants"] for r in rounds)
    assert _live_processes_under(tmp_path) == [], time.monotonic() - start


@pytest.mark.broker
def test_a_device_that_crashes_mid_upload_is_not_counted_and_returns(tmp_path: Path) -> None:
    result = _simulate(tmp_path, "--clients", "8", "--rounds", "2", "--crash-mid-upload",
                       "0.3", "--round-timeout", "3", "--seed", "2", "--max-payload", "4096")
    first, second = result["rounds"]
    assert first["crashed_ids"], "the seed makes a device crash in round 1"
    assert not set(first["crashed_ids"]) & set(first["participant_ids"])
    assert first["participants"] + len(first["crashed_ids"]) == first["selected"]
    back = set(first["crashed_ids"]) - set(second["crashed_ids"])
    assert back and back <= set(second["participant_ids"])
    assert all(r["outcome"] == "aggregated" for r in result["rounds"])
