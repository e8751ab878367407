"""Local evaluation scores equal scikit-learn's on the same predictions, ties and edge cases too."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
)

from edge_client.errors import ValidationError
from edge_client.scoring import binary_scores, multiclass_scores, regression_scores

TOL = 1e-9


def _binary_case(seed: int, n: int, prevalence: float, decimals: int | None
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels and logistic scores; rounding to ``decimals`` makes many ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) * 2 + 1.5 * y - 1)))
    return y, (p if decimals is None else np.round(p, decimals))


def _assert_binary_like_sklearn(y: Any, p: Any) -> None:
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    s = binary_scores(y, p)
    predicted = (p >= 0.5).astype(int)
    assert s["n"] == len(y) and s["positives"] == int(y.sum())
    assert s["accuracy"] == accuracy_score(y, predicted)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    assert s["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert s["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=TOL, abs=TOL)
    assert s["brier"] == pytest.approx(brier_score_loss(y, p, pos_label=1), abs=TOL)
    if 0 < y.sum() < len(y):
        assert s["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=TOL)
    else:
        assert s["roc_auc"] is None
    if y.sum():
        assert s["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=TOL)
    else:
        assert s["pr_auc"] is None


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("prevalence", [0.03, 0.5])
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_binary_scores_equal_sklearn(seed: int, prevalence: float, decimals: int | None) -> None:
    _assert_binary_like_sklearn(*_binary_case(seed, 700, prevalence, decimals))


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1),
                          st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
                                    st.floats(0, 1))),
                min_size=1, max_size=60))
def test_binary_scores_equal_sklearn_on_any_data(rows: list[tuple[int, float]]) -> None:
    y, p = zip(*rows, strict=True)
    _assert_binary_like_sklearn(list(y), list(p))


def test_calibration_table_matches_sklearn_calibration_curve() -> None:
    y, p = _binary_case(7, 2000, 0.3, None)
    s = binary_scores(y, p)
    table = [b for b in s["calibration"] if b["count"]]
    rate, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert len(s["calibration"]) == 10 and sum(b["count"] for b in s["calibration"]) == 2000
    assert [b["observed_rate"] for b in table] == pytest.approx(rate, abs=TOL)
    assert [b["mean_predicted"] for b in table] == pytest.approx(mean, abs=TOL)
    gap = 0.0
    for b in table:
        assert b["mean_predicted"] is not None and b["observed_rate"] is not None
        gap += b["count"] * abs(b["mean_predicted"] - b["observed_rate"]) / 2000
    assert s["calibration_error"] == pytest.approx(gap, abs=TOL)


def test_empty_calibration_bins_have_count_zero_and_no_means() -> None:
    s = binary_scores([0, 1, 1], [0.05, 0.95, 1.0])
    assert [b["count"] for b in s["calibration"]] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert s["calibration"][1]["mean_predicted"] is None
    assert s["calibration"][1]["observed_rate"] is None
    assert s["calibration"][9] == {"lower": 0.9, "upper": 1.0, "count": 2,
                                   "mean_predicted": 0.975, "observed_rate": 1.0}


def test_probability_on_a_bin_edge_joins_the_lower_bin() -> None:
    s = binary_scores([0, 1], [0.0, 0.3])
    assert s["calibration"][0]["count"] == 1 and s["calibration"][2]["count"] == 1


def test_threshold_half_counts_as_positive() -> None:
    s = binary_scores([1, 0], [0.5, 0.4999999])
    assert s["accuracy"] == 1.0 and s["confusion"]["tp"] == 1


def test_single_class_leaves_curves_undefined_not_nan() -> None:
    negatives = binary_scores([0, 0, 0], [0.1, 0.6, 0.2])
    assert negatives["roc_auc"] is None and negatives["pr_auc"] is None
    assert negatives["accuracy"] == pytest.approx(2 / 3)
    positives = binary_scores([1, 1], [0.1, 0.9])
    assert positives["roc_auc"] is None and positives["pr_auc"] == 1.0


def test_extreme_probabilities_are_clipped_like_sklearn() -> None:
    y, p = [1, 0, 1, 0], [0.0, 1.0, 1.0, 0.0]
    s = binary_scores(y, p)
    assert math.isfinite(s["log_loss"])
    assert s["log_loss"] == pytest.approx(log_loss(y, p), rel=TOL)


def test_column_vectors_booleans_and_float32_are_accepted() -> None:
    y, p = _binary_case(3, 50, 0.4, 2)
    a = binary_scores(y, p)
    assert binary_scores(y.astype(bool)[:, None], p[:, None]) == a
    single = binary_scores(y, p.astype(np.float32))  # a TFLite output, rounded: same ranking
    assert (single["accuracy"], single["roc_auc"]) == (a["accuracy"], a["roc_auc"])


@pytest.mark.parametrize(("y", "p", "message"), [
    ([0, 1], [0.2], r"y_true: 2 labels for 1 predictions"),
    ([0, 1], [[0.2, 0.8], [0.5, 0.5]], r"p_positive: expected shape \(n,\)"),
    ([0, 1], [0.2, float("nan")], r"p_positive: non-finite value at index \(1,\)"),
    ([0, 1], [0.2, 1.5], r"p_positive: 1\.5 at index \(1,\) is not a probability"),
    ([0, 1], [-0.1, 0.5], r"p_positive: -0\.1 at index \(0,\)"),
    ([0, 2], [0.2, 0.5], r"y_true: label 2 at index 1 is not an integer in \[0, 2\)"),
    ([0, 0.5], [0.2, 0.5], r"y_true: label 0\.5 at index 1"),
    (["a", "b"], [0.2, 0.5], r"y_true: dtype <U1 is not numeric"),
    ([], [], r"p_positive: no samples"),
    ([0, 1], [[0.1], [0.2, 0.3]], r"p_positive: not an array"),
])
def test_binary_inputs_are_checked(y: Any, p: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        binary_scores(y, p)


def _probabilities(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Rows of small integer weights normalised: many ties, rows sum to 1."""
    counts = counts + (counts.sum(axis=1, keepdims=True) == 0)
    rows: npt.NDArray[np.float64] = counts / counts.sum(axis=1, keepdims=True)
    return rows


