"""The one atomic write: a failure at any step leaves the old file, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_client import files


def test_atomic_write_replaces_the_file_and_creates_its_directories(tmp_path: Path) -> None:
    target = tmp_path / "rounds" / "00000001" / "accepted" / "00000-dev-1.bin"
    files.atomic_write(target, b"first")
    files.atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp left


def test_a_crash_before_the_rename_leaves_the_old_content(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "round.json"
    files.atomic_write(target, b"old")

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        files.atomic_write(target, b"new, half written")
    assert target.read_bytes() == b"old"


def test_new_directories_are_made_durable_in_their_parents(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = files.fsync_dir
    monkeypatch.setattr(files, "fsync_dir", lambda p: (synced.append(p), real(p)))
    files.atomic_write(tmp_path / "a" / "b" / "f", b"x")
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
