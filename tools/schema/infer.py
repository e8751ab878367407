"""A schema proposed from a sample CSV: numeric or categorical per column, what to leave out.

The proposal is a starting point to edit, not a decision: every rule is simple and the
TOML says which columns were left out and why. Rules, per column (missing cells aside):

- every cell a finite number: ``numeric``, unless all are distinct integers in a table of
  :data:`MIN_ROWS_FOR_ID` rows or more (an identifier such as a record number);
- otherwise at most ``max_categories`` distinct values, fewer than half the cells:
  ``categorical`` over the sorted values;
- otherwise left out: an identifier (about one distinct value per row) or free text;
- no value at all: left out (empty).

Numeric columns get ``missing = "mean"`` with the sample's mean as ``fill``, a
missing-indicator when the sample has missing cells, and the sample's range as the histogram
range. Only per-column summaries are kept while the file streams past (bounded memory apart
from one column's distinct values, capped).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_client.encode import is_missing
from edge_client.errors import ConfigError
from edge_client.schema import MAX_CATEGORIES, Feature, Schema
from edge_client.table import read_header, row_blocks

MAX_CATEGORIES_DEFAULT = 50  # a proposal's one-hot width per column; edit the TOML for more
MIN_ROWS_FOR_ID = 50  # fewer rows: distinct integers are no evidence of an identifier
_DISTINCT_CAP = 100_000  # distinct values kept per column (a column beyond is not categorical)


@dataclass
class _Column:
    cells: int = 0
    missing: int = 0
    numeric: bool = True
    integer: bool = True
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    distinct: Counter[str] = field(default_factory=Counter)
    overflow: bool = False

    def add(self, cells: list[str]) -> None:
        present = [c.strip() for c in cells if not is_missing(c)]
        self.cells += len(cells)
        self.missing += len(cells) - len(present)
        if not self.overflow:
            self.distinct.update(present)
            self.overflow = len(self.distinct) > _DISTINCT_CAP
            if self.overflow:
                self.distinct.clear()
        if self.numeric and present:
            try:
                values = np.asarray(present, dtype=np.float64)
            except ValueError:
                self.numeric = False
                return
            if not np.isfinite(values).all():
                self.numeric = False
                return
            self.integer = self.integer and bool((values == np.floor(values)).all())
            self.total += math.fsum(values.tolist())
            self.low, self.high = min(self.low, values.min()), max(self.high, values.max())


def _feature(name: str, column: _Column, max_categories: int) -> Feature | str:
    present = column.cells - column.missing
    if present == 0:
        return "empty: no values"
    all_distinct = not column.overflow and len(column.distinct) == present
    if column.numeric:
        if column.integer and all_distinct and column.cells >= MIN_ROWS_FOR_ID:
            return "identifier: a distinct integer in every row"
        mean = column.total / present
        high = column.high if column.high > column.low else column.low + 1.0
        return Feature(name, fill=float(mean), indicator=column.missing > 0,
                       low=float(column.low), high=float(high))
    if (not column.overflow and len(column.distinct) <= max_categories
            and len(column.distinct) < max(2, present / 2)):
        return Feature(name, kind="categorical", categories=tuple(sorted(column.distinct)))
    if all_distinct or column.overflow or len(column.distinct) >= 0.9 * present:
        return "identifier: about one distinct value per row"
    return f"free text: {len(column.distinct)} distinct values"


def _classes(label: str, column: _Column, regression: bool) -> tuple[str, ...]:
    if regression:
        if not column.numeric:
            raise ConfigError(f'--regression: label column "{label}" is not numeric')
        return ()
    if column.overflow or len(column.distinct) > MAX_CATEGORIES:
        raise ConfigError(f'label column "{label}" has more than {MAX_CATEGORIES} values; '
                          "for a numeric target pass --regression")
    values = list(column.distinct)
    if column.numeric:
        return tuple(sorted(values, key=float))
    return tuple(sorted(values))


def infer_schema(path: Path, label: str, *, regression: bool = False,
                 max_categories: int = MAX_CATEGORIES_DEFAULT) -> Schema:
    """Propose a schema for the CSV at ``path`` with label column ``label``.

    Raises:
        DataError: the file cannot be read, or has no column ``label``.
        ConfigError: no usable feature column, or a label with too many values.
    """
    header = read_header(path)
    header.index(label)
    columns = {name: _Column() for name in header.names}
    for block in row_blocks(header, range(len(header.names))):
        for name, cells in zip(header.names, zip(*block.cells, strict=True), strict=True):
            columns[name].add(list(cells))
    features: list[Feature] = []
    left_out: dict[str, str] = {}
    for name in header.names:
        if name == label:
            continue
        proposed = _feature(name, columns[name], max_categories)
        if isinstance(proposed, Feature):
            features.append(proposed)
        else:
            left_out[name] = proposed
    if not features:
        raise ConfigError(f"{path}: no usable feature column (left out: "
                          f"{'; '.join(f'{k} ({v})' for k, v in left_out.items())})")
    return Schema(tuple(features), label, _classes(label, columns[label], regression), left_out)
