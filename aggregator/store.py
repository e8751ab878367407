"""The aggregator's state directory: nothing accepted is ever lost.

Layout (every file written atomically: temp, fsync, rename, fsync of the dir)::

    round.json                    the round state machine's snapshot (after every change)
    rounds/R/accepted/CLIENT.bin  each accepted update of round R, as received (wire bytes)
    checkpoints/vN.bin            the global weights of version N (wire bytes)
    checkpoints/vN.server.npz     the server optimizer's state after version N
    history.jsonl                 one line per finished round (appended + fsync)

An update is acknowledged to the broker only after its file exists here, so
after ``kill -9`` a restart re-folds exactly the accepted updates of the open
round, and the broker redelivers whatever was not yet acknowledged.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_client.errors import ConfigError

_CLIENT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class AggregatorStore:
    """Durable files of one federation's aggregator (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            for sub in ("rounds", "checkpoints"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--state-dir {self.root}: cannot create it: {e}") from None

    # -- round state ------------------------------------------------------
    def save_round_state(self, state: dict[str, Any]) -> None:
        """Persists the round state machine's snapshot."""
        _atomic_write(self.root / "round.json", json.dumps(state, sort_keys=True).encode())

    def load_round_state(self) -> dict[str, Any] | None:
        """The last round snapshot, or None on a first start."""
        p = self.root / "round.json"
        if not p.exists():
            return None
        try:
            loaded: dict[str, Any] = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            msg = f"{p}: unreadable round state ({e}); move it away to start over"
            raise ConfigError(msg) from None
        return loaded

    # -- accepted updates ---------------------------------------------------
    def _accepted_dir(self, round_id: int) -> Path:
        return self.root / "rounds" / f"{round_id:08d}" / "accepted"

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        """Persists an accepted update before it is acknowledged or folded."""
        if not _CLIENT_RE.match(client_id):
            raise ValueError(f"unsafe client id {client_id!r}")
        _atomic_write(self._accepted_dir(round_id) / f"{client_id}.bin", payload)

    def accepted(self, round_id: int) -> list[tuple[str, bytes]]:
        """Every accepted update of a round as (client id, wire bytes), sorted by client."""
        d = self._accepted_dir(round_id)
        if not d.exists():
            return []
        return [(p.stem, p.read_bytes()) for p in sorted(d.glob("*.bin"))]

    # -- checkpoints --------------------------------------------------------
    def save_checkpoint(self, version: int, weights_payload: bytes,
                        server_state: dict[str, NDArray[Any]]) -> None:
        """Persists global weights version N and the server optimizer state after it."""
        buf = io.BytesIO()
        np.savez(buf, **server_state)
        _atomic_write(self.root / "checkpoints" / f"v{version:08d}.server.npz", buf.getvalue())
        _atomic_write(self.root / "checkpoints" / f"v{version:08d}.bin", weights_payload)

    def latest_checkpoint(self) -> tuple[int, bytes, dict[str, NDArray[Any]]] | None:
        """(version, weights wire bytes, server state) of the newest checkpoint, or None."""
        found = sorted((self.root / "checkpoints").glob("v*.bin"))
        if not found:
            return None
        p = found[-1]
        version = int(p.stem[1:])
        server: dict[str, NDArray[Any]] = {}
        sp = p.with_name(f"v{version:08d}.server.npz")
        if sp.exists():
            with np.load(sp, allow_pickle=False) as z:
                server = {k: z[k] for k in z.files}
        return version, p.read_bytes(), server

    # -- history ------------------------------------------------------------
    def append_history(self, record: dict[str, Any]) -> None:
        """Appends one round's line to ``history.jsonl`` and fsyncs it."""
        with open(self.root / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every finished round's record, oldest first."""
        p = self.root / "history.jsonl"
        if not p.exists():
            return []
        records = []
        for line in p.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash mid-append
        return records
