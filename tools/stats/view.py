"""Federated statistics as a table or JSON, small cells suppressed; the shared-scaling schema."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_client.feature_stats import (
    DEFAULT_MIN_COUNT,
    Combined,
    median_from_bins,
    published_bins,
)
from edge_client.protocol import StatsReport
from edge_client.schema import Feature, Schema

STD_FLOOR = 1e-6  # as the device's own scaling (edge_client.normalise): no division by ~0


@dataclass
class Collected:
    """The reports read from the broker, by client id, and the ones left aside (why)."""

    federation: str
    reports: dict[str, StatsReport] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)


def as_json(c: Collected, columns: Sequence[Combined], min_count: int) -> dict[str, Any]:
    """One JSON document: sites, rows, and per column the combined, suppressed figures."""
    return {
        "federation": c.federation, "min_count": min_count, "sites": sorted(c.reports),
        "rows": sum(r.rows for r in c.reports.values()), "ignored": dict(c.ignored),
        "columns": [{
            "name": k.name, "numeric": k.numeric, "sites": k.sites, "count": k.count,
            "missing": k.missing, **({"mean": k.mean, "std": k.std, "min": k.low,
                                      "max": k.high} if k.numeric else {}),
            "bins": published_bins(k.bins, min_count)} for k in columns],
    }


def _bins(bins: Sequence[int], min_count: int) -> str:
    return " ".join(f"<{min_count}" if b is None else str(b)
                    for b in published_bins(bins, min_count))


def render(c: Collected, columns: Sequence[Combined], min_count: int) -> str:
    """The combined table for a terminal (a cohort feasibility check before training)."""
    rows = sum(r.rows for r in c.reports.values())
    lines = [f"federation {c.federation}: {len(c.reports)} site(s), {rows} rows; counts "
             f"below {min_count} suppressed"]
    if not columns:
        return "\n".join([*lines, "no statistics reported (devices publish them when run "
                                  "with --schema)"])
    width = max(len(k.name) for k in columns)
    lines.append(f"  {'column':<{width}}  sites  count  missing  {'mean':>10}  {'std':>10}  "
                 f"{'min':>10}  {'max':>10}")
    for k in columns:
        figures = (f"{k.mean:>10.4g}  {k.std:>10.4g}  {k.low:>10.4g}  {k.high:>10.4g}"
                   if k.numeric else f"{'categories:':>10}  {_bins(k.bins, min_count)}")
        lines.append(f"  {k.name:<{width}}  {k.sites:>5}  {k.count:>5}  {k.missing:>7}  "
                     f"{figures}")
        if k.numeric:
            lines.append(f"  {'':<{width}}  bins (below, 10 over the schema range, above): "
                         f"{_bins(k.bins, min_count)}")
    lines += [f"  ignored {who}: {why}" for who, why in sorted(c.ignored.items())]
    return "\n".join(lines)


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
