"""``pip install '.[edge]'`` into a fresh venv: no TensorFlow, and the client takes part in a round.

This is the device install of the README. It builds the package from this checkout into a
new virtual environment (a minute or so), so it is marked ``slow``; CI runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from client_kit import linear_data

from edge_client.model import TrainableModel
from edge_client.protocol import Topics
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.broker]


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("edge") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "-c", str(ROOT / "constraints.txt"), f"{ROOT}[edge]"]
    res = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv


def test_edge_extra_installs_no_tensorflow(edge_venv: Path) -> None:
    res = subprocess.run([str(edge_venv / "bin" / "python"), "-m", "pip", "list",
                          "--format=freeze"], capture_output=True, text=True, check=True)
    names = {line.split("==")[0].lower() for line in res.stdout.splitlines()}
    assert "tflite-runtime" in names or "ai-edge-litert" in names
    assert "paho-mqtt" in names
    assert not {n for n in names if n.startswith(("tensorflow", "keras", "torch"))}, names


def test_fedge_client_help_runs_from_the_edge_venv(edge_venv: Path) -> None:
    res = subprocess.run([str(edge_venv / "bin" / "fedge-client"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for flag in ("--broker", "--federation", "--client-id", "--data", "--state-dir",
                 "--ca", "--cert", "--key", "--username", "--mqtt-version", "--once",
                 "--max-rounds", "--threads"):
        assert flag in res.stdout, flag


def test_a_full_round_with_the_edge_venv(edge_venv: Path, broker: MosquittoBroker,
                                         namespace: str, tmp_path: Path, logreg_file: bytes,
                                         make_aggregator: Any) -> None:
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-agg",
                                   manual_ack=True)).start(wait=10)
    agg = make_aggregator(transport=t, topics=Topics(namespace), model=logreg_file,
                          weights=TrainableModel(logreg_file).get_weights(), codec="int8")
    t.subscribe(agg.topics.update_filter())
    agg.publish_all()
    x, y = linear_data(40, seed=2)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    proc = subprocess.Popen(
        [str(edge_venv / "bin" / "fedge-client"), "--broker", broker.url, "--federation",
         namespace, "--client-id", "pi-1", "--data", str(tmp_path / "d.npz"), "--state-dir",
         str(tmp_path / "state"), "--once"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        (update,) = agg.collect(1, timeout=90)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        t.stop()
    assert update.client_id == "pi-1" and update.codec == "int8"
    assert all(np.isfinite(v).all() for v in agg.delta(update).values())
