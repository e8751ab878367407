"""``fedge predict`` (tools/evaluate/predict.py): one CSV row per input row, the model's
outputs, on data without labels."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from run_kit import NAMES, Run

from tools.cli import main


def _predict(capsys: pytest.CaptureFixture[str], run: Run, data: Path, out: Path,
             *extra: str) -> tuple[list[str], list[list[str]], str]:
    code = main(["predict", "--state-dir", str(run.state), "--client-state", str(run.client),
                 "--data", str(data), "--out", str(out), *extra])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = list(csv.reader(out.open()))
    return rows[0], rows[1:], printed.out


def _unlabelled(run: Run, path: Path) -> Path:
    """The held-out features without the label column."""
    lines = run.csv.read_text().splitlines()
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    return path


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_one_row_per_input_with_the_models_outputs(
    task: str, run_of: Callable[[str], Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_of(task)
    data = _unlabelled(run, tmp_path / "new.csv")
    header, rows, printed = _predict(capsys, run, data, tmp_path / "p.csv")
    expected = run.probabilities()
    assert len(rows) == len(run.y)
    if task == "binary":
        assert header == ["probability", "class"]
        got = np.array([float(r[0]) for r in rows])
        np.testing.assert_allclose(got, expected[:, 1], rtol=1e-6)
        assert [int(r[1]) for r in rows] == list((expected[:, 1] >= 0.5).astype(int))
    elif task == "multiclass":
        assert header == ["p0", "p1", "p2", "class"]
        np.testing.assert_allclose([[float(v) for v in r[:3]] for r in rows], expected,
                                   rtol=1e-6)
        assert [int(r[3]) for r in rows] == list(expected.argmax(axis=1))
    else:
        assert header == ["prediction"]
        np.testing.assert_allclose([float(r[0]) for r in rows], expected, rtol=1e-6)
    assert f"{len(rows)} rows" in printed and "standardised as the device" in printed


def test_a_label_column_in_the_file_is_left_out(
    run_of: Callable[[str], Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_of("binary")
    with_label, _, _ = _predict(capsys, run, run.csv, tmp_path / "a.csv", "--label-column",
                                "outcome")
    _, rows, _ = _predict(capsys, run, _unlabelled(run, tmp_path / "new.csv"), tmp_path / "b.csv")
    assert with_label == ["probability", "class"] and len(rows) == len(run.y)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_without_client_state_it_says_no_scaling_was_applied(
    run_of: Callable[[str], Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_of("binary")
    data = _unlabelled(run, tmp_path / "new.csv")
    code = main(["predict", "--state-dir", str(run.state), "--data", str(data), "--out",
                 str(tmp_path / "p.csv")])
    printed = capsys.readouterr()
    assert code == 0
    assert "scaling  none: the model sees raw feature values" in printed.out
    assert "no scaling is applied, but feature" in printed.err
    assert NAMES[1] in printed.err
