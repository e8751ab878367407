"""Durable files: the one atomic write of fedge (the client's state and the aggregator's store).

A crash or power cut at any point leaves either the old or the new content of a file
written with :func:`atomic_write`, never a mix: the bytes go to a temporary file in the
same directory, which is fsynced, renamed over the target, and the directory fsynced so
that the rename itself survives.
"""

from __future__ import annotations

import os
from pathlib import Path


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
