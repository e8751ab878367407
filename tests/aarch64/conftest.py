"""The ``aarch64`` marker, and the figures the aarch64 checks measure.

Each test adds what it measured to the session's :func:`figures`; at the end they are
printed (they are emulation figures: qemu on x86, not a device's speed) and written next to
the target's ``target.json`` as ``figures.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

TARGET_ENV = "FEDGE_AARCH64_TARGET"
_FIGURES: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "aarch64: runs fedge on an emulated aarch64 Debian 12 device "
        "(make test-aarch64; skipped unless $FEDGE_AARCH64_TARGET is set)")


@pytest.fixture(scope="session")
def figures() -> dict[str, Any]:
    """Name → measured value, printed and saved at the end of the session."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("aarch64 figures (under qemu-user emulation, not device speed)")
    for name, value in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get(TARGET_ENV)
    if target:
        path = Path(target).with_name("figures.json")
        path.write_text(json.dumps(_FIGURES, indent=1) + "\n")
        terminalreporter.write_line(f"(saved in {path})")
