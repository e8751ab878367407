"""The client's state directory: what must survive a restart or a power cut.

Layout (all written atomically: temp file, fsync, rename, fsync of the dir)::

    client_id            the id generated once on first start
    model.tflite         the current trainable model file (checked by its SHA-256)
    global.bin           the last applied global weights message (encoded, as received)
    residual.npz         the quantization error-feedback residual
    outbox/R-NONCE.bin   encoded updates not yet acknowledged by the broker

Raw samples never go here: they stay where the user keeps them.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_client.errors import ConfigError

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateDir:
    """The client's persistent state (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "outbox").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--state-dir {self.root}: cannot create it: {e}") from None
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"--state-dir {self.root}: not writable")

    def client_id(self, requested: str | None) -> str:
        """Returns the client id: ``requested`` if given, else the one kept here (made once)."""
        path = self.root / "client_id"
        if requested is not None:
            if not _ID_RE.match(requested):
                raise ConfigError(
                    f"--client-id {requested!r}: use 1-64 letters, digits, '_' or '-'"
                )
            return requested
        if path.exists():
            return path.read_text().strip()
        cid = f"dev-{secrets.token_hex(6)}"
        atomic_write(path, cid.encode())
        return cid

    def read(self, name: str) -> bytes | None:
        """The bytes of a state file, or None when it does not exist."""
        p = self.root / name
        return p.read_bytes() if p.exists() else None

    def write(self, name: str, data: bytes) -> None:
        """Atomically replaces a state file."""
        atomic_write(self.root / name, data)

    def load_arrays(self, name: str) -> dict[str, NDArray[Any]]:
        """Reads a ``.npz`` of named arrays (no pickle); empty when missing."""
        data = self.read(name)
        if data is None:
            return {}
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_arrays(self, name: str, arrays: dict[str, NDArray[Any]]) -> None:
        """Atomically writes named arrays as ``.npz``."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.write(name, buf.getvalue())

    # -- the outbox of updates not yet acknowledged by the broker ---------
    def outbox_put(self, round_id: int, nonce: str, payload: bytes) -> Path:
        """Keeps an encoded update until the broker has acknowledged it."""
        path = self.root / "outbox" / f"{round_id:08d}-{nonce}.bin"
        atomic_write(path, payload)
        return path

    def outbox(self) -> list[tuple[int, Path]]:
        """Pending updates as (round id, path), oldest round first."""
        items = []
        for p in sorted((self.root / "outbox").glob("*.bin")):
            try:
                items.append((int(p.name.split("-", 1)[0]), p))
            except ValueError:
                log.warning("ignoring unexpected file in outbox: %s", p)
        return items

    @staticmethod
    def outbox_done(path: Path) -> None:
        """Removes an update that the broker has acknowledged (or that can no longer count)."""
        path.unlink(missing_ok=True)
