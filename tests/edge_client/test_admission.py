"""The gate model files pass into a device (edge_client/admission.py), on fakes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from edge_client.admission import ModelAdmission
from edge_client.errors import ModelError
from edge_client.probe import ProbeTimeout
from edge_client.state import MAX_REFUSED, MODEL_FILE, PROBED_FILE, REFUSED_FILE, StateDir


class Calls:
    """A fake probe and loader that count their calls; the probe raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.probed, self.loaded = error, 0, 0

    def probe(self, blob: bytes) -> None:
        self.probed += 1
        if self.error is not None:
            raise self.error

    def load(self, blob: bytes) -> Any:
        self.loaded += 1
        return object()


def _gate(state: StateDir, calls: Calls) -> ModelAdmission:
    return ModelAdmission(state, calls.load, calls.probe, clock=lambda: 1000.0)


def test_a_refusal_is_remembered_across_restarts_and_never_probed_again(tmp_path: Path) -> None:
    state, crashed = StateDir(tmp_path), Calls(ModelError("crashed (SIGSEGV, signal 11)"))
    with pytest.raises(ModelError, match="SIGSEGV"):
        _gate(state, crashed).load(b"bad", "ab" * 32)
    assert (crashed.probed, crashed.loaded) == (1, 0)
    assert StateDir(tmp_path).refused_models() == {"ab" * 32: "crashed (SIGSEGV, signal 11)"}
    restarted = Calls()
    gate = _gate(StateDir(tmp_path), restarted)
    assert gate.refusal("ab" * 32) == "crashed (SIGSEGV, signal 11)"
    with pytest.raises(ModelError, match=r"model abababababab… was refused earlier: crashed"):
        gate.load(b"bad", "ab" * 32)
    assert (restarted.probed, restarted.loaded) == (0, 0)


def test_a_timeout_is_not_remembered(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    with pytest.raises(ProbeTimeout):
        _gate(state, Calls(ProbeTimeout("took more than 120 s"))).load(b"slow", "cd" * 32)
    assert state.refused_models() == {}


def test_a_stored_model_is_probed_once_then_loaded_directly(tmp_path: Path) -> None:
    state, calls = StateDir(tmp_path), Calls()
    gate = _gate(state, calls)
    gate.load(b"model", "ef" * 32, stored=True)  # stored by an older fedge: never probed
    gate.keep(b"model", "ef" * 32)
    assert (tmp_path / MODEL_FILE).read_bytes() == b"model"
    assert (tmp_path / PROBED_FILE).read_text() == "ef" * 32
    gate.load(b"model", "ef" * 32, stored=True)
    gate.load(b"model", "ef" * 32)  # from the broker: probed again (it may not be the file)
    assert (calls.probed, calls.loaded) == (2, 3)


def test_refusals_are_bounded_and_a_damaged_record_is_only_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = StateDir(tmp_path)
    for i in range(MAX_REFUSED + 5):
        state.refuse_model(f"{i:064x}", f"reason {i}", float(i))
    kept = state.refused_models()
    assert len(kept) == MAX_REFUSED and f"{MAX_REFUSED + 4:064x}" in kept and (
        f"{0:064x}" not in kept)
    (tmp_path / REFUSED_FILE).write_text("[{not json")
    with caplog.at_level(logging.WARNING):
        assert StateDir(tmp_path).refused_models() == {}
    assert "ignoring unreadable" in caplog.text


def test_set_aside_keeps_the_refused_file_for_inspection(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.write(MODEL_FILE, b"cut")
    assert state.set_aside(MODEL_FILE) == tmp_path / "model.tflite.refused"
    assert state.read(MODEL_FILE) is None and state.read("model.tflite.refused") == b"cut"
