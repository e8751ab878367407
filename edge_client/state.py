"""The client's state directory: what must survive a restart or a power cut.

Layout (every file but ``lock`` written atomically by :func:`edge_client.files.atomic_write`:
temp file, fsync, rename, fsync of the dir)::

    lock                      flock of the running client, with its pid (taken by
                              ``device.run_client``: one process per state dir)
    client_id                 the id generated once on first start
    model.tflite              the current trainable model file (checked by its SHA-256);
                              stored only once it passed the checks and the probe
    model.probed              the SHA-256 (hex) of model.tflite once it passed the probe,
                              so a restart loads it without probing it again
    model.tflite.refused      a stored model that failed the checks at start, moved aside
    models.refused            JSON list of the model files this device refused
                              ({"sha256", "reason", "at"}, newest last, at most 64): never
                              loaded or downloaded again; delete the file to try them again
    global.bin                the last applied global weights message (encoded, as received)
    residual.bin              the quantization error-feedback residual (an encoded TensorSet)
    normalisation.json        the statistics this device standardises its features with
                              (NormStats JSON, "fedge-norm-stats/1"); absent when it trains
                              on raw values. ``fedge evaluate --client-state`` applies them.
    privacy.json              the device's DP-SGD privacy ledger (``edge_client.privacy``):
                              every round it trained with ``--dp-budget``, written before
                              the round trains; never reset (deleting it forgets the spend)
    outbox/RRRRRRRR-NONCE.bin an encoded update (round id in 8 digits, nonce in hex) kept
                              until the aggregator answered it or its round is over

Raw samples never go here: they stay where the user keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from edge_client.errors import ConfigError
from edge_client.files import atomic_write
from edge_client.protocol import ID_RULE, is_id

log = logging.getLogger(__name__)

NORMALISATION_FILE = "normalisation.json"  # the device's standardisation (see the docstring)
MODEL_FILE, PROBED_FILE, REFUSED_FILE = "model.tflite", "model.probed", "models.refused"
MAX_REFUSED = 64  # refusals kept: a hostile broker can make up new files without end


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
        """Returns the client id: ``requested`` if given, else the one kept here (made once).

        Raises:
            ConfigError: ``requested``, or the id kept here, breaks the protocol's id rule.
        """
        path = self.root / "client_id"
        if requested is not None:
            if not is_id(requested):
                raise ConfigError(f"--client-id {requested!r}: use {ID_RULE}")
            return requested
        if path.exists():
            kept = path.read_text().strip()
            if not is_id(kept):
                raise ConfigError(f"--state-dir {self.root}: {path.name} holds {kept[:80]!r}, "
                                  f"not {ID_RULE}; remove the file to get a new id")
            return kept
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

    # -- model files refused for good ----------------------------------------
    def _refusals(self) -> list[dict[str, Any]]:
        raw = self.read(REFUSED_FILE)
        try:
            entries = json.loads(raw) if raw is not None else []
            if not all(isinstance(e["sha256"], str) and isinstance(e["reason"], str)
                       for e in entries):
                raise ValueError("an entry without a sha256 and a reason")
            return list(entries)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("ignoring unreadable %s: %s", self.root / REFUSED_FILE, e)
            return []

    def refused_models(self) -> dict[str, str]:
        """The SHA-256s of the model files refused so far, with the reason of each.

        An unreadable ``models.refused`` is logged and read as empty: it only saves work.
        """
        return {e["sha256"]: e["reason"] for e in self._refusals()}

    def refuse_model(self, sha256: str, reason: str, at: float) -> None:
        """Remembers that the model file ``sha256`` is refused (the newest 64 are kept)."""
        entries = [e for e in self._refusals() if e["sha256"] != sha256]
        entries.append({"sha256": sha256, "reason": reason, "at": at})
        self.write(REFUSED_FILE, json.dumps(entries[-MAX_REFUSED:], indent=1).encode())

    def set_aside(self, name: str) -> Path:
        """Renames state file ``name`` to ``name.refused`` (replacing an older one)."""
        target = self.root / f"{name}.refused"
        os.replace(self.root / name, target)
        return target

    # -- the outbox: updates the aggregator has not answered yet ------------
    def outbox_put(self, round_id: int, nonce: str, payload: bytes) -> Path:
        """Keeps an encoded update until the aggregator answered it or its round is over."""
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
        """Removes an update the aggregator answered (or that can no longer count)."""
        path.unlink(missing_ok=True)
