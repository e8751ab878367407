"""Scores of a model on a labelled test set: what ``fedge evaluate`` prints.

Pure numpy (it runs on the device). Every number follows scikit-learn's definition, and the tests
compare against it; where a definition leaves a choice, this module makes it once:

* a binary prediction is positive when ``p >= t``; accuracy and the confusion counts use
  ``t = 0.5`` (:data:`THRESHOLD`);
* log loss clips probabilities to ``[eps, 1 - eps]`` with eps the float64 machine epsilon
  (scikit-learn's clipping for float64 input), whatever the model's output dtype;
* a score the data cannot define (ROC AUC with one class, average precision without positives,
  R² of constant targets) is ``None``, never NaN;
* per-class precision, recall and F1 are 0 where their denominator is 0 (``zero_division=0``), and
  macro averages run over all ``k`` classes of the model;
* the calibration table has 10 equal-width bins ``(lower, upper]`` (the first includes 0), those
  of scikit-learn's ``calibration_curve``.

The curve maths works on counts at thresholds (:func:`counts_at`, :func:`curve_scores`), so the
same code gives the exact, tie-aware ROC AUC here (one threshold per distinct score) and the
federated one of :mod:`edge_client.score_counts` (a fixed grid shared by all sites).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from edge_client.errors import ValidationError

__all__ = [
    "CALIBRATION_BINS", "EPS", "SUM_TOLERANCE", "THRESHOLD", "BinaryConfusion", "BinaryScores",
    "BinarySums", "CalibrationBin", "ClassScores", "MulticlassScores", "RegressionScores",
    "binary_inputs", "binary_scores", "binary_sums", "confusion_matrix", "counts_at",
    "curve_scores", "multiclass_inputs", "multiclass_log_loss_sum", "multiclass_scores",
    "regression_scores", "scores_from_confusion", "scores_from_sums",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

THRESHOLD = 0.5  # the decision threshold of accuracy and the binary confusion counts
EPS = float(np.finfo(np.float64).eps)  # log-loss clipping, as scikit-learn does for float64
CALIBRATION_BINS = 10  # equal-width bins [0, .1], (.1, .2], ..., (.9, 1], as scikit-learn's
_BIN_EDGES = np.arange(1, CALIBRATION_BINS) / CALIBRATION_BINS  # exact divisions, same everywhere
SUM_TOLERANCE = 1e-3  # a float16/float32 softmax row sums to 1 well within this


class BinaryConfusion(TypedDict):
    """Counts of the rule ``p >= 0.5``: true/false negatives and positives."""

    tn: int
    fp: int
    fn: int
    tp: int


class CalibrationBin(TypedDict):
    """One bin ``(lower, upper]`` of the calibration table (the first bin includes 0)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None  # None when the bin is empty
    observed_rate: float | None  # fraction of positives among the bin's samples


class BinaryScores(TypedDict):
    """What :func:`binary_scores` (and the federated binary scores) report."""

    n: int
    positives: int
    accuracy: float
    roc_auc: float | None
    pr_auc: float | None
    log_loss: float
    brier: float
    calibration: list[CalibrationBin]
    calibration_error: float  # Σ_bins count/n · |mean_predicted − observed_rate|
    confusion: BinaryConfusion


class ClassScores(TypedDict):
    """Precision, recall, F1 and support (true samples) of one class."""

    label: int
    precision: float
    recall: float
    f1: float
    support: int


class MulticlassScores(TypedDict):
    """What :func:`multiclass_scores` (and the federated multiclass scores) report."""

    n: int
    accuracy: float
    log_loss: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class (argmax)
    per_class: list[ClassScores]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    roc_auc_ovr: float | None  # one-vs-rest macro ROC AUC; None unless every class is present


class RegressionScores(TypedDict):
    """What :func:`regression_scores` reports."""

    n: int
    mse: float
    rmse: float
    mae: float
    r2: float | None


