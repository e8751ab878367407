"""Reading an aggregator's state dir (tools/state.py): which weights, which model, which errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from state_kit import write_state_dir

from edge_client.errors import ConfigError
from edge_client.model import read_metadata
from tools.state import checkpoint_weights, latest_version, state_model, state_weights

Array = npt.NDArray[Any]


def _versions(model_file: bytes, count: int) -> dict[int, dict[str, Array]]:
    specs = read_metadata(model_file).weights
    return {v: {w.name: np.full(w.shape, float(v), np.float32) for w in specs}
            for v in range(count)}


def _value(weights: dict[str, Array]) -> float:
    return float(next(iter(weights.values())).flat[0])


def test_final_weights_by_default_else_the_latest_and_any_version_on_request(
    tmp_path: Path, logreg_file: bytes
) -> None:
    done = write_state_dir(tmp_path / "done", logreg_file, _versions(logreg_file, 4))
    final = state_weights(done)
    assert final.final and final.version == 3 and _value(final.weights) == 3.0
    assert final.path == done / "final" / "weights.npz"
    assert final.finished
    second = state_weights(done, 1)
    assert not second.final and second.version == 1 and _value(second.weights) == 1.0
    running = write_state_dir(tmp_path / "running", logreg_file, _versions(logreg_file, 3),
                              finished=False)
    latest = state_weights(running)
    assert not latest.final and latest.version == 2 and _value(latest.weights) == 2.0
    assert not latest.finished
    assert state_model(running) == logreg_file
    assert list(checkpoint_weights(running, 0)) == [w.name for w in
                                                     read_metadata(logreg_file).weights]


def test_without_round_json_the_newest_checkpoint_is_the_latest(
    tmp_path: Path, logreg_file: bytes
) -> None:
    root = write_state_dir(tmp_path / "s", logreg_file, _versions(logreg_file, 3), finished=False)
    (root / "round.json").unlink()
    assert latest_version(root) == 2


@pytest.mark.parametrize(
    ("damage", "flag", "message"),
    [
        (lambda r: None, "--state-dir", r"--state-dir .*nowhere: no such directory"),
        (lambda r: (r / "checkpoints" / "v00000001.bin").unlink(), "--from-state",
         r"--from-state .*: no checkpoint of version 1 \(checkpoints/v00000001.bin\); "
         r"it keeps versions 0, 2"),
        (lambda r: (r / "checkpoints" / "v00000001.bin").write_bytes(b"junk"), "--state-dir",
         r"v00000001.bin: unreadable checkpoint"),
        (lambda r: (r / "checkpoints" / "v00000001.bin").write_bytes(
            (r / "checkpoints" / "v00000002.bin").read_bytes()), "--state-dir",
         "holds version 2, not 1"),
    ],
)  # fmt: skip
def test_a_missing_or_damaged_checkpoint_is_named(
    tmp_path: Path, logreg_file: bytes, damage: Any, flag: str, message: str
) -> None:
    root = write_state_dir(tmp_path / "s", logreg_file, _versions(logreg_file, 3))
    damage(root)
    where = tmp_path / "nowhere" if "nowhere" in message else root
    with pytest.raises(ConfigError, match=message):
        state_weights(where, 1, flag=flag)


def test_a_state_dir_without_its_model_or_with_a_replaced_one_is_named(
    tmp_path: Path, logreg_file: bytes
) -> None:
    root = write_state_dir(tmp_path / "s", logreg_file, _versions(logreg_file, 2))
    (root / "model.tflite").write_bytes(logreg_file + b"x")
    with pytest.raises(ConfigError, match=r"but run\.json records .* the file was replaced"):
        state_model(root)
    (root / "model.tflite").unlink()
    with pytest.raises(ConfigError, match=r"no model.tflite .*pass --model FILE"):
        state_model(root)


def test_an_empty_directory_is_not_a_state_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no round\.json and no checkpoints/v"):
        state_weights(tmp_path)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "weights.npz").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="unreadable final weights"):
        state_weights(tmp_path)
