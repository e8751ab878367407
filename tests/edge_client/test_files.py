"""The one atomic write: a failure at any step leaves the old file, never a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_client import files
from edge_client.errors import ConfigError


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


# -- the state directory's lock ---------------------------------------------------------
def test_a_second_holder_of_the_lock_is_refused_naming_the_flag_and_the_pid(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with files.hold_lock(state, "--state-dir", "fedge-aggregator"):
        assert (state / files.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(ConfigError) as refused, \
                files.hold_lock(state, "--state-dir", "fedge-aggregator"):
            pass
    assert str(refused.value).startswith(
        f"--state-dir {state} is in use by another fedge-aggregator (pid {os.getpid()})")
    with files.hold_lock(state, "--state-dir", "fedge-aggregator"):  # released: free again
        pass


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """kill -9 leaves the file (and the dead pid in it); the kernel released the flock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from edge_client.files import hold_lock\n"
         "with hold_lock(Path(sys.argv[1]), '--state-dir', 'fedge-client'):\n"
         "    print('locked', flush=True)\n    time.sleep(60)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError, match=rf"fedge-client \(pid {holder.pid}\)"), \
                files.hold_lock(tmp_path, "--state-dir", "fedge-client"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert (tmp_path / files.LOCK_FILE).read_text() == f"{holder.pid}\n"  # stale, left behind
    with files.hold_lock(tmp_path, "--state-dir", "fedge-client"):
        assert (tmp_path / files.LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_directory_that_cannot_be_made_is_a_config_error_naming_the_flag(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--state-dir .*file/state: cannot create"), \
            files.hold_lock(tmp_path / "file" / "state", "--state-dir", "fedge-client"):
        pass
