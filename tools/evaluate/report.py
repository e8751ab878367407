"""The report of ``fedge evaluate``: the scores of :mod:`edge_client.scoring`, as JSON and text.

JSON layout (``--json``)::

    {"n", "accuracy", "roc_auc", "pr_auc", "log_loss",   # None where the task has none
     "scaling": {"kind": "none"} | {"kind": "client-state", "source": DIR, ...},
     "task", "classes",
     "model": {"file", "name", "kind", "quantization"},
     "weights": {"source": "state-dir" | "embedded" | "initial" | "frozen", ...},
     "data": {"file", "label_column", "rows"},
     ...}                                                  # the rest of the task's scores

The rest is :func:`edge_client.scoring.binary_scores` (positives, brier, calibration,
calibration_error, confusion), :func:`~edge_client.scoring.multiclass_scores` (confusion,
per_class, macro_*, roc_auc_ovr, which ``roc_auc`` repeats) or
:func:`~edge_client.scoring.regression_scores` (mse, rmse, mae, r2). ``accuracy`` and the
binary confusion counts use ``p >= 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.scoring import binary_scores, multiclass_scores, regression_scores
from tools.evaluate.predictor import Predictor
from tools.evaluate.scaling import Scaling

Array = npt.NDArray[Any]
HEADLINE = ("n", "accuracy", "roc_auc", "pr_auc", "log_loss")


def scores(task: str, y: Array, outputs: Array) -> dict[str, Any]:
    """The task's scores of ``outputs`` (as :meth:`Predictor.predict` gives them) against
    labels ``y``, with the headline keys first (None where the task has no such score)."""
    if task == "binary":
        found: dict[str, Any] = dict(binary_scores(y, outputs[:, 1]))
    elif task == "multiclass":
        found = dict(multiclass_scores(y, outputs))
        found.update(roc_auc=found["roc_auc_ovr"], pr_auc=None)
    else:
        found = dict(regression_scores(y, outputs))
        found.update(accuracy=None, roc_auc=None, pr_auc=None, log_loss=None)
    return {**{k: found[k] for k in HEADLINE}, **found}


def document(predictor: Predictor, scaling: Scaling, data: str, label_column: str | None,
             found: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (see the module docstring)."""
    meta = predictor.metadata
    head = {k: found[k] for k in HEADLINE}
    rest = {k: v for k, v in found.items() if k not in HEADLINE}
    return {
        **head, "scaling": scaling.describe(), "task": meta.task, "classes": meta.classes,
        "model": {"file": predictor.model_file, "name": meta.model, "kind": meta.kind,
                  "quantization": meta.quantization},
        "weights": predictor.weights, "data": {"file": data, "label_column": label_column,
                                               "rows": found["n"]},
        **rest,
    }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _matrix(rows: list[list[int]], label: str) -> list[str]:
    k = len(rows)
    width = max(6, *(len(str(v)) + 1 for row in rows for v in row))
    lines = [f"  {'':>8}" + "".join(f"{f'pred {c}':>{width + 1}}" for c in range(k))]
    lines += [f"  {f'true {r}':>8}" + "".join(f"{v:>{width + 1}}" for v in row)
              for r, row in enumerate(rows)]
    return [label, *lines]


def _binary(found: dict[str, Any]) -> list[str]:
    c = found["confusion"]
    lines = [f"n {found['n']}, positives {found['positives']}",
             f"accuracy   {_number(found['accuracy'])}   (p >= 0.5)",
             f"ROC AUC    {_number(found['roc_auc'])}",
             f"PR AUC     {_number(found['pr_auc'])}   (average precision)",
             f"log loss   {_number(found['log_loss'])}",
             f"Brier      {_number(found['brier'])}", ""]
    lines += _matrix([[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
                     "confusion (rows: true class, columns: predicted at p >= 0.5)")
    lines += ["", f"calibration (expected calibration error {found['calibration_error']:.4f})",
              f"  {'predicted p':<12}{'n':>7}{'mean p':>9}{'observed':>10}"]
    for b in found["calibration"]:
        if b["count"]:
            lines.append(f"  {b['lower']:.1f}-{b['upper']:.1f}{'':<5}{b['count']:>7}"
                         f"{b['mean_predicted']:>9.3f}{b['observed_rate']:>10.3f}")
    return lines


def _multiclass(found: dict[str, Any]) -> list[str]:
    lines = [f"n {found['n']}",
             f"accuracy   {_number(found['accuracy'])}   (argmax)",
             f"ROC AUC    {_number(found['roc_auc'])}   (one-vs-rest, macro)",
             f"log loss   {_number(found['log_loss'])}",
             f"macro precision {found['macro_precision']:.4f}, recall "
             f"{found['macro_recall']:.4f}, F1 {found['macro_f1']:.4f}", "",
             f"  {'class':>5}{'precision':>11}{'recall':>9}{'F1':>8}{'support':>9}"]
    lines += [f"  {c['label']:>5}{c['precision']:>11.3f}{c['recall']:>9.3f}{c['f1']:>8.3f}"
              f"{c['support']:>9}" for c in found["per_class"]]
    return [*lines, "", *_matrix(found["confusion"], "confusion (rows: true, columns: "
                                                     "predicted class)")]


def _regression(found: dict[str, Any]) -> list[str]:
    return [f"n {found['n']}", f"MSE   {found['mse']:.6g}", f"RMSE  {found['rmse']:.6g}",
            f"MAE   {found['mae']:.6g}", f"R²    {_number(found['r2'])}"]


def text(doc: dict[str, Any], weights: str, scaling: str) -> str:
    """The printed report of a JSON report (``weights`` and ``scaling``: one line each)."""
    m, d = doc["model"], doc["data"]
    label = f', label column "{d["label_column"]}"' if d["label_column"] else ""
    quantized = ", int8" if m["quantization"] == "int8" else ""
    head = [f"model    {m['file']} ({m['name']}, {doc['task']}, {m['kind']}{quantized})",
            f"weights  {weights}", f"data     {d['file']}: {d['rows']} rows{label}",
            f"scaling  {scaling}", ""]
    body = {"binary": _binary, "multiclass": _multiclass}.get(doc["task"], _regression)(doc)
    return "\n".join(head + body)


def roc_points(y: Array, p: Array) -> tuple[Array, Array]:
    """False and true positive rates of the ROC curve, from (0, 0) to (1, 1)."""
    from edge_client.scoring import counts_at

    labels = np.asarray(y, np.int64)
    tp, fp = counts_at(labels, np.asarray(p, np.float64), np.unique(p))
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    tps = np.concatenate(([0], tp[::-1], [positives])) / max(positives, 1)
    fps = np.concatenate(([0], fp[::-1], [negatives])) / max(negatives, 1)
    return fps, tps