def _assert_multiclass_like_sklearn(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> None:
    k = p.shape[1]
    labels = list(range(k))
    s = multiclass_scores(y, p)
    predicted = np.argmax(p, axis=1)
    assert s["n"] == len(y)
    assert s["accuracy"] == accuracy_score(y, predicted)
    assert s["log_loss"] == pytest.approx(log_loss(y, p, labels=labels), rel=TOL, abs=TOL)
    assert s["confusion"] == confusion_matrix(y, predicted, labels=labels).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    assert [c["precision"] for c in s["per_class"]] == pytest.approx(precision, abs=TOL)
    assert [c["recall"] for c in s["per_class"]] == pytest.approx(recall, abs=TOL)
    assert [c["f1"] for c in s["per_class"]] == pytest.approx(f1, abs=TOL)
    assert [c["support"] for c in s["per_class"]] == support.tolist()
    macro = precision_recall_fscore_support(y, predicted, labels=labels, average="macro",
                                            zero_division=0)
    assert (s["macro_precision"], s["macro_recall"], s["macro_f1"]) == pytest.approx(
        macro[:3], abs=TOL)
    if len(set(y.tolist())) == k:
        # with two classes scikit-learn wants the positive column, and both OvR AUCs equal it
        ovr = roc_auc_score(y, p[:, 1]) if k == 2 else roc_auc_score(
            y, p, multi_class="ovr", labels=labels)
        assert s["roc_auc_ovr"] == pytest.approx(ovr, abs=TOL)
    else:
        assert s["roc_auc_ovr"] is None


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_multiclass_scores_equal_sklearn(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, 500)
    logits = rng.normal(size=(500, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    _assert_multiclass_like_sklearn(y, p)
    _assert_multiclass_like_sklearn(y, _probabilities(rng.integers(0, 3, (500, k))))


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.lists(
    st.tuples(st.integers(0, k - 1), st.lists(st.integers(0, 3), min_size=k, max_size=k)),
    min_size=1, max_size=40)))
def test_multiclass_scores_equal_sklearn_on_any_data(rows: list[tuple[int, list[int]]]) -> None:
    y = np.array([r[0] for r in rows])
    _assert_multiclass_like_sklearn(y, _probabilities(np.array([r[1] for r in rows])))


def test_absent_class_scores_zero_and_leaves_ovr_auc_undefined() -> None:
    s = multiclass_scores([0, 1, 0], [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    assert s["per_class"][2] == {"label": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                 "support": 0}
    assert s["roc_auc_ovr"] is None and s["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize(("y", "p", "message"), [
    ([0], [0.5, 0.5], r"probs: expected shape \(n, k\) with k >= 2"),
    ([0], [[1.0]], r"probs: expected shape \(n, k\) with k >= 2, got \(1, 1\)"),
    ([0, 1], [[0.5, 0.5]], r"y_true: 2 labels for 1 predictions"),
    ([3], [[0.5, 0.5]], r"y_true: label 3 at index 0 is not an integer in \[0, 2\)"),
    ([0, 1], [[0.5, 0.5], [0.6, 0.6]], r"probs: row 1 sums to 1\.2"),
    ([0], [[1.2, -0.2]], r"probs: 1\.2 at index \(0, 0\) is not a probability"),
    ([0], [[np.inf, 0.0]], r"probs: non-finite value at index \(0, 0\)"),
])
def test_multiclass_inputs_are_checked(y: Any, p: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        multiclass_scores(y, p)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1,
                max_size=50))
def test_regression_scores_equal_sklearn(rows: list[tuple[float, float]]) -> None:
    y, pred = (np.array(v) for v in zip(*rows, strict=True))
    s = regression_scores(y, pred)
    mse = mean_squared_error(y, pred)
    assert s["n"] == len(y)
    assert s["mse"] == pytest.approx(mse, rel=TOL, abs=TOL)
    assert s["rmse"] == pytest.approx(math.sqrt(mse), rel=TOL, abs=TOL)
    assert s["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=TOL, abs=TOL)
    if np.all(y == y[0]) or np.sum((y - y.mean()) ** 2) == 0:
        assert s["r2"] is None
    else:
        assert s["r2"] == pytest.approx(r2_score(y, pred), rel=TOL, abs=TOL)


def test_regression_of_constant_targets_has_no_r2() -> None:
    assert regression_scores([0.1, 0.1, 0.1], [0.1, 0.2, 0.0])["r2"] is None


def test_regression_inputs_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"y_true: 2 targets for 3 predictions"):
        regression_scores([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValidationError, match=r"y_pred: non-finite value at index \(0,\)"):
        regression_scores([1.0], [float("nan")])
