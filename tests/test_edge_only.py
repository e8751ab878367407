"""On an ``edge``-only install: commands that need more say which extra, exit 2, no traceback;
exporting from a state dir, evaluating and predicting work without TensorFlow.

The install is played by a process in which the packages of the other extras cannot be
imported (tests/import_block.py); tests/test_install_edge.py does the real install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from import_block import TENSORFLOW, blocked_env
from state_kit import write_state_dir

from edge_client.model import embedded_weights, read_metadata

ROOT = Path(__file__).resolve().parents[1]
#: what fedge[edge] does not install (fedge[server], [author], [tools], [datasets])
NOT_ON_A_DEVICE = (*TENSORFLOW, "prometheus_client", "tqdm", "matplotlib", "amqtt",
                   "packaging", "sklearn", "sktime")


def _on_device(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=blocked_env(tmp_path, NOT_ON_A_DEVICE))


def _friendly(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_fedge_demo_says_it_needs_fedge_author(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = _on_device(tmp_path, "-m", "tools", "demo", "--out", str(out))
    _friendly(done, "fedge demo needs fedge[author] and fedge[tools]: pip install "
                    "'fedge[author,tools]' (not installed: tensorflow")
    assert not out.exists()  # nothing started, nothing written


def test_fedge_export_from_the_zoo_says_it_needs_fedge_author(tmp_path: Path) -> None:
    done = _on_device(tmp_path, "-m", "tools", "export", "--model", "logreg", "--input-shape",
                      "4", "--classes", "2", "--batch-size", "4", "--out",
                      str(tmp_path / "m.tflite"))
    _friendly(done, "fedge export needs fedge[author]: pip install 'fedge[author]' "
                    "(not installed: tensorflow)")


def test_fedge_aggregator_says_it_needs_fedge_server(tmp_path: Path, logreg_file: bytes) -> None:
    (tmp_path / "m.tflite").write_bytes(logreg_file)
    done = _on_device(tmp_path, "-m", "aggregator", "--model", str(tmp_path / "m.tflite"),
                      "--state-dir", str(tmp_path / "state"))
    _friendly(done, "fedge-aggregator needs fedge[server]: pip install 'fedge[server]'")
    assert _on_device(tmp_path, "-m", "aggregator", "--help").returncode == 0


def test_export_from_state_evaluate_and_predict_need_no_tensorflow(
    tmp_path: Path, logreg_file: bytes
) -> None:
    weights = {w.name: np.full(w.shape, 0.25, np.float32)
               for w in read_metadata(logreg_file).weights}
    state = write_state_dir(tmp_path / "agg", logreg_file, {0: weights})
    out = tmp_path / "final.tflite"
    done = _on_device(tmp_path, "-m", "tools", "export", "--from-state", str(state), "--out",
                      str(out))
    assert done.returncode == 0, done.stderr
    embedded = embedded_weights(out.read_bytes())
    assert embedded is not None and all(np.all(v == 0.25) for v in embedded.values())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(30, 4)), y=rng.integers(0, 2, 30))
    done = _on_device(tmp_path, "-m", "tools", "evaluate", "--model", str(out), "--data",
                      str(tmp_path / "d.npz"))
    assert done.returncode == 0, done.stderr
    assert "ROC AUC" in done.stdout and "embedded in the model file" in done.stdout
    done = _on_device(tmp_path, "-m", "tools", "predict", "--state-dir", str(state), "--data",
                      str(tmp_path / "d.npz"), "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 31
    plot = _on_device(tmp_path, "-m", "tools", "evaluate", "--model", str(out), "--data",
                      str(tmp_path / "d.npz"), "--plot", str(tmp_path / "roc.png"))
    _friendly(plot, "fedge evaluate --plot needs fedge[tools]: pip install 'fedge[tools]'")


def test_fedge_help_lists_every_command_on_a_device(tmp_path: Path) -> None:
    done = _on_device(tmp_path, "-m", "tools", "--help")
    assert done.returncode == 0, done.stderr
    for command in ("demo", "export", "evaluate", "predict", "simulate", "provision"):
        assert command in done.stdout


@pytest.mark.parametrize("module", ["tools.evaluate.command", "tools.export.command"])
def test_the_device_side_commands_import_without_tensorflow(tmp_path: Path, module: str) -> None:
    done = _on_device(tmp_path, "-c", f"import {module}, sys; "
                      "assert 'tensorflow' not in sys.modules")
    assert done.returncode == 0, done.stderr
