"""The aggregator's state directory: nothing accepted is ever lost.

Layout (every file but ``lock`` written atomically: temp, fsync, rename, fsync of the dir)::

    lock                               flock of the running aggregator, with its pid
                                       (``edge_client.files.hold_lock``, taken in __main__)
    run.json                           the run: its id, its model's SHA-256, when it began
    model.tflite                       a copy of the run's model file
    round.json                         the round state machine's snapshot (after every change)
    rounds/R/accepted/SEQ-CLIENT.bin   each accepted update of round R, as received (wire
                                       bytes); SEQ (5 digits) is its place in acceptance order
    checkpoints/vN.bin                 the global weights of version N (wire bytes)
    checkpoints/vN.server.npz          the server optimizer's state after version N
    history.jsonl                      one line per finished round (appended + fsync)
    final/weights.npz, final/model.tflite   the final model, when the run has finished

An update is acknowledged to the broker only after its file exists here, so
after ``kill -9`` a restart re-folds exactly the accepted updates of the open
round, in the order they were first folded (so the sums are bit-identical), and
the broker redelivers whatever was not yet acknowledged.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.history import HISTORY_FILE, read_history
from edge_client.errors import ConfigError, ValidationError
from edge_client.files import atomic_write
from edge_client.protocol import InvalidTopic, check_id

_SEQ_DIGITS = 5
MODEL_FILE = "model.tflite"
FINAL_DIR = "final"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _safe_client(client_id: str) -> str:
    try:
        return check_id(client_id, "client id")
    except InvalidTopic as e:
        raise ValidationError(f"cannot store an update: {e}") from None


class AggregatorStore:
    """Durable files of one federation's aggregator (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        """Open (and create if needed) the state directory ``root``.

        Raises:
            ConfigError: the directory cannot be created.
        """
        self.root = Path(root)
        try:
            for sub in ("rounds", "checkpoints"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--state-dir {self.root}: cannot create it: {e}") from None

    # -- the run and the round state ------------------------------------------
    def save_run(self, run: dict[str, Any], model_file: bytes) -> None:
        """Records a new run: the model file first, then ``run.json`` (which says it began)."""
        atomic_write(self.root / MODEL_FILE, model_file)
        atomic_write(self.root / "run.json", json.dumps(run, sort_keys=True).encode())

    def load_run(self) -> dict[str, Any] | None:
        """``run.json``, or None before the run's first start."""
        return self._json("run.json", "run record")

    def save_round_state(self, state: dict[str, Any]) -> None:
        """Persists the round state machine's snapshot."""
        atomic_write(self.root / "round.json", json.dumps(state, sort_keys=True).encode())

    def load_round_state(self) -> dict[str, Any] | None:
        """The last round snapshot, or None on a first start.

        Raises:
            ConfigError: the file exists but is not a JSON object.
        """
        return self._json("round.json", "round state")

    def _json(self, name: str, what: str) -> dict[str, Any] | None:
        p = self.root / name
        if not p.exists():
            return None
        try:
            loaded = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            msg = f"{p}: unreadable {what} ({e}); move it away to start over"
            raise ConfigError(msg) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: {what} is not a JSON object; move it away")
        return loaded

    def has_run_state(self) -> bool:
        """Whether rounds were run here already (a state directory from before run.json)."""
        return (self.root / "round.json").exists() or any(
            (self.root / "checkpoints").glob("v*.bin"))

    # -- the final model --------------------------------------------------------
    def save_final(self, files: dict[str, bytes]) -> None:
        """Writes ``final/NAME`` for every entry (idempotent: the same bytes again)."""
        for name, data in files.items():
            atomic_write(self.root / FINAL_DIR / name, data)

    # -- accepted updates ---------------------------------------------------
    def _accepted_dir(self, round_id: int) -> Path:
        return self.root / "rounds" / f"{round_id:08d}" / "accepted"

    def _accepted_file(self, round_id: int, client_id: str) -> Path | None:
        pattern = "[0-9]" * _SEQ_DIGITS + f"-{client_id}.bin"
        found = sorted(self._accepted_dir(round_id).glob(pattern))
        return found[0] if found else None

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        """Persists an accepted update before it is acknowledged or folded.

        Idempotent for the same bytes; the file name records the acceptance order.

        Raises:
            ValidationError: an unsafe client id, or another update of this client is
                already stored for the round.
        """
        _safe_client(client_id)
        existing = self._accepted_file(round_id, client_id)
        if existing is not None:
            if existing.read_bytes() != payload:
                raise ValidationError(f"round {round_id}: {client_id} already has another "
                                      f"accepted update ({existing.name})")
            return
        directory = self._accepted_dir(round_id)
        seq = len(list(directory.glob("*.bin"))) if directory.exists() else 0
        atomic_write(directory / f"{seq:0{_SEQ_DIGITS}d}-{client_id}.bin", payload)

    def accepted(self, round_id: int) -> list[tuple[str, bytes]]:
        """Every accepted update of a round as (client id, wire bytes), in acceptance order."""
        d = self._accepted_dir(round_id)
        if not d.exists():
            return []
        return [(p.stem[_SEQ_DIGITS + 1:], p.read_bytes()) for p in sorted(d.glob("*.bin"))]

    def accepted_payload(self, round_id: int, client_id: str) -> bytes | None:
        """The stored accepted update of ``client_id`` in ``round_id``, or None."""
        _safe_client(client_id)
        p = self._accepted_file(round_id, client_id)
        return None if p is None else p.read_bytes()

    # -- checkpoints --------------------------------------------------------
    def _checkpoint_path(self, version: int, suffix: str) -> Path:
        return self.root / "checkpoints" / f"v{version:08d}{suffix}"

    def save_checkpoint(self, version: int, weights_payload: bytes,
                        server_state: dict[str, NDArray[Any]]) -> None:
        """Persists global weights version N and the server optimizer state after it."""
        buf = io.BytesIO()
        np.savez(buf, **server_state)
        atomic_write(self._checkpoint_path(version, ".server.npz"), buf.getvalue())
        atomic_write(self._checkpoint_path(version, ".bin"), weights_payload)

    def checkpoint(self, version: int) -> tuple[bytes, dict[str, NDArray[Any]]] | None:
        """(weights wire bytes, server state) of version N, or None if it was never saved."""
        p = self._checkpoint_path(version, ".bin")
        if not p.exists():
            return None
        server: dict[str, NDArray[Any]] = {}
        sp = self._checkpoint_path(version, ".server.npz")
        if sp.exists():
            with np.load(sp, allow_pickle=False) as z:
                server = {k: z[k] for k in z.files}
        return p.read_bytes(), server

    def latest_checkpoint(self) -> tuple[int, bytes, dict[str, NDArray[Any]]] | None:
        """(version, weights wire bytes, server state) of the newest checkpoint, or None."""
        found = sorted((self.root / "checkpoints").glob("v*.bin"))
        if not found:
            return None
        version = int(found[-1].stem[1:])
        saved = self.checkpoint(version)
        assert saved is not None
        return version, *saved

    # -- history ------------------------------------------------------------
    def append_history(self, record: dict[str, Any]) -> None:
        """Appends one round's line to ``history.jsonl`` and fsyncs it."""
        path = self.root / HISTORY_FILE
        torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every finished round's record, oldest first."""
        return read_history(self.root)