@dataclass(frozen=True)
class BinarySums:
    """Everything binary scoring needs besides the curves; sites' sums add up.

    Attributes:
        positives, negatives: samples of each class.
        tp_at_half, fp_at_half: true and false positives of the rule ``p >= 0.5``.
        log_loss_sum: Σ of per-sample log loss (clipped probabilities).
        brier_sum: Σ (p − y)².
        bin_count, bin_positives, bin_predicted: per calibration bin, the samples, the positives
            and Σ p.
    """

    positives: int
    negatives: int
    tp_at_half: int
    fp_at_half: int
    log_loss_sum: float
    brier_sum: float
    bin_count: tuple[int, ...]
    bin_positives: tuple[int, ...]
    bin_predicted: tuple[float, ...]


def _vector(values: Any, name: str) -> Floats:
    """A non-empty, finite float64 vector from ``(n,)`` or ``(n, 1)`` numbers."""
    try:
        a = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValidationError(f"{name}: not an array ({error})") from error
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValidationError(f"{name}: expected shape (n,) or (n, 1), got {a.shape}")
    return _finite(a, name)


def _finite(a: npt.NDArray[Any], name: str) -> Floats:
    if a.dtype.kind not in "biuf":
        raise ValidationError(f"{name}: dtype {a.dtype} is not numeric")
    if a.size == 0:
        raise ValidationError(f"{name}: no samples")
    out = a.astype(np.float64)
    bad = np.argwhere(~np.isfinite(out))
    if len(bad):
        raise ValidationError(f"{name}: non-finite value at index {tuple(map(int, bad[0]))}")
    return out


def _labels(values: Any, name: str, n: int, classes: int) -> Ints:
    """Integer class labels in ``[0, classes)``, one per prediction."""
    a = _vector(values, name)
    if len(a) != n:
        raise ValidationError(f"{name}: {len(a)} labels for {n} predictions")
    bad = np.flatnonzero((a < 0) | (a >= classes) | (a != np.floor(a)))
    if bad.size:
        i = int(bad[0])
        raise ValidationError(f"{name}: label {a[i]:g} at index {i} is not an integer in "
                              f"[0, {classes})")
    return a.astype(np.int64)


def _probabilities(p: Floats, name: str) -> None:
    bad = np.argwhere((p < 0) | (p > 1))
    if len(bad):
        where = tuple(map(int, bad[0]))
        raise ValidationError(f"{name}: {p[where]!r} at index {where} is not a probability "
                              "in [0, 1]")


def binary_inputs(y_true: Any, p_positive: Any) -> tuple[Ints, Floats]:
    """Check labels in {0, 1} and positive-class probabilities, one per sample.

    Raises:
        ValidationError: shapes, lengths, non-numeric or non-finite values, labels not 0/1,
            probabilities outside [0, 1]; the message names the argument and the index.
    """
    p = _vector(p_positive, "p_positive")
    _probabilities(p, "p_positive")
    return _labels(y_true, "y_true", len(p), 2), p


def multiclass_inputs(y_true: Any, probs: Any) -> tuple[Ints, Floats]:
    """Check labels in ``[0, k)`` and an ``(n, k)`` matrix of class probabilities (rows sum to 1).

    Raises:
        ValidationError: as :func:`binary_inputs`, plus ``k < 2`` or a row not summing to 1.
    """
    try:
        raw = np.asarray(probs)
    except ValueError as error:
        raise ValidationError(f"probs: not an array ({error})") from error
    if raw.ndim != 2 or raw.shape[1] < 2:
        raise ValidationError(f"probs: expected shape (n, k) with k >= 2, got {raw.shape}")
    p = _finite(raw, "probs")
    _probabilities(p, "probs")
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1) > SUM_TOLERANCE)
    if off.size:
        i = int(off[0])
        raise ValidationError(f"probs: row {i} sums to {p[i].sum():.6g}, not 1 (softmax output "
                              "expected)")
    return _labels(y_true, "y_true", len(p), p.shape[1]), p


def counts_at(y: Ints, p: Floats, thresholds: Floats) -> tuple[Ints, Ints]:
    """Positives and negatives with ``p >= t``, for each threshold ``t`` (ascending)."""
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    return tp.astype(np.int64), fp.astype(np.int64)


