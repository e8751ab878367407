"""A site's CSV mapped onto the federation's schema, streamed in bounded memory; numpy only.

Columns are found by name (any order; extra columns are ignored; a missing one is an error
naming it). Numeric cells parse as the plain CSV reader parses them (float64, then float32
for the model), a missing cell (empty, ``NA``, ``NaN``, ``null``, ``?``) is filled as the
schema says, and a categorical cell becomes a one-hot block; a category the schema does not
list is counted and reported, not fatal. What a device learns from its rows depends only on
the rows and the schema, never on the column order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_client.data import LocalData
from edge_client.errors import DataError
from edge_client.normalise import NormStats, compute_norm_stats
from edge_client.schema import Feature, Schema
from edge_client.table import Filling, Header, read_header, row_blocks

log = logging.getLogger(__name__)

MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})  # compared lowercased
UNSEEN = -1  # code of a category the schema does not list
ABSENT = -2  # code of a missing categorical cell


def is_missing(cell: str) -> bool:
    """A cell that holds no value."""
    return cell.strip().lower() in MISSING_CELLS


@dataclass(frozen=True)
class ParsedBlock:
    """One block of rows, each schema column parsed.

    Attributes:
        lines: physical line of each row.
        numeric: per numeric feature, float64 values (NaN where missing).
        codes: per categorical feature, category index, :data:`UNSEEN` or :data:`ABSENT`.
        labels: class index (int64) or target (float32) per row; None when not read.
    """

    lines: list[int]
    numeric: dict[str, npt.NDArray[np.float64]]
    codes: dict[str, npt.NDArray[np.int64]]
    labels: npt.NDArray[np.int64] | npt.NDArray[np.float32] | None


def _numbers(path: Path, name: str, lines: list[int], cells: list[str]
             ) -> npt.NDArray[np.float64]:
    marked = ["nan" if is_missing(c) else c for c in cells]
    try:
        values = np.asarray(marked, dtype=np.float64)
    except ValueError:
        for line, cell in zip(lines, marked, strict=True):
            try:
                float(cell)
            except ValueError:
                raise DataError(f'{path}: line {line}, column "{name}": not a number: '
                                f"{cell!r}") from None
        raise DataError(f'{path}: lines {lines[0]}-{lines[-1]}, column "{name}": '
                        "unreadable numbers") from None
    infinite = np.isinf(values)
    if infinite.any():
        line = lines[int(np.argmax(infinite))]
        raise DataError(f'{path}: line {line}, column "{name}": not a finite number')
    return values


def _codes(f: Feature, cells: list[str]) -> npt.NDArray[np.int64]:
    index = {c: i for i, c in enumerate(f.categories)}
    return np.array([ABSENT if is_missing(c) else index.get(c.strip(), UNSEEN) for c in cells],
                    dtype=np.int64)


def _labels(path: Path, schema: Schema, lines: list[int], cells: list[str]
            ) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
    for line, cell in zip(lines, cells, strict=True):
        if is_missing(cell):
            raise DataError(f'{path}: line {line}, column "{schema.label}": missing label')
    if not schema.classes:
        return _numbers(path, schema.label, lines, cells).astype(np.float32)
    index = {c: i for i, c in enumerate(schema.classes)}
    codes = [index.get(c.strip(), -1) for c in cells]
    if -1 in codes:
        line, cell = lines[codes.index(-1)], cells[codes.index(-1)]
        raise DataError(f'{path}: line {line}, column "{schema.label}": label {cell!r} is not '
                        f"one of the schema's classes ({', '.join(schema.classes)})")
    return np.array(codes, dtype=np.int64)


def parsed_blocks(header: Header, schema: Schema, *, labels: bool) -> Iterator[ParsedBlock]:
    """Stream ``header``'s file, each schema column parsed (see :class:`ParsedBlock`).

    Raises:
        DataError: a schema column (or, with ``labels``, the label) is not in the file, or a
            cell cannot be read; named by file, line and column.
    """
    names = [f.name for f in schema.features] + ([schema.label] if labels else [])
    for name in names:
        if name not in header.names:
            raise DataError(f'{header.path}: line 1: no column "{name}", which the schema '
                            f"needs (the header has: {', '.join(header.names)})")
    for block in row_blocks(header, [header.index(n) for n in names]):
        columns = list(zip(*block.cells, strict=True))
        numeric, codes = {}, {}
        for i, f in enumerate(schema.features):
            cells = list(columns[i])
            if f.kind == "numeric":
                numeric[f.name] = _numbers(header.path, f.name, block.lines, cells)
            else:
                codes[f.name] = _codes(f, cells)
        y = _labels(header.path, schema, block.lines, list(columns[-1])) if labels else None
        yield ParsedBlock(block.lines, numeric, codes, y)


def _encode(path: Path, schema: Schema, block: ParsedBlock,
            counts: dict[str, int]) -> npt.NDArray[np.float32]:
    x = np.zeros((len(block.lines), len(schema.encoded_names)), dtype=np.float32)
    at = 0
    for f in schema.features:
        if f.kind == "categorical":
            codes = block.codes[f.name]
            rows = np.flatnonzero(codes >= 0)
            x[rows, at + codes[rows]] = 1.0
            counts[f"{f.name} unseen"] += int((codes == UNSEEN).sum())
            counts[f"{f.name} missing"] += int((codes == ABSENT).sum())
            at += len(f.categories)
            continue
        values = block.numeric[f.name].copy()
        missing = np.isnan(values)
        if missing.any():
            if f.missing == "error":
                line = block.lines[int(np.argmax(missing))]
                raise DataError(f'{path}: line {line}, column "{f.name}": missing value (the '
                                'schema says missing = "error")')
            values[missing] = f.fill
            counts[f"{f.name} missing"] += int(missing.sum())
        x[:, at] = values
        if f.indicator:
            x[:, at + 1] = missing
        at += 2 if f.indicator else 1
    return x


@dataclass(frozen=True)
class EncodedData:
    """A site's rows as model inputs, and what the encoding had to fill in or drop.

    Attributes:
        data: x shaped (n, len(schema.encoded_names)) in schema order, and labels.
        missing: per column, cells that were missing (imputed, or all-zero one-hot).
        unseen: per categorical column, cells whose category the schema does not list.
    """

    data: LocalData
    missing: dict[str, int]
    unseen: dict[str, int]


def load_schema_csv(path: str | Path, schema: Schema, *, labels: bool = True) -> EncodedData:
    """Read a CSV onto ``schema`` (by column name) as float32 model inputs.

    Args:
        path: the site's CSV (header row, one sample per row).
        schema: the federation's schema.
        labels: read the label column (False: inputs only, e.g. for predictions).

    Raises:
        DataError: a needed column is absent, or a cell is unreadable (file, line, column).
    """
    header = read_header(Path(path))
    x = Filling(header.max_rows, (len(schema.encoded_names),), np.float32, header.path)
    y = Filling(header.max_rows, (), np.int64 if schema.classes else np.float32, header.path)
    counts = {f"{f.name} {what}": 0 for f in schema.features for what in ("missing", "unseen")}
    for block in parsed_blocks(header, schema, labels=labels):
        x.put(_encode(header.path, schema, block, counts))
        y.put(np.zeros(len(block.lines)) if block.labels is None else block.labels)
    missing = {f.name: counts[f"{f.name} missing"] for f in schema.features
               if counts[f"{f.name} missing"]}
    unseen = {f.name: counts[f"{f.name} unseen"] for f in schema.features
              if counts[f"{f.name} unseen"]}
    for name, count in unseen.items():
        log.warning("%s: column %r: %d cells hold a category the schema does not list "
                    "(encoded as all zeros)", path, name, count)
    for name, count in missing.items():
        log.info("%s: column %r: %d missing cells filled as the schema says", path, name, count)
    data = LocalData(x.finish(), y.finish(), schema.encoded_names, str(path))
    return EncodedData(data, missing, unseen)


def schema_norm_stats(schema: Schema, x: npt.NDArray[np.float32]) -> NormStats:
    """How a device standardises inputs encoded by ``schema``.

    A numeric input uses the federation's ``mean``/``std`` when the schema has them (shared
    scaling: every site the same), else this site's own; one-hot and missing-indicator
    inputs stay 0/1 (mean 0, std 1), so a category that is constant at one site does not
    blow up where it varies.
    """
    local = compute_norm_stats(x, features=schema.encoded_names)
    mean: list[float] = []
    std: list[float] = []
    for f in schema.features:
        width = len(f.encoded_names())
        if f.kind == "numeric":
            i = len(mean)
            shared = f.mean is not None and f.std is not None
            mean.append(f.mean if f.mean is not None and shared else local.mean[i])
            std.append(f.std if f.std is not None and shared else local.std[i])
            width -= 1
        mean += [0.0] * width
        std += [1.0] * width
    return NormStats(tuple(mean), tuple(std), len(x), schema.encoded_names)
