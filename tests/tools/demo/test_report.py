"""The demo's printed table and plot (tools/demo/report.py, plot.py) from a result dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.demo.plot import fitted_limits, plot_rounds
from tools.demo.report import print_table


def _result(roc_auc: float | None, scaling: dict[str, Any]) -> dict[str, Any]:
    rows = [{"round": r, "outcome": "aggregated", "participants": 2, "samples": 100,
             "accuracy": 0.55 + r / 100, "loss": 0.7 - r / 100, "bytes_up": 1000,
             "bytes_down": 900, "roc_auc": None if roc_auc is None else roc_auc + r / 100,
             "clients": {"p-1": {"accuracy": 0.6, "loss": 0.6, "roc_auc": roc_auc}}}
            for r in (1, 2, 3)]
    final = {"accuracy": 0.58, "loss": 0.67, "roc_auc": roc_auc, "accuracy_range": [0.57, 0.59],
             "clients": {"p-1": {"accuracy": 0.6, "loss": 0.6, "roc_auc": roc_auc}},
             "pooled_accuracy": 0.6, "local_only_accuracy": 0.5, "int8_model_accuracy": 0.58,
             "int8_model_roc_auc": roc_auc}
    return {"rounds": rows, "final": final, "scaling": scaling}


EACH_PARTY = {"kind": "each-party", "parties": 2, "note": "..."}


def test_a_binary_table_shows_roc_auc_and_says_which_scaling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_table(_result(0.7, EACH_PARTY))
    out = capsys.readouterr().out
    assert "accuracy ROC AUC    loss" in out and "   0.710" in out
    assert "final global model (pooled test set): accuracy 0.580, ROC AUC 0.700" in out
    assert "standardised as each party does its own" in out and "0.570-0.590" in out
    assert "int8 inference model:                  accuracy 0.580, ROC AUC 0.700" in out


def test_a_multiclass_table_has_no_roc_auc_column(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(_result(None, {"kind": "none", "note": "raw"}))
    out = capsys.readouterr().out
    assert "ROC AUC" not in out and "raw feature values (--no-normalise)" in out


def test_the_score_axis_fits_the_data() -> None:
    assert fitted_limits([0.55, 0.65]) == pytest.approx((0.53, 0.67))
    assert fitted_limits([0.95, 1.0]) == (pytest.approx(0.93), 1.02)
    assert fitted_limits([]) == (0.0, 1.02)


def test_the_plot_is_written(tmp_path: Path) -> None:
    plot_rounds(_result(0.7, EACH_PARTY), tmp_path / "r.png", "title")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