def curve_scores(tp: Ints, fp: Ints, positives: int,
                 negatives: int) -> tuple[float | None, float | None]:
    """ROC AUC and average precision from counts at ascending thresholds.

    The points run from the strictest threshold down, between (0, 0) and (all, all). ROC AUC is
    the trapezoid through them: a positive and a negative between the same two thresholds count
    as a tie (½), so with one threshold per distinct score it is the exact Mann–Whitney AUC.
    Average precision is scikit-learn's ``Σ (R_k − R_{k−1}) · P_k`` over the same points.

    Returns:
        ``(roc_auc, average_precision)``; AUC is None without both classes, AP without positives.
    """
    tps = np.concatenate(([0], tp[::-1], [positives])).astype(np.float64)
    fps = np.concatenate(([0], fp[::-1], [negatives])).astype(np.float64)
    auc = None
    if positives and negatives:
        auc = float(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])) / (2.0 * positives * negatives))
    if not positives:
        return auc, None
    predicted = tps + fps
    precision = np.divide(tps, predicted, out=np.ones_like(tps), where=predicted > 0)
    return auc, float(np.sum(np.diff(tps) * precision[1:]) / positives)


def binary_sums(y: Ints, p: Floats) -> BinarySums:
    """The additive summary of checked labels and probabilities (see :class:`BinarySums`)."""
    positive, predicted = y == 1, p >= THRESHOLD
    log_p = np.where(positive, np.log(np.clip(p, EPS, 1 - EPS)),
                     np.log(np.clip(1 - p, EPS, 1 - EPS)))
    bins = np.searchsorted(_BIN_EDGES, p, side="left")  # p on an edge joins the lower bin
    return BinarySums(
        positives=int(positive.sum()), negatives=int((~positive).sum()),
        tp_at_half=int((predicted & positive).sum()),
        fp_at_half=int((predicted & ~positive).sum()),
        log_loss_sum=-math.fsum(log_p), brier_sum=math.fsum((p - y) ** 2),
        bin_count=tuple(map(int, np.bincount(bins, minlength=CALIBRATION_BINS))),
        bin_positives=tuple(map(int, np.bincount(bins[positive], minlength=CALIBRATION_BINS))),
        bin_predicted=tuple(math.fsum(p[bins == b]) for b in range(CALIBRATION_BINS)),
    )


def scores_from_sums(sums: BinarySums, roc_auc: float | None,
                     pr_auc: float | None) -> BinaryScores:
    """Binary scores from an additive summary and the two curve areas."""
    n = sums.positives + sums.negatives
    if n == 0:
        raise ValidationError("binary scores: no samples")
    tp, fp = sums.tp_at_half, sums.fp_at_half
    tn, fn = sums.negatives - fp, sums.positives - tp
    table: list[CalibrationBin] = [
        CalibrationBin(lower=b / CALIBRATION_BINS, upper=(b + 1) / CALIBRATION_BINS, count=count,
                       mean_predicted=total / count if count else None,
                       observed_rate=pos / count if count else None)
        for b, (count, pos, total) in enumerate(
            zip(sums.bin_count, sums.bin_positives, sums.bin_predicted, strict=True))
    ]
    gap = math.fsum(abs(t - pos) for pos, t in zip(sums.bin_positives, sums.bin_predicted,
                                                   strict=True))
    return BinaryScores(
        n=n, positives=sums.positives, accuracy=(tp + tn) / n, roc_auc=roc_auc,
        pr_auc=pr_auc, log_loss=sums.log_loss_sum / n, brier=sums.brier_sum / n,
        calibration=table, calibration_error=gap / n,
        confusion=BinaryConfusion(tn=tn, fp=fp, fn=fn, tp=tp),
    )


