"""Federated statistics of a table: what each site reports, and how reports add up exactly.

A site summarises each schema column (:func:`site_summaries`): for a numeric column the count
of values, the missing cells, the sum and sum of squares (exactly rounded, ``math.fsum``),
min, max and counts in fixed bins over the schema's ``[low, high]`` (plus one bin below and
one above); for a categorical column (and a classification label) the count of each
category, then of unseen values. Never a row. A column with fewer than ``min_count`` values
is not reported at all (small-cell suppression at the site).

:func:`combine` adds the sites' summaries (sums of exactly rounded sums, so the federated
mean and standard deviation equal the pooled ones to rounding), and :func:`published_bins`
blanks every bin or category count below ``min_count`` before anything is shown.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_client.encode import ABSENT, UNSEEN, parsed_blocks
from edge_client.normalise import STD_FLOOR
from edge_client.protocol import FeatureSummary
from edge_client.schema import HISTOGRAM_BINS, Feature, Schema
from edge_client.table import read_header

DEFAULT_MIN_COUNT = 10  # the usual small-cell threshold of health statistics offices


def layout_sha256(schema: Schema) -> str:
    """What reports must share to be added: columns, kinds, categories, bins and label."""
    layout = [[f.name, f.kind, list(f.categories), f.low, f.high] for f in schema.features]
    doc = json.dumps([layout, schema.label, list(schema.classes)], separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def histogram(values: npt.NDArray[np.float64], low: float, high: float) -> npt.NDArray[np.int64]:
    """Counts in ``HISTOGRAM_BINS`` equal bins over [low, high], one below and one above."""
    scaled = np.floor((values - low) / (high - low) * HISTOGRAM_BINS)
    index = np.clip(scaled, -1, HISTOGRAM_BINS).astype(np.int64) + 1
    index[values == high] = HISTOGRAM_BINS  # the top edge belongs to the last bin
    return np.bincount(index, minlength=HISTOGRAM_BINS + 2)


@dataclass
class _Sums:
    numeric: bool
    count: int = 0
    missing: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    bins: npt.NDArray[np.int64] | None = None

    def add_numbers(self, f: Feature, values: npt.NDArray[np.float64]) -> None:
        present = values[~np.isnan(values)]
        self.missing += len(values) - len(present)
        if len(present) == 0:
            return
        self.count += len(present)
        self.total = math.fsum((self.total, math.fsum(present.tolist())))
        self.total_sq = math.fsum((self.total_sq, math.fsum((present * present).tolist())))
        self.low, self.high = min(self.low, present.min()), max(self.high, present.max())
        counts = histogram(present, f.low, f.high)
        self.bins = counts if self.bins is None else self.bins + counts

    def add_codes(self, codes: npt.NDArray[np.int64], width: int) -> None:
        self.missing += int((codes == ABSENT).sum())
        present = codes[codes != ABSENT]
        self.count += len(present)
        counts = np.bincount(np.where(present == UNSEEN, width, present), minlength=width + 1)
        self.bins = counts if self.bins is None else self.bins + counts

    def summary(self, name: str) -> FeatureSummary:
        finite = self.count > 0 and math.isfinite(self.low)
        return FeatureSummary(
            name=name, numeric=self.numeric, count=self.count, missing=self.missing,
            total=self.total,
            total_sq=self.total_sq, low=float(self.low) if finite else 0.0,
            high=float(self.high) if finite else 0.0,
            bins=() if self.bins is None else tuple(int(b) for b in self.bins))


def site_summaries(path: Path, schema: Schema, min_count: int = DEFAULT_MIN_COUNT
                   ) -> tuple[int, tuple[FeatureSummary, ...], tuple[str, ...]]:
    """Summarise a site's CSV column by column, suppressing small columns.

    Returns:
        The number of rows, the summaries of the columns with at least ``min_count`` values
        (schema order, then the label's class counts for classification), and the names of
        the columns left out as too small.

    Raises:
        DataError: as :func:`edge_client.encode.load_schema_csv`.
    """
    header = read_header(path)
    sums = {f.name: _Sums(f.kind == "numeric") for f in schema.features}
    label = _Sums(numeric=False)
    rows = 0
    for block in parsed_blocks(header, schema, labels=bool(schema.classes)):
        rows += len(block.lines)
        for f in schema.features:
            if f.kind == "numeric":
                sums[f.name].add_numbers(f, block.numeric[f.name])
            else:
                sums[f.name].add_codes(block.codes[f.name], len(f.categories))
        if block.labels is not None:
            label.add_codes(block.labels.astype(np.int64), len(schema.classes))
    if schema.classes:
        sums[schema.label] = label
    kept = tuple(s.summary(name) for name, s in sums.items() if s.count >= min_count)
    small = tuple(name for name, s in sums.items() if s.count < min_count)
    return rows, kept, small


@dataclass(frozen=True)
class Combined:
    """One column's statistics over every site that reported it.

    Attributes:
        name: the column.
        numeric: a numeric column (else categories, then unseen, in ``bins``).
        sites: how many sites reported it.
        count, missing: values and missing cells over those sites.
        mean, std: of the values (population std); 0 for a categorical column.
        low, high: smallest and largest value.
        bins: summed bin (or category, then unseen) counts, before suppression.
    """

    name: str
    numeric: bool
    sites: int
    count: int
    missing: int
    mean: float
    std: float
    low: float
    high: float
    bins: tuple[int, ...]


def combine(reports: Iterable[Sequence[FeatureSummary]]) -> list[Combined]:
    """Add the sites' summaries column by column, in the order they first appear.

    Raises:
        ValueError: one column is numeric at one site and not at another, or its bins
            differ in number (reports of different schemas: check ``schema_sha256``).
    """
    by_name: dict[str, list[FeatureSummary]] = {}
    for report in reports:
        for summary in report:
            by_name.setdefault(summary.name, []).append(summary)
    out = []
    for name, parts in by_name.items():
        count = sum(p.count for p in parts)
        if len({(p.numeric, len(p.bins)) for p in parts}) != 1:
            raise ValueError(f"column {name!r}: the sites' summaries have different layouts")
        if count == 0:
            continue
        mean = std = 0.0
        if parts[0].numeric:
            mean = math.fsum(p.total for p in parts) / count
            var = math.fsum(p.total_sq for p in parts) / count - mean * mean
            std = math.sqrt(max(var, 0.0))
        bins = [sum(b) for b in zip(*(p.bins for p in parts), strict=True)]
        out.append(Combined(name, parts[0].numeric, len(parts), count,
                            sum(p.missing for p in parts), mean, std, min(p.low for p in parts),
                            max(p.high for p in parts), tuple(bins)))
    return out


def published_bins(bins: Sequence[int], min_count: int) -> list[int | None]:
    """Bin counts as they may be shown: a count in (0, min_count) is suppressed (None)."""
    return [None if 0 < b < min_count else b for b in bins]


def median_from_bins(c: Combined, f: Feature) -> float:
    """The median interpolated in the combined histogram (bins of width (high-low)/BINS)."""
    half, seen = c.count / 2, 0
    width = (f.high - f.low) / HISTOGRAM_BINS
    for i, b in enumerate(c.bins):
        if seen + b >= half and b:
            if i == 0:
                return c.low
            if i == len(c.bins) - 1:
                return c.high
            return f.low + (i - 1 + (half - seen) / b) * width
        seen += b
    return c.mean


def shared_schema(schema: Schema, columns: Sequence[Combined],
                  min_count: int = DEFAULT_MIN_COUNT) -> Schema:
    """``schema`` with the federation's statistics: every numeric column's shared mean and
    std (so every site standardises identically) and its ``mean``/``median`` fill value,
    and the label's class counts (for balanced class weights) unless one is suppressed."""
    by_name = {k.name: k for k in columns}
    label = by_name.get(schema.label)
    counts: tuple[int, ...] = ()
    if schema.classes and label is not None and not label.numeric:
        shown = published_bins(label.bins[: len(schema.classes)], min_count)
        counts = () if None in shown else tuple(int(c or 0) for c in shown)
    features: list[Feature] = []
    for f in schema.features:
        k = by_name.get(f.name)
        if f.kind != "numeric" or k is None:
            features.append(f)
            continue
        fill = {"mean": k.mean, "median": median_from_bins(k, f)}.get(f.missing, f.fill)
        features.append(replace(f, fill=float(fill), mean=k.mean,
                                std=max(k.std, STD_FLOOR) if math.isfinite(k.std) else 1.0))
    return replace(schema.with_features(features), class_counts=counts)
