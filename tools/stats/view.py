"""Federated statistics as a table or JSON, small cells suppressed (the shared-scaling schema
is :func:`edge_client.feature_stats.shared_schema`, which the aggregator uses too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_client.feature_stats import Combined, published_bins
from edge_client.protocol import StatsReport


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