def binary_scores(y_true: Any, p_positive: Any) -> BinaryScores:
    """Score positive-class probabilities against labels in {0, 1}.

    ``accuracy`` and ``confusion`` use ``p >= 0.5``; ``roc_auc`` is exact and tie-aware;
    ``pr_auc`` is average precision (scikit-learn's ``average_precision_score``); ``log_loss`` is
    the mean cross-entropy of clipped probabilities; ``brier`` the mean of (p − y)²;
    ``calibration`` has 10 equal-width bins, empty ones with count 0.

    Raises:
        ValidationError: see :func:`binary_inputs`.
    """
    y, p = binary_inputs(y_true, p_positive)
    sums = binary_sums(y, p)
    tp, fp = counts_at(y, p, np.unique(p))
    return scores_from_sums(sums, *curve_scores(tp, fp, sums.positives, sums.negatives))


def confusion_matrix(y: Ints, predicted: Ints, k: int) -> Ints:
    """The ``k × k`` counts of (true class, predicted class); rows are the true class."""
    return np.bincount(y * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)


def _ratio(num: Ints, den: Ints) -> Floats:
    """``num / den`` elementwise, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    return np.divide(num, den, out=out, where=den > 0)


def scores_from_confusion(confusion: Ints, log_loss_sum: float,
                          roc_auc_ovr: float | None = None) -> MulticlassScores:
    """Multiclass scores from a confusion matrix (rows true) and the summed log loss."""
    n = int(confusion.sum())
    if n == 0:
        raise ValidationError("multiclass scores: no samples")
    tp, predicted, support = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)  # = 2PR / (P + R), and 0 where that is undefined
    per_class = [ClassScores(label=c, precision=float(precision[c]), recall=float(recall[c]),
                             f1=float(f1[c]), support=int(support[c]))
                 for c in range(len(confusion))]
    return MulticlassScores(
        n=n, accuracy=int(tp.sum()) / n, log_loss=log_loss_sum / n,
        confusion=confusion.tolist(), per_class=per_class,
        macro_precision=float(precision.mean()), macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()), roc_auc_ovr=roc_auc_ovr,
    )


def multiclass_log_loss_sum(y: Ints, p: Floats) -> float:
    """Σ −log of each sample's clipped probability of its true class."""
    return -math.fsum(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1 - EPS)))


def multiclass_scores(y_true: Any, probs: Any) -> MulticlassScores:
    """Score an ``(n, k)`` matrix of class probabilities against labels in ``[0, k)``.

    The predicted class is the argmax (the first on ties). ``roc_auc_ovr`` is the mean over
    classes of the exact ROC AUC of "class c" against the rest (scikit-learn's
    ``multi_class="ovr"``, macro), None unless every class occurs and none is everything.

    Raises:
        ValidationError: see :func:`multiclass_inputs`.
    """
    y, p = multiclass_inputs(y_true, probs)
    k = p.shape[1]
    aucs = []
    for c in range(k):
        is_c = (y == c).astype(np.int64)
        tp, fp = counts_at(is_c, p[:, c], np.unique(p[:, c]))
        aucs.append(curve_scores(tp, fp, int(is_c.sum()), int(len(y) - is_c.sum()))[0])
    ovr = None if None in aucs else math.fsum(a for a in aucs if a is not None) / k
    cm = confusion_matrix(y, np.argmax(p, axis=1).astype(np.int64), k)
    return scores_from_confusion(cm, multiclass_log_loss_sum(y, p), ovr)


def regression_scores(y_true: Any, y_pred: Any) -> RegressionScores:
    """Mean squared error, its root, mean absolute error and R² of predictions.

    ``r2`` is ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²``, None when every target is the same, or their
    spread underflows to 0 (scikit-learn then reports 1.0 or 0.0 by convention).

    Raises:
        ValidationError: shapes, lengths, non-numeric or non-finite values.
    """
    pred = _vector(y_pred, "y_pred")
    y = _vector(y_true, "y_true")
    if len(y) != len(pred):
        raise ValidationError(f"y_true: {len(y)} targets for {len(pred)} predictions")
    err = pred - y
    mse = float(np.mean(err**2))
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / spread if np.any(y != y[0]) and spread > 0 else None
    return RegressionScores(n=len(y), mse=mse, rmse=math.sqrt(mse),
                            mae=float(np.mean(np.abs(err))), r2=r2)
