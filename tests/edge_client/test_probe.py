"""The crash-proof first load (edge_client/probe.py): real child processes, a real segfault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from model_kit import crashing, document, flatbuffer, truncated, with_document

from edge_client import probe as probe_module
from edge_client.errors import ConfigError, ModelError
from edge_client.probe import ProbeTimeout, probe_model

ROOT = Path(__file__).resolve().parents[2]


def test_a_good_file_passes(logreg_file: bytes) -> None:
    probe_model(logreg_file)


def test_a_file_that_segfaults_the_runtime_is_refused_naming_the_signal(
        logreg_file: bytes) -> None:
    bad = crashing(logreg_file)
    loaded = subprocess.run(  # what loading it in this process would do
        [sys.executable, "-c", "import sys; from edge_client.probe import exercise; "
         "exercise(sys.stdin.buffer.read())"], input=bad, capture_output=True, cwd=ROOT,
        timeout=120)
    assert loaded.returncode == -11, loaded.stderr[-2000:]
    with pytest.raises(ModelError, match=r"crashed the TFLite runtime \(SIGSEGV, signal 11\) "
                                         "in a probe process"):
        probe_model(bad)


def test_what_the_child_refuses_is_reported_with_its_reason(logreg_file: bytes) -> None:
    inference = with_document(flatbuffer(logreg_file), {**document(logreg_file),
                                                        "kind": "inference"})
    with pytest.raises(ModelError, match="of kind 'inference'; only 'trainable' files train"):
        probe_model(inference)


def test_a_file_failing_the_checks_starts_no_child(logreg_file: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*_: object, **__: object) -> None:
        raise AssertionError("a child was started for a file the checks refuse")

    monkeypatch.setattr(probe_module.subprocess, "run", no_child)
    with pytest.raises(ModelError, match="not a valid TFLite flatbuffer"):
        probe_model(truncated(logreg_file))


def test_a_probe_that_hangs_is_killed_and_says_so(logreg_file: bytes, tmp_path: Path) -> None:
    hangs = tmp_path / "python"
    hangs.write_text("#!/bin/sh\nexec sleep 60\n")
    hangs.chmod(0o755)
    with pytest.raises(ProbeTimeout, match=r"took more than 0.5 s \(killed\)"):
        probe_model(logreg_file, timeout=0.5, python=str(hangs))


def test_no_runtime_in_the_child_is_a_configuration_error(logreg_file: bytes) -> None:
    with pytest.raises(ConfigError, match="unknown TFLite runtime 'nope'"):
        probe_model(logreg_file, runtime="nope")
