"""Durable files: the one atomic write of fedge (the client's state and the aggregator's store),
and the one lock that keeps a state directory to one process.

A crash or power cut at any point leaves either the old or the new content of a file
written with :func:`atomic_write`, never a mix: the bytes go to a temporary file in the
same directory, which is fsynced, renamed over the target, and the directory fsynced so
that the rename itself survives.

:func:`hold_lock` takes an exclusive ``flock`` on ``DIR/lock`` for as long as its ``with``
block runs: a second process on the same directory is refused at once instead of writing
every round (or outbox entry) a second time. The kernel releases the lock when the holder
exits, however it exits, so a lock file left by ``kill -9`` never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edge_client.errors import ConfigError

LOCK_FILE = "lock"  # in the state directory; holds the pid of the process holding the lock


def fsync_dir(path: Path) -> None:
    """Makes the entries of directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Creates directory ``path`` and its missing parents, each one durable in its parent."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)  # made by someone else meanwhile: as good
        fsync_dir(directory.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves either the old or the new file.

    Creates the directory (and its parents) when it does not exist yet.

    Raises:
        OSError: the write failed (the old file, if any, is still there).
    """
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def hold_lock(directory: Path, flag: str, program: str) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` (created if needed) while the block runs.

    The lock is an ``flock`` on ``directory/lock``, which also holds this process's pid
    (for the message another process gets). The file stays when the block ends: removing
    it would let two processes lock two different files of the same name.

    Args:
        directory: the state directory.
        flag: the flag that named it, for messages (``--state-dir``).
        program: who holds such a lock, for messages (``fedge-aggregator``).

    Raises:
        ConfigError: another process holds the lock ("``--state-dir DIR`` is in use by
            another ``program`` (pid N)"), or the directory or lock file cannot be made.
    """
    try:
        make_dirs(directory)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"{flag} {directory}: cannot create its lock file: {e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{flag} {directory} is in use by another {program} "
                              f"(pid {_holder(fd)}): one directory serves one process; stop "
                              f"that one or give another {flag}") from None
        except OSError as e:  # e.g. a file system without locks
            raise ConfigError(f"{flag} {directory}: cannot lock {LOCK_FILE}: {e}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid the lock holder wrote, or "unknown" (it may not have written it yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
