"""Tests of edge_client/feature_stats.py: site summaries add up to the pooled statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_client.feature_stats import (
    combine,
    histogram,
    layout_sha256,
    median_from_bins,
    published_bins,
    site_summaries,
)
from edge_client.protocol import FeatureSummary
from edge_client.schema import HISTOGRAM_BINS, Feature, Schema

SCHEMA = Schema((Feature("age", low=20.0, high=90.0), Feature("chol", low=100.0, high=300.0),
                 Feature("sex", kind="categorical", categories=("F", "M"))),
                "outcome", ("no", "yes"))


def _site(path: Path, n: int, seed: int, shift: float) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["chol,sex,outcome,age,extra"]
    for i in range(n):
        age = f"{rng.normal(55 + shift, 12):.3f}" if i % 5 else ""
        chol = repr(float(rng.normal(200 + 10 * shift, 35)))
        lines.append(f"{chol},{'FMX'[i % 3]},{'yes' if i % 4 else 'no'},{age},{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _pooled(paths: list[Path], column: str) -> np.ndarray:
    values = []
    for path in paths:
        rows = [line.split(",") for line in path.read_text().splitlines()]
        i = rows[0].index(column)
        values += [float(r[i]) for r in rows[1:] if r[i]]
    return np.array(values)


def test_federated_mean_and_std_equal_the_pooled_ones(tmp_path: Path) -> None:
    paths = [_site(tmp_path / f"s{i}.csv", n, i, shift)
             for i, (n, shift) in enumerate([(130, 0.0), (57, 8.0), (401, -5.0)])]
    reports = [site_summaries(p, SCHEMA, min_count=10)[1] for p in paths]
    combined = {c.name: c for c in combine(reports)}
    for name in ("age", "chol"):
        pooled = _pooled(paths, name)
        c = combined[name]
        assert c.count == len(pooled) and c.sites == 3
        assert c.mean == pytest.approx(pooled.mean(), rel=1e-9, abs=1e-9)
        assert c.std == pytest.approx(pooled.std(), rel=1e-9, abs=1e-9)
        assert (c.low, c.high) == (pooled.min(), pooled.max())
        f = next(f for f in SCHEMA.features if f.name == name)
        np.testing.assert_array_equal(c.bins, histogram(pooled, f.low, f.high))
    assert combined["age"].missing == sum(-(-n // 5) for n in (130, 57, 401))
    # sex: F, M, then unseen X; outcome: no, yes
    assert combined["sex"].bins == tuple(sum(len(range(k, n, 3)) for n in (130, 57, 401))
                                         for k in range(3))
    assert combined["outcome"].bins[0] == sum(len(range(0, n, 4)) for n in (130, 57, 401))


def test_a_column_is_reported_at_min_count_values_and_suppressed_below(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    ages = ["30"] * 10 + [""] * 5
    chols = ["200"] * 9 + [""] * 6
    path.write_text("age,chol,sex,outcome\n" + "".join(
        f"{a},{c},F,no\n" for a, c in zip(ages, chols, strict=True)))
    rows, kept, small = site_summaries(path, SCHEMA, min_count=10)
    assert rows == 15
    assert [s.name for s in kept] == ["age", "sex", "outcome"] and small == ("chol",)
    assert kept[0].count == 10 and kept[0].missing == 5
    assert published_bins([9, 10, 0, 1], 10) == [None, 10, 0, None]


def test_histogram_edges_and_the_median_from_bins() -> None:
    values = np.array([19.0, 20.0, 26.99, 27.0, 90.0, 90.5])
    counts = histogram(values, 20.0, 90.0)
    assert len(counts) == HISTOGRAM_BINS + 2
    assert counts[0] == 1 and counts[1] == 2 and counts[2] == 1 and counts[10] == 1
    assert counts[11] == 1
    rng = np.random.default_rng(0)
    sample = rng.uniform(20, 90, 10_000)
    c = combine([[_summary(sample)]])[0]
    assert median_from_bins(c, SCHEMA.features[0]) == pytest.approx(np.median(sample), abs=1)


def _summary(values: np.ndarray) -> FeatureSummary:
    return FeatureSummary("age", True, len(values), 0, float(values.sum()),
                          float((values * values).sum()), float(values.min()),
                          float(values.max()), tuple(int(b) for b in
                                                     histogram(values, 20.0, 90.0)))


def test_the_layout_hash_ignores_shared_statistics_but_not_the_bins() -> None:
    with_stats = SCHEMA.with_features([Feature("age", low=20.0, high=90.0, mean=50.0, std=9.0,
                                               fill=50.0), *SCHEMA.features[1:]])
    assert layout_sha256(with_stats) == layout_sha256(SCHEMA)
    other_bins = SCHEMA.with_features([Feature("age", low=0.0, high=90.0),
                                       *SCHEMA.features[1:]])
    assert layout_sha256(other_bins) != layout_sha256(SCHEMA)
