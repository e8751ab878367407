"""``fedge demo`` through its CLI: JSON layout, a real PNG, the int8 model, no third-party
chatter on stderr, no orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.chatter import NATIVE_CHATTER

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. the demo's folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd and state != "Z":
            found.append(f"{pid}: {cmd}")
    return found


def _demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tools", "demo", "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("broker", ["mosquitto", "embedded amqtt"])
def test_small_demo_writes_json_png_and_int8_model(tmp_path: Path, broker: str) -> None:
    out = tmp_path / "demo"
    extra = ["--embedded-broker"] if broker == "embedded amqtt" else []
    res = subprocess.run(_demo(out, "--rounds", "3", "--json", str(tmp_path / "r.json"), *extra),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["rounds"]) == 3
    for row in result["rounds"]:
        for key in ("round", "participants", "accuracy", "loss", "bytes_up", "bytes_down"):
            assert key in row, key
        assert row["participants"] == 2 and row["bytes_up"] > 0 and row["bytes_down"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    final = result["final"]
    assert 0.0 <= final["accuracy"] <= 1.0 and 0.0 <= final["pooled_accuracy"] <= 1.0
    png = (out / "rounds.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "rounds.png")).shape[0] > 100
    from edge_client.model import read_metadata

    assert read_metadata((out / "model-int8.tflite").read_bytes()).quantization == "int8"
    assert "final global model (pooled test set): accuracy" in res.stdout
    assert "inputs as the clients train on them: raw feature values" in res.stdout
    assert "ROC AUC" in res.stdout  # a binary task
    assert result["scaling"]["kind"] == "none"
    assert all(0.0 <= row["roc_auc"] <= 1.0 for row in result["rounds"])
    assert f"broker: {broker}" in res.stderr
    noise = [line for line in res.stderr.splitlines() if NATIVE_CHATTER.fullmatch(line.encode())
             or any(word in line for word in ("oneDNN", "absl", "XNNPACK", " amqtt.",
                                              "transitions", "tensorflow", "Traceback"))]
    assert noise == [], noise
    assert _processes_mentioning(str(out)) == []


def test_a_dp_demo_shows_the_epsilon_the_aggregator_spent(tmp_path: Path) -> None:
    """``--dp-epsilon``: client-level DP on the aggregator; the table and the JSON carry ε
    per round, equal to the history's and within the target."""
    out = tmp_path / "demo"
    res = subprocess.run(_demo(out, "--rounds", "2", "--dp-epsilon", "8", "--json",
                               str(tmp_path / "r.json")),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rounds = json.loads((tmp_path / "r.json").read_text())["rounds"]
    history = [json.loads(line) for line in
               (out / "aggregator" / "history.jsonl").read_text().splitlines()]
    assert [r["epsilon"] for r in rounds] == [h["dp"]["epsilon"] for h in history]
    assert 0 < rounds[0]["epsilon"] < rounds[1]["epsilon"] <= 8.0
    assert " ε" in res.stdout and f"{rounds[1]['epsilon']:.3f}" in res.stdout


def test_the_seed_articles_keras_model_runs_the_seed_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    seed_model = str(ROOT / "examples" / "seed.keras")
    res = subprocess.run(_demo(out, "--keras", seed_model, "--rounds", "2"), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["model"] == "seed" and len(result["rounds"]) == 2
    assert all(row["participants"] == 2 for row in result["rounds"])
    from edge_client.model import read_metadata

    meta = read_metadata((out / "model.tflite").read_bytes())
    assert meta.model == "seed" and meta.optimizer == "sgd"
    wrong = subprocess.run(_demo(out, "--keras", seed_model, "--dataset", "breast-cancer"),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2
    assert "the model takes (2,) with 2 classes; breast-cancer has (30,)" in wrong.stderr


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(_demo(out, "--rounds", "50", "--embedded-broker"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history = out / "aggregator" / "history.jsonl"
    end = time.monotonic() + 180
    while not (history.exists() and history.read_text().strip()) and time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)  # polling a file another process writes
    assert history.exists(), "the demo never finished a round"
    assert len(_processes_mentioning(str(out))) >= 3  # aggregator + 2 clients (+ the demo)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert _processes_mentioning(str(out)) == []


def test_a_failing_aggregator_stops_the_demo_and_every_process(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = subprocess.run(_demo(out, "--rounds", "2", "--round-timeout", "-1"), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "the aggregator exited with 2" in res.stderr and "--round-timeout" in res.stderr
    assert _processes_mentioning(str(out)) == []


def test_log_lines_never_break_the_progress_bar(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [c for c in _demo(out, "--rounds", "2") if c != "--no-progress"]
    res = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    segments = re.split(r"[\r\n]", res.stderr)
    assert any("round/s" in s for s in segments), "no progress bar drawn"
    assert any("INFO tools.runtime.federation: broker:" in s for s in segments)
    broken = [s for s in segments if "round/s" in s and "INFO" in s]
    assert broken == [], broken
