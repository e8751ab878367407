"""The run: one life of a federation, from a new state directory to its last round.

A run has an id, made when its state directory is new and kept in ``run.json`` with the
SHA-256 of the model file it trains. Every manifest, round, update and reply carries the
id, so devices and the aggregator ignore what an earlier run left on the broker or in
their sessions. A run keeps its model: a new model file is a new run (a new
``--state-dir``, optionally warm-started with ``--initial-weights``). A finished run is
extended by starting it again with more ``--rounds``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError
from edge_client.protocol import is_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A run of the federation.

    Attributes:
        run_id: 16 hex digits, made when the state directory was new.
        model_sha256: the model file the run trains.
        new: this process began the run (its broker session starts clean).
    """

    run_id: str
    model_sha256: str
    new: bool


def begin(store: AggregatorStore, model_sha256: str, model_data: bytes,
          initial_weights: Path | None, now: float | None = None) -> Run:
    """The state directory's run, made now when it has none.

    Raises:
        ConfigError: the directory's run trains another model file, or
            ``--initial-weights`` was given for a run that already began.
    """
    saved = store.load_run()
    if saved is not None:
        run_id, sha = saved.get("run_id"), saved.get("model_sha256")
        if not (isinstance(run_id, str) and is_id(run_id) and isinstance(sha, str)):
            raise ConfigError(f"{store.root}/run.json: no valid run_id/model_sha256; move it "
                              "away to start over")
        if sha != model_sha256:
            raise ConfigError(
                f"--model: {store.root} holds run {run_id}, which trains model {sha[:12]}…, "
                f"not this file ({model_sha256[:12]}…). A new model is a new run: give a new "
                f"--state-dir (and --initial-weights {store.root}/final/weights.npz to start "
                "from this run's model)")
        if initial_weights is not None:
            raise ConfigError(f"--initial-weights starts a new run, but {store.root} holds "
                              f"run {run_id} already: give a new --state-dir")
        return Run(run_id, sha, new=False)
    run_id = secrets.token_hex(8)
    fresh = not store.has_run_state()  # a directory from before run ids keeps its session
    if initial_weights is not None and not fresh:
        raise ConfigError(f"--initial-weights starts a new run, but {store.root} holds rounds "
                          "already: give a new --state-dir")
    store.save_run({"run_id": run_id, "model_sha256": model_sha256,
                    "began_at": round(time.time() if now is None else now, 3)}, model_data)
    log.info("run %s begins (model %s…)", run_id, model_sha256[:12])
    return Run(run_id, model_sha256, new=fresh)


def load_initial_weights(path: Path, spec_names: Mapping[str, tuple[int, ...]]
                         ) -> dict[str, npt.NDArray[Any]]:
    """``--initial-weights``: float32 arrays by weight name, exactly the model's.

    Raises:
        ConfigError: unreadable, or the names or shapes are not the model's.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = {name: np.asarray(z[name], np.float32) for name in z.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"--initial-weights {path}: not a readable .npz ({e})") from None
    got = {name: tuple(a.shape) for name, a in weights.items()}
    if got != dict(spec_names):
        raise ConfigError(f"--initial-weights {path}: weights {sorted(got.items())} do not fit "
                          f"the model {sorted(spec_names.items())}")
    return weights
