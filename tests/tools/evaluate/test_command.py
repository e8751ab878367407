"""``fedge evaluate`` (tools/evaluate/): scores equal to scikit-learn's, the weights and the
scaling it applies, and errors that name the flag."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_kit import Run
from sklearn import metrics

from tools.cli import main

Fedge = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fedge(capsys: pytest.CaptureFixture[str]) -> Fedge:
    """Runs ``fedge ARGS`` in this process; returns (exit code, stdout, stderr)."""
    def run(*args: Any) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _evaluate(fedge: Fedge, run: Run, tmp_path: Path, *extra: Any) -> tuple[dict[str, Any], str,
                                                                             str]:
    out = tmp_path / "scores.json"
    code, stdout, stderr = fedge("evaluate", "--data", run.csv, "--label-column", "outcome",
                                 "--json", out, *extra)
    assert code == 0, stderr
    return json.loads(out.read_text()), stdout, stderr


def test_binary_scores_are_scikit_learns_on_a_file_it_never_trained_on(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("binary")
    doc, stdout, stderr = _evaluate(fedge, run, tmp_path, "--state-dir", run.state,
                                    "--client-state", run.client)
    p = run.probabilities()[:, 1].astype(np.float64)  # sklearn computes in the input dtype
    assert doc["n"] == len(run.y) == 157
    assert doc["accuracy"] == pytest.approx(metrics.accuracy_score(run.y, p >= 0.5), abs=1e-12)
    assert doc["roc_auc"] == pytest.approx(metrics.roc_auc_score(run.y, p), abs=1e-12)
    assert doc["pr_auc"] == pytest.approx(metrics.average_precision_score(run.y, p), abs=1e-12)
    assert doc["log_loss"] == pytest.approx(metrics.log_loss(run.y, p), rel=1e-9)
    assert doc["brier"] == pytest.approx(metrics.brier_score_loss(run.y, p), rel=1e-9)
    tn, fp, fn, tp = metrics.confusion_matrix(run.y, p >= 0.5).ravel()
    assert doc["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert doc["accuracy"] > 0.8 and doc["roc_auc"] > 0.9  # trained, and scaled as trained
    assert doc["scaling"]["kind"] == "client-state"
    assert doc["scaling"]["source"] == str(run.client)
    assert doc["weights"] == {"source": "state-dir", "state_dir": str(run.state), "version": 1,
                              "final": True, "latest": True, "run_finished": True}
    assert f"ROC AUC    {doc['roc_auc']:.4f}" in stdout
    assert f"standardised as the device of state dir {run.client} trained" in stdout
    assert "the final weights (version 1)" in stdout and stderr == ""


def test_multiclass_scores_are_scikit_learns(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("multiclass")
    doc, stdout, _ = _evaluate(fedge, run, tmp_path, "--state-dir", run.state,
                               "--client-state", run.client)
    probs = run.probabilities().astype(np.float64)
    assert doc["accuracy"] == pytest.approx(metrics.accuracy_score(run.y, probs.argmax(1)))
    assert doc["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(run.y, probs, multi_class="ovr", average="macro"), abs=1e-12)
    assert doc["pr_auc"] is None and doc["roc_auc"] == doc["roc_auc_ovr"]
    assert doc["log_loss"] == pytest.approx(metrics.log_loss(run.y, probs), rel=1e-6)
    assert doc["confusion"] == metrics.confusion_matrix(run.y, probs.argmax(1)).tolist()
    precision = metrics.precision_score(run.y, probs.argmax(1), average=None, zero_division=0)
    assert [c["precision"] for c in doc["per_class"]] == pytest.approx(list(precision))
    assert "one-vs-rest, macro" in stdout and "true 2" in stdout


def test_regression_scores_are_scikit_learns(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("regression")
    doc, stdout, _ = _evaluate(fedge, run, tmp_path, "--state-dir", run.state,
                               "--client-state", run.client)
    pred = run.probabilities().astype(np.float64)
    assert doc["mse"] == pytest.approx(metrics.mean_squared_error(run.y, pred), rel=1e-9)
    assert doc["mae"] == pytest.approx(metrics.mean_absolute_error(run.y, pred), rel=1e-9)
    assert doc["r2"] == pytest.approx(metrics.r2_score(run.y, pred), rel=1e-9)
    assert [doc[k] for k in ("accuracy", "roc_auc", "pr_auc", "log_loss")] == [None] * 4
    assert f"MSE   {doc['mse']:.6g}" in stdout


def test_without_client_state_no_scaling_is_applied_and_the_user_is_told(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("binary")
    doc, stdout, stderr = _evaluate(fedge, run, tmp_path, "--state-dir", run.state)
    assert doc["scaling"] == {"kind": "none"}
    assert "scaling  none: the model sees raw feature values (pass --client-state DIR" in stdout
    assert re.search(r"no scaling is applied, but feature .steps. has mean [0-9]{4}", stderr)
    assert "pass --client-state DIR of one of them" in stderr
    scaled, _, _ = _evaluate(fedge, run, tmp_path, "--state-dir", run.state, "--client-state",
                             run.client)
    assert doc["roc_auc"] != scaled["roc_auc"]  # a mismatch the scores show


def test_embedded_weights_give_the_same_scores_and_untrained_ones_are_flagged(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("binary")
    by_state, _, _ = _evaluate(fedge, run, tmp_path, "--state-dir", run.state,
                               "--client-state", run.client)
    final = run.state / "final" / "model.tflite"
    embedded, stdout, _ = _evaluate(fedge, run, tmp_path, "--model", final, "--client-state",
                                    run.client)
    assert embedded["weights"] == {"source": "embedded"}
    assert embedded["roc_auc"] == by_state["roc_auc"] and "embedded in the model" in stdout
    earlier, _, _ = _evaluate(fedge, run, tmp_path, "--state-dir", run.state, "--version", 0,
                              "--client-state", run.client)
    initial = run.probabilities(_initial(run))[:, 1]
    assert earlier["roc_auc"] == pytest.approx(metrics.roc_auc_score(run.y, initial))
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(run.model_file)
    untrained, _, stderr = _evaluate(fedge, run, tmp_path, "--model", plain, "--client-state",
                                     run.client)
    assert untrained["weights"] == {"source": "initial"}
    assert "carries no trained weights: these are its initial ones" in stderr


def _initial(run: Run) -> dict[str, Any]:
    from edge_client.model import TrainableModel

    return TrainableModel(run.model_file).get_weights()


def test_plot_writes_a_png(fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path) -> None:
    run = run_of("binary")
    _evaluate(fedge, run, tmp_path, "--state-dir", run.state, "--plot", tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_int8_inference_model_is_evaluated_with_its_frozen_weights(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    from edge_client.normalise import normalise
    from models.export import export_inference_int8

    run = run_of("binary")
    representative = normalise(run.x, run.stats)
    int8 = tmp_path / "int8.tflite"
    int8.write_bytes(export_inference_int8("logreg", (4,), 2, run.weights, representative))
    doc, _, _ = _evaluate(fedge, run, tmp_path, "--model", int8, "--client-state", run.client)
    assert doc["model"]["quantization"] == "int8" and doc["weights"] == {"source": "frozen"}
    full = run.probabilities()[:, 1]
    assert abs(doc["roc_auc"] - metrics.roc_auc_score(run.y, full)) < 0.02
    code, _, stderr = fedge("evaluate", "--model", int8, "--state-dir", run.state, "--data",
                            run.csv, "--label-column", "outcome")
    assert code == 2 and "is an inference model whose weights are frozen" in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--version", "1"], "--version N picks a checkpoint of --state-dir DIR; give both"),
        ([], "give --model FILE.tflite, --state-dir DIR"),
        (["--state-dir", "{state}", "--version", "7"],
         "no checkpoint of version 7 .*it keeps versions 0-1"),
        (["--state-dir", "{state}", "--client-state", "{state}"],
         "--client-state .*: no normalisation.json: that device trains on raw values"),
        (["--state-dir", "{state}", "--features", "hr,steps,sleep"],
         r"samples of shape \(3,\) \(3 features: hr, steps, sleep\), but model 'logreg' takes "
         r"\(4,\)"),
        (["--state-dir", "{state}", "--client-state", "{client}", "--features",
          "steps,hr,sleep,ratio"],
         r"the data's features \(steps, hr, sleep, ratio\) are not those .* \(hr, steps, sleep, "
         r"ratio\)"),
        (["--model", "{state}/nothing.tflite"], "--model .*nothing.tflite: No such file"),
    ],
)  # fmt: skip
def test_mistakes_are_errors_that_name_the_flag(
    fedge: Fedge, run_of: Callable[[str], Run], flags: list[str], message: str
) -> None:
    run = run_of("binary")
    args = [f.format(state=run.state, client=run.client) for f in flags]
    code, _, stderr = fedge("evaluate", "--data", run.csv, "--label-column", "outcome", *args)
    assert code == 2
    assert stderr.startswith("fedge evaluate: error: ")
    assert re.search(message, stderr), stderr


def test_a_label_that_is_no_class_of_the_model_names_the_column(
    fedge: Fedge, run_of: Callable[[str], Run], tmp_path: Path
) -> None:
    run = run_of("binary")
    bad = tmp_path / "bad.csv"
    bad.write_text("hr,steps,sleep,ratio,outcome\n60,4000,7,0.5,3\n")
    code, _, stderr = fedge("evaluate", "--state-dir", run.state, "--data", bad,
                            "--label-column", "outcome")
    assert code == 2 and "label 3 (sample 1) is not a class of this binary model" in stderr
