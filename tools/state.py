"""Reads an aggregator's state directory: the run's model file and the weights of any version.

What is read here (``fedge-aggregator`` writes it; docs/aggregator.md)::

    model.tflite          the run's model file, copied there at the run's first start
    run.json              {"run_id": ..., "model_sha256": ..., ...}
    round.json            the round state; its "weights_version" is the latest version
    checkpoints/vN.bin    the global weights of version N (8 digits): an encoded
                          edge_client.protocol.Weights message
    final/weights.npz     the final weights (float32 by weight name), once the run finished
    final/model.tflite    model.tflite with the final weights embedded

"The weights of a state dir" are the final ones when the run finished, else the latest
checkpoint's; ``version`` picks a checkpoint. Nothing here writes to the directory, and every
error names the flag, the directory and what is missing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, FedgeError
from edge_client.protocol import MAX_TRANSFER_BYTES, Weights
from edge_client.quantize import dequantize_update

Array = npt.NDArray[Any]
MODEL_FILE = "model.tflite"
RUN_FILE = "run.json"
ROUND_FILE = "round.json"
CHECKPOINTS = "checkpoints"
FINAL_WEIGHTS = "final/weights.npz"
FINAL_MODEL = "final/model.tflite"
_CHECKPOINT = re.compile(r"v(\d{8})\.bin")


@dataclass(frozen=True)
class StateWeights:
    """Weights read from a state dir, and which ones they are.

    Attributes:
        weights: float32 arrays by weight name, in the order the aggregator keeps them.
        version: their version (None: final weights of a dir whose round.json is unreadable).
        final: whether they are the finished run's final weights.
        path: the file they were read from.
        finished: whether the run finished (round.json's phase, or final weights exist).
        latest: whether they are the run's newest (no version was asked for).
    """

    weights: dict[str, Array]
    version: int | None
    final: bool
    path: Path
    finished: bool
    latest: bool

    def describe(self) -> str:
        """E.g. ``the final weights (version 10)``, ``checkpoint version 3``, or ``the latest
        checkpoint (version 7; the run has not finished)``."""
        version = "" if self.version is None else f"version {self.version}"
        if self.final:
            return f"the final weights ({version})" if version else "the final weights"
        if self.latest:
            state = "" if self.finished else "; the run has not finished"
            return f"the latest checkpoint ({version}{state})"
        return f"checkpoint {version}"


def _where(root: Path, flag: str) -> str:
    return f"{flag} {root}"


def _check_dir(root: Path, flag: str) -> None:
    if not root.is_dir():
        raise ConfigError(f"{_where(root, flag)}: no such directory (an aggregator's "
                          "--state-dir)")


def checkpoint_versions(root: Path) -> list[int]:
    """The versions with a checkpoint in ``root/checkpoints``, ascending."""
    folder = Path(root) / CHECKPOINTS
    found = (_CHECKPOINT.fullmatch(p.name) for p in folder.glob("v*.bin"))
    return sorted(int(m[1]) for m in found if m)


def _kept(root: Path) -> str:
    versions = checkpoint_versions(root)
    if not versions:
        return "it holds no checkpoints"
    if versions == list(range(versions[0], versions[-1] + 1)):
        return f"it keeps versions {versions[0]}-{versions[-1]}"
    return f"it keeps versions {', '.join(map(str, versions))}"


def _round_state(root: Path) -> dict[str, Any]:
    """round.json as a dict; empty when it is missing or unreadable."""
    try:
        state = json.loads((Path(root) / ROUND_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def latest_version(root: Path, flag: str = "--state-dir") -> int:
    """The latest version: round.json's ``weights_version``, else the newest checkpoint.

    Raises:
        ConfigError: neither tells (not a state dir, or a run that never started).
    """
    version = _round_state(root).get("weights_version")
    if type(version) is int and version >= 0:
        return version
    versions = checkpoint_versions(root)
    if not versions:
        _check_dir(Path(root), flag)
        raise ConfigError(f"{_where(root, flag)}: no {ROUND_FILE} and no {CHECKPOINTS}/v*.bin; "
                          "is it an aggregator's state dir?")
    return versions[-1]


def checkpoint_weights(root: Path, version: int, flag: str = "--state-dir") -> dict[str, Array]:
    """The global weights of ``version`` from ``root/checkpoints/vNNNNNNNN.bin``.

    Raises:
        ConfigError: no such checkpoint (the message says which are kept), or it is
            oversized, unreadable or holds another version.
    """
    path = Path(root) / CHECKPOINTS / f"v{version:08d}.bin"
    if not path.is_file():
        _check_dir(Path(root), flag)
        raise ConfigError(f"{_where(root, flag)}: no checkpoint of version {version} "
                          f"({CHECKPOINTS}/{path.name}); {_kept(Path(root))}")
    if path.stat().st_size > MAX_TRANSFER_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes, more than a weights message "
                          f"may hold ({MAX_TRANSFER_BYTES})")
    try:
        message = Weights.decode(path.read_bytes())
        weights = dequantize_update(message.tensors)
    except (FedgeError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable checkpoint ({e})") from None
    if message.version != version:
        raise ConfigError(f"{path}: holds version {message.version}, not {version}")
    return {t.name: np.asarray(weights[t.name], np.float32) for t in message.tensors}


def _final_weights(path: Path) -> dict[str, Array]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name], np.float32) for name in archive.files}
    except Exception as e:  # numpy and zipfile raise many types on a damaged archive
        raise ConfigError(f"{path}: unreadable final weights ({e})") from None


def state_weights(root: Path, version: int | None = None,
                  flag: str = "--state-dir") -> StateWeights:
    """The weights of state dir ``root``: version ``version``, else the final ones when the
    run finished, else the latest checkpoint's.

    Raises:
        ConfigError: not a state dir, or the weights asked for are not in it (named).
    """
    root = Path(root)
    _check_dir(root, flag)
    final = root / FINAL_WEIGHTS
    finished = final.is_file() or _round_state(root).get("phase") == "finished"
    if version is None and final.is_file():
        try:
            latest: int | None = latest_version(root, flag)
        except ConfigError:
            latest = None
        return StateWeights(_final_weights(final), latest, True, final, finished, True)
    newest = version is None
    if version is None:
        version = latest_version(root, flag)
    path = root / CHECKPOINTS / f"v{version:08d}.bin"
    return StateWeights(checkpoint_weights(root, version, flag), version, False, path, finished,
                        newest)


def state_model(root: Path, flag: str = "--state-dir") -> bytes:
    """The bytes of the run's model file, ``root/model.tflite``, checked against run.json.

    Raises:
        ConfigError: no model file (written by fedge-aggregator at a run's first start), or
            its SHA-256 differs from the one run.json records.
    """
    root = Path(root)
    _check_dir(root, flag)
    path = root / MODEL_FILE
    try:
        data = path.read_bytes()
    except OSError:
        raise ConfigError(f"{_where(root, flag)}: no {MODEL_FILE} (fedge-aggregator copies "
                          "the run's model there at its first start); pass --model FILE "
                          "with the file the run trained") from None
    try:
        recorded = json.loads((root / RUN_FILE).read_text()).get("model_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    actual = hashlib.sha256(data).hexdigest()
    if isinstance(recorded, str) and recorded != actual:
        raise ConfigError(f"{path}: SHA-256 {actual[:12]}…, but {RUN_FILE} records "
                          f"{recorded[:12]}… for this run's model; the file was replaced")
    return data
