"""Federated evaluation: sites' counts add up exactly, and their AUC is the pooled one's to 0.01."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import struct
from fractions import Fraction
from typing import Any

import cbor2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from edge_client.errors import ValidationError
from edge_client.protocol.limits import MAX_CONTROL_BYTES
from edge_client.score_counts import (
    DEFAULT_GRID,
    MAX_COUNT,
    ConfusionCounts,
    ThresholdCounts,
    combine,
    confusion_counts,
    counts_from_dict,
    odds_grid,
    scores_from_counts,
    threshold_counts,
    uniform_grid,
)
from edge_client.scoring import BinarySums, binary_scores, multiclass_scores

Labels = npt.NDArray[np.int64]
Probs = npt.NDArray[np.float64]


def _model_scores(seed: int, n: int, prevalence: float, separation: float, scale: float,
                  offset: float) -> tuple[Labels, Probs]:
    """A logistic model's float32 scores: ``scale`` sets its confidence, ``offset`` its bias."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    logit = scale * (rng.normal(size=n) + separation * (y - 0.5)) + offset
    return y, (1 / (1 + np.exp(-logit))).astype(np.float32).astype(np.float64)


def _sites(seed: int, n: int) -> list[npt.NDArray[np.intp]]:
    """Indices of 3 to 5 sites of unequal, random sizes."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(2, 5)), replace=False))
    return np.split(rng.permutation(n), cuts)


def _rounded_down(p: Probs, grid: tuple[float, ...]) -> Probs:
    """Each score replaced by the largest threshold it reaches (-1 below them all)."""
    g = np.asarray(grid)
    i = np.searchsorted(g, p, side="right") - 1
    return np.where(i >= 0, g[np.maximum(i, 0)], -1.0)


@pytest.mark.parametrize(("prevalence", "separation", "scale", "offset"), [
    (0.5, 1.0, 1.0, 0.0), (0.5, 3.0, 3.0, 0.0), (0.3, 2.0, 10.0, -2.0), (0.1, 2.0, 1.0, -3.0),
    (0.05, 1.0, 3.0, -4.0), (0.02, 3.0, 1.0, -4.0), (0.02, 2.0, 10.0, -4.0), (0.1, 0.3, 0.3, 0.0),
    (0.5, 5.0, 10.0, 0.0), (0.2, 1.0, 0.3, -3.0), (0.5, 8.0, 3.0, 2.0), (0.01, 4.0, 3.0, -6.0),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_federated_auc_is_within_001_of_pooled_and_accuracy_exact(
        prevalence: float, separation: float, scale: float, offset: float, seed: int) -> None:
    y, p = _model_scores(seed, 3000, prevalence, separation, scale, offset)
    total = combine(*(threshold_counts(y[i], p[i]) for i in _sites(seed, len(y))))
    federated, pooled = scores_from_counts(total), binary_scores(y, p)
    assert federated["roc_auc"] is not None and federated["pr_auc"] is not None
    assert abs(federated["roc_auc"] - roc_auc_score(y, p)) < 0.01
    assert abs(federated["pr_auc"] - average_precision_score(y, p)) < 0.02
    assert federated["accuracy"] == accuracy_score(y, p >= 0.5)
    for exact in ("n", "positives", "accuracy", "confusion"):
        assert federated[exact] == pooled[exact]
    for site_bin, pooled_bin in zip(federated["calibration"], pooled["calibration"], strict=True):
        assert site_bin["count"] == pooled_bin["count"]
        assert site_bin["observed_rate"] == pooled_bin["observed_rate"]
        mean = pooled_bin["mean_predicted"]
        expected = None if mean is None else pytest.approx(mean, rel=1e-12)
        assert site_bin["mean_predicted"] == expected
    for summed in ("log_loss", "brier", "calibration_error"):
        assert federated[summed] == pytest.approx(pooled[summed], rel=1e-12)


def test_default_grid_holds_where_an_equal_width_grid_does_not() -> None:
    """Rare positives crowd the scores below 0.01: 201 equal-width thresholds lump them."""
    y, p = _model_scores(3, 4000, 0.02, 2.0, 1.0, -6.0)
    exact = roc_auc_score(y, p)
    coarse = scores_from_counts(threshold_counts(y, p, uniform_grid(201)))["roc_auc"]
    default = scores_from_counts(threshold_counts(y, p))["roc_auc"]
    assert coarse is not None and default is not None
    assert abs(coarse - exact) > 0.01 > 0.002 > abs(default - exact)


grids = st.sampled_from([DEFAULT_GRID, uniform_grid(11), (0.2, 0.5, 0.9), (0.5,), (0.0, 1.0)])
labelled = st.lists(st.tuples(st.integers(0, 1), st.one_of(
    st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), st.floats(0, 1))), min_size=1, max_size=50)


@settings(max_examples=120, deadline=None)
@given(labelled, grids)
def test_grid_curves_are_those_of_scores_rounded_down_to_the_grid(
        rows: list[tuple[int, float]], grid: tuple[float, ...]) -> None:
    y, p = (np.array(v) for v in zip(*rows, strict=True))
    s = scores_from_counts(threshold_counts(y, p, grid))
    q = _rounded_down(p, grid)
    if 0 < y.sum() < len(y):
        assert s["roc_auc"] == pytest.approx(roc_auc_score(y, q), abs=1e-9)
    else:
        assert s["roc_auc"] is None
    if y.sum():
        assert s["pr_auc"] == pytest.approx(average_precision_score(y, q), abs=1e-9)
    assert s["accuracy"] == accuracy_score(y, p >= 0.5)


def _columns(rows: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [r[0] for r in rows], [r[1] for r in rows]


@settings(max_examples=60, deadline=None)
@given(st.lists(labelled, min_size=1, max_size=5), grids)
def test_combining_sites_is_exact_and_order_independent(
        sites: list[list[tuple[int, float]]], grid: tuple[float, ...]) -> None:
    counts = [threshold_counts(*_columns(rows), grid) for rows in sites]
    total = combine(*counts)
    for order in itertools.islice(itertools.permutations(counts), 24):
        assert combine(*order) == total  # floats too: fsum does not depend on the order
    pooled = threshold_counts(*_columns(list(itertools.chain(*sites))), grid)
    assert (total.tp, total.fp, total.tn, total.fn) == (pooled.tp, pooled.fp, pooled.tn,
                                                        pooled.fn)
    for name in ("positives", "negatives", "tp_at_half", "fp_at_half", "bin_count",
                 "bin_positives"):
        assert getattr(total.sums, name) == getattr(pooled.sums, name)
    assert total.sums.log_loss_sum == pytest.approx(pooled.sums.log_loss_sum, rel=1e-12)


def test_counts_per_threshold_are_the_confusion_of_p_at_least_t() -> None:
    y, p = _model_scores(5, 500, 0.3, 1.0, 2.0, 0.0)
    c = threshold_counts(y, p, (0.0, 0.25, 0.5, 0.75, 1.0))
    for i, t in enumerate(c.grid):
        predicted = p >= t
        assert c.tp[i] == np.sum(predicted & (y == 1)) and c.fp[i] == np.sum(predicted & (y == 0))
        assert c.tn[i] == np.sum(~predicted & (y == 0)) and c.fn[i] == np.sum(~predicted & (y == 1))
    assert c.n == 500


def test_a_site_with_one_class_still_adds_up() -> None:
    y, p = _model_scores(6, 900, 0.4, 2.0, 2.0, 0.0)
    negatives_only = threshold_counts(np.zeros(40, dtype=int), np.linspace(0, 0.6, 40))
    alone = scores_from_counts(negatives_only)
    assert alone["roc_auc"] is None and alone["pr_auc"] is None
    total = combine(threshold_counts(y, p), negatives_only)
    both_y = np.r_[y, np.zeros(40, dtype=int)]
    both_p = np.r_[p, np.linspace(0, 0.6, 40)]
    assert scores_from_counts(total)["accuracy"] == accuracy_score(both_y, both_p >= 0.5)
    assert abs(scores_from_counts(total)["roc_auc"] - roc_auc_score(both_y, both_p)) < 0.01


def test_combine_rejects_different_grids_and_kinds() -> None:
    y, p = [0, 1, 1], [0.2, 0.7, 0.4]
    a, b = threshold_counts(y, p), threshold_counts(y, p, uniform_grid(101))
    with pytest.raises(ValidationError, match=r"site 1's threshold grid differs .*101 vs 771"):
        combine(a, b)
    c = threshold_counts(y, p, (*uniform_grid(11)[:-1], 0.95))
    with pytest.raises(ValidationError, match=r"11 vs 11 thresholds, first at index 10"):
        combine(threshold_counts(y, p, uniform_grid(11)), c)
    m = confusion_counts([0, 1], [[0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(ValidationError, match="1 binary, 1 multiclass and 0 other"):
        combine(a, m)  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="1 binary, 0 multiclass and 1 other"):
        combine(a, a.to_dict())  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="site 1 has 3 classes, site 0 has 2"):
        combine(m, confusion_counts([0], [[0.2, 0.3, 0.5]]))
    with pytest.raises(ValidationError, match="0 binary, 0 multiclass and 0 other"):
        combine()


def test_combine_refuses_totals_beyond_exact_integers() -> None:
    big = ThresholdCounts((0.0,), (MAX_COUNT,), (0,), BinarySums(
        MAX_COUNT, 0, MAX_COUNT, 0, 0.0, 0.0, (MAX_COUNT,) + (0,) * 9, (MAX_COUNT,) + (0,) * 9,
        (0.0,) * 10))
    with pytest.raises(ValidationError, match="positives"):
        combine(big, big)


def test_multiclass_counts_add_up_to_the_pooled_scores() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, 1000)
    logits = rng.normal(size=(1000, 4)) + 2 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    total = combine(*(confusion_counts(y[i], p[i]) for i in _sites(8, 1000)))
    federated, pooled = scores_from_counts(total), multiclass_scores(y, p)
    assert federated["roc_auc_ovr"] is None
    assert federated["log_loss"] == pytest.approx(pooled["log_loss"], rel=1e-12)
    for key in ("n", "accuracy", "confusion", "per_class", "macro_precision", "macro_recall",
                "macro_f1"):
        assert federated[key] == pooled[key]
    assert total.k == 4 and total.n == 1000


def test_no_samples_is_an_error_not_nan() -> None:
    empty = ConfusionCounts(((0, 0), (0, 0)), 0.0)
    with pytest.raises(ValidationError, match="no samples"):
        scores_from_counts(empty)


def _small() -> dict[str, Any]:
    """Counts of 5 samples at 5 thresholds: tp (3, 3, 2, 1, 0), fp (2, 1, 1, 0, 0)."""
    c = threshold_counts([0, 1, 1, 0, 1], [0.1, 0.4, 0.6, 0.7, 0.9], uniform_grid(5))
    assert c.tp == (3, 3, 2, 1, 0) and c.fp == (2, 1, 1, 0, 0)
    return c.to_dict()


def test_counts_round_trip_through_json_and_cbor() -> None:
    y, p = _model_scores(9, 2000, 0.2, 2.0, 3.0, -1.0)
    for counts in (threshold_counts(y, p), confusion_counts(y, np.c_[1 - p, p])):
        d = counts.to_dict()
        for wire in (json.dumps(d).encode(), cbor2.dumps(d)):
            assert len(wire) < MAX_CONTROL_BYTES // 4
        assert counts_from_dict(json.loads(json.dumps(d))) == counts
        assert counts_from_dict(cbor2.loads(cbor2.dumps(d))) == counts
    assert ThresholdCounts.from_dict(_small()).to_dict() == _small()


def _set(key: str, value: Any) -> dict[str, Any]:
    d = _small()
    d[key] = value
    return d


def _set_item(key: str, index: int, value: Any) -> dict[str, Any]:
    d = _small()
    d[key][index] = value
    return d


def _with_unknown_keys() -> dict[Any, Any]:
    d: dict[Any, Any] = _small()
    d.update({"extra": 1, 3: 4})
    return d


def _without(key: str) -> dict[str, Any]:
    d = _small()
    del d[key]
    return d


@pytest.mark.parametrize(("obj", "message"), [
    ([1, 2], r"expected a mapping, got list"),
    (_set("format", "fedge-threshold-counts/2"), r"format: expected"),
    (_without("tp"), r"missing keys \[tp\], unknown keys \[\]"),
    (_with_unknown_keys(), r"missing keys \[\], unknown keys \['extra', 3\]"),
    (_set("positives", -1), r"positives: expected an integer"),
    (_set("positives", True), r"positives: expected an integer"),
    (_set("positives", 3.0), r"positives: expected an integer"),
    (_set("positives", 2**60), r"positives: expected an integer in \[0, 9007199254740992\]"),
    (_set("tp", [3, 2, 3, 1, 0]), r"tp\[2\]: expected an integer in \[0, 2\], got 3"),
    (_set("tp", [4, 3, 2, 1, 0]), r"tp\[0\]: expected an integer in \[0, 3\], got 4"),
    (_set("tp", [3, 3, 2, 1]), r"tp: 4 entries, expected 5"),
    (_set("tp", [2, 2, 2, 1, 0]), r"tp\[0\]: 2 at threshold 0, expected 3"),
    (_set("fp", "22110"), r"fp: expected a list, got str"),
    (_set("grid", [0.0, 0.5, 0.25, 0.75, 1.0]), r"grid\[2\]: 0\.25 does not exceed grid\[1\]"),
    (_set_item("grid", 4, 1.5), r"grid\[4\]: expected a number in \[0, 1\]"),
    (_set_item("grid", 1, float("nan")), r"grid\[1\]"),
    (_set_item("grid", 1, "0.25"), r"grid\[1\]"),
    (_set("grid", [0.0] * 3000), r"grid: 3000 entries, at most 2048"),
    (_set("grid", []), r"grid: no thresholds"),
    (_set("bin_count", [1] * 9), r"bin_count: 9 entries, expected 10"),
    (_set_item("bin_count", 0, 2), r"bin_count, bin_positives: do not add up"),
    (_set_item("bin_positives", 1, 1), r"bin_positives\[1\]: expected an integer in \[0, 0\]"),
    (_set("log_loss_sum", -0.5), r"log_loss_sum"),
    (_set("log_loss_sum", float("inf")), r"log_loss_sum"),
    (_set("log_loss_sum", 1e9), r"log_loss_sum: expected a number in \[0, 180\.2"),
    (_set("brier_sum", 5.5), r"brier_sum"),
    (_set_item("bin_predicted", 9, 5.0), r"bin_predicted\[9\]"),
    (_set_item("bin_predicted", 8, 0.2), r"bin_predicted\[8\]: 0\.2 is below 1 × 0\.8"),
    (_set("tp_at_half", 4), r"tp_at_half: expected an integer in \[0, 3\]"),
    (_set("tp_at_half", 1), r"tp\[2\], fp\[2\]: differ from tp_at_half, fp_at_half"),
])
def test_malformed_threshold_counts_are_rejected_naming_the_field(obj: Any,
                                                                   message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        counts_from_dict(obj)


def _confusion(matrix: Any, loss: Any = 0.5) -> dict[str, Any]:
    return {"format": "fedge-confusion-counts/1", "matrix": matrix, "log_loss_sum": loss}


@pytest.mark.parametrize(("obj", "message"), [
    (_confusion([[1, 0], [0]]), r"matrix\[1\]: 1 entries, expected 2"),
    (_confusion([[1]]), r"matrix: 1 classes, at least 2 expected"),
    (_confusion([[1, -1], [0, 1]]), r"matrix\[0\]\[1\]: expected an integer"),
    (_confusion([[1, 0], 7]), r"matrix\[1\]: expected a list, got int"),
    (_confusion([[0] * 101] * 101), r"matrix: 101 entries, at most 100"),
    (_confusion([[1, 0], [0, 1]], 100.0), r"log_loss_sum: expected a number in \[0, 72\.0"),
    (_confusion([[1, 0], [0, 1]], None), r"log_loss_sum"),
    ({"format": "fedge-other/1"}, r"format: expected one of"),
])
def test_malformed_confusion_counts_are_rejected_naming_the_field(obj: Any,
                                                                   message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        counts_from_dict(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=20)


SMALL = _small()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SMALL)), json_values, st.booleans())
def test_any_corrupted_counts_raise_only_validation_error(key: str, value: Any,
                                                          in_list: bool) -> None:
    d = copy.deepcopy(SMALL)
    if in_list and isinstance(d[key], list):
        d[key][0] = value
    else:
        d[key] = value
    with contextlib.suppress(ValidationError):
        counts_from_dict(d)


def test_default_grid_is_the_documented_log_odds_grid() -> None:
    g = DEFAULT_GRID
    assert len(g) == 771 and g == odds_grid(16, 24)
    assert all(a < b for a, b in itertools.pairwise(g))
    assert g[0] == 0.0 and g[-1] == 1.0 and 0.5 in g
    for q in range(1, 25):  # whole octaves are exact rationals: 1 / (1 + 2^q)
        assert float(Fraction(1, 1 + 2**q)) in g and float(Fraction(2**q, 1 + 2**q)) in g
    assert all(abs(a + b - 1) <= 2**-53 for a, b in zip(g, reversed(g), strict=True))
    # bit-identical everywhere: a device whose grid differs could not be combined
    digest = hashlib.sha256(struct.pack(f"<{len(g)}d", *g)).hexdigest()
    assert digest == GOLDEN_GRID_SHA256


GOLDEN_GRID_SHA256 = "d874b707c5e1926ef77c74506afd204bd892c22d1815815e0479e5f06184c623"


def test_grid_builders_check_their_arguments() -> None:
    assert uniform_grid(5) == (0.0, 0.25, 0.5, 0.75, 1.0) and 0.5 in uniform_grid(201)
    with pytest.raises(ValidationError, match="uniform grid: size 1"):
        uniform_grid(1)
    with pytest.raises(ValidationError, match="odds grid of 64 × 24"):
        odds_grid(64, 24)
    with pytest.raises(ValidationError, match=r"grid\[1\]: 0\.1 does not exceed"):
        threshold_counts([0, 1], [0.2, 0.6], (0.5, 0.1))
    with pytest.raises(ValidationError, match=r"grid: expected a flat sequence, got shape"):
        threshold_counts([0, 1], [0.2, 0.6], [[0.5]])  # type: ignore[list-item]
    as_array = threshold_counts([0, 1], [0.2, 0.6], np.array(uniform_grid(5)))
    assert as_array.grid == uniform_grid(5) and type(as_array.grid[0]) is float
