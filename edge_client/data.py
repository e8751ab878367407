"""Local data adapters of the device: CSV tables, ``.npz`` arrays and windowed sensor series.

Only numpy and the ``csv`` module are used (a device has no pandas). Data files are untrusted
input: every problem is a :class:`~edge_client.errors.DataError` whose message names the file
and, where the format has them, the line and the column. Normalisation statistics are computed
on the device and hold only per-feature means and deviations, never rows.
"""

from __future__ import annotations

import csv
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
Features = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64] | npt.NDArray[np.float32]

DEFAULT_LABEL = "label"
DEFAULT_TIME = "timestamp"
MAX_CLASS = 65_535  # bounds label-indexed allocations; far above any real class count


@dataclass(frozen=True)
class LocalData:
    """Samples held on the device.

    Attributes:
        x: float32 features: (n, features) for tables, (n, channels, window) for series.
        y: int64 class labels >= 0, or float32 regression targets; shape (n,).
        feature_names: names along axis 1 of ``x`` (features or channels).
        source: the file the samples came from.
    """

    x: Features
    y: Labels
    feature_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise DataError(f"{self.source}: x {self.x.shape} and y {self.y.shape} do not match")
        if self.x.shape[1] != len(self.feature_names):
            raise DataError(f"{self.source}: {len(self.feature_names)} feature names for "
                            f"{self.x.shape[1]} features")

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class _Table:
    path: Path
    header: tuple[str, ...]
    rows: list[list[str]]
    lines: list[int]  # physical line number of each row, for error messages

    def index(self, name: str) -> int:
        if name not in self.header:
            raise DataError(f'{self.path}: line 1: no column "{name}" in the header '
                            f"({', '.join(self.header)})")
        return self.header.index(name)

    def cells(self, name: str) -> list[str]:
        i = self.index(name)
        return [row[i] for row in self.rows]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")


def _read_table(path: Path) -> _Table:
    _check_file(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        try:
            header = tuple(name.strip() for name in next(reader, []))
            for row in reader:
                if not row:
                    continue  # blank line
                if len(row) != len(header):
                    raise DataError(f"{path}: line {reader.line_num}: {len(row)} cells, "
                                    f"the header has {len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as error:
            raise DataError(f"{path}: line {reader.line_num}: {error}") from error
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason})") from error
    if not header or "" in header or len(set(header)) != len(header):
        raise DataError(f"{path}: line 1: header needs distinct, non-empty column names")
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return _Table(path, header, rows, lines)


def _cell_error(table: _Table, name: str, cells: list[str]) -> DataError:
    for line, cell in zip(table.lines, cells, strict=True):
        where = f'{table.path}: line {line}, column "{name}"'
        if not cell.strip():
            return DataError(f"{where}: empty cell")
        try:
            value = float(cell)
        except ValueError:
            return DataError(f"{where}: not a number: {cell!r}")
        if not math.isfinite(value):
            return DataError(f"{where}: {cell!r} is not a finite number")
    return DataError(f'{table.path}: column "{name}": unreadable numbers')


def _column(table: _Table, name: str) -> npt.NDArray[np.float64]:
    cells = table.cells(name)
    try:
        values = np.asarray(cells, dtype=np.float64)
    except ValueError:
        raise _cell_error(table, name, cells) from None
    if not np.isfinite(values).all():
        raise _cell_error(table, name, cells)
    return values


def _class_labels(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | int:
    """Return the labels as int64, or the index of the first one that is not a class."""
    bad = (values < 0) | (values > MAX_CLASS) | (values != np.floor(values))
    return int(np.argmax(bad)) if bad.any() else values.astype(np.int64)


def _labels(table: _Table, name: str, task: Task) -> Labels:
    values = _column(table, name)
    if task == "regression":
        return values.astype(np.float32)
    labels = _class_labels(values)
    if isinstance(labels, int):
        raise DataError(f'{table.path}: line {table.lines[labels]}, column "{name}": class '
                        f"label must be an integer in [0, {MAX_CLASS}], got "
                        f"{table.cells(name)[labels]!r}")
    return labels


def _feature_names(table: _Table, features: Sequence[str] | None,
                   exclude: Sequence[str | None]) -> tuple[str, ...]:
    if features is not None:
        names = tuple(features)
        for name in names:
            table.index(name)
    else:
        names = tuple(name for name in table.header if name not in exclude)
    if not names:
        raise DataError(f"{table.path}: line 1: no feature columns besides the label")
    return names


def load_table_csv(path: str | Path, *, label_column: str = DEFAULT_LABEL,
                   features: Sequence[str] | None = None,
                   task: Task = "classification") -> LocalData:
    """Read a CSV with a header row, one sample per row.

    Args:
        path: the CSV file.
        label_column: column holding the class label (or regression target).
        features: feature columns in order; by default every column but the label.
        task: ``"classification"`` (integer labels >= 0) or ``"regression"`` (finite floats).

    Returns:
        The samples, x shaped (n, features).

    Raises:
        DataError: the file is missing, empty, ragged, or holds a bad cell (named by line and
            column).
    """
    table = _read_table(Path(path))
    table.index(label_column)
    names = _feature_names(table, features, (label_column,))
    x = np.stack([_column(table, name) for name in names], axis=1).astype(np.float32)
    return LocalData(x, _labels(table, label_column, task), names, str(path))


def _runs(table: _Table, group_column: str | None) -> list[tuple[int, int]]:
    """Split rows into (start, stop) runs of one group value; windows never cross a run."""
    if group_column is None:
        return [(0, len(table.rows))]
    keys = table.cells(group_column)
    for line, key in zip(table.lines, keys, strict=True):
        if not key.strip():
            raise DataError(f'{table.path}: line {line}, column "{group_column}": empty cell')
    starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    return list(zip(starts, [*starts[1:], len(keys)], strict=True))


def _window_labels(labels: Labels, window: int, stride: int) -> Labels:
    view: npt.NDArray[Any] = np.lib.stride_tricks.sliding_window_view(labels, window)[::stride]
    if not np.issubdtype(labels.dtype, np.integer):
        means: npt.NDArray[np.float32] = view.mean(axis=1).astype(np.float32)
        return means
    classes, codes = np.unique(view, return_inverse=True)
    counts = np.zeros((len(view), len(classes)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(view)), window), codes.ravel()), 1)
    majority: npt.NDArray[np.int64] = classes[counts.argmax(axis=1)].astype(np.int64)
    return majority  # argmax takes the first maximum: ties go to the smaller label


def make_windows(series: npt.NDArray[np.floating[Any]], labels: Labels, window: int,
                 stride: int) -> tuple[Features, Labels]:
    """Cut one uninterrupted series into windows.

    Args:
        series: values shaped (time, channels).
        labels: one label per time step, shape (time,).
        window: time steps per window.
        stride: time steps between the starts of consecutive windows.

    Returns:
        x shaped (n_windows, channels, window) and one label per window: the most frequent
        class label (ties to the smaller), or the mean of regression targets. A series shorter
        than the window gives no windows.
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window ({window}) and stride ({stride}) must be >= 1")
    if len(labels) != len(series):
        raise DataError(f"{len(labels)} labels for a series of {len(series)} steps")
    if len(series) < window:
        return np.zeros((0, series.shape[1], window), np.float32), labels[:0]
    view = np.lib.stride_tricks.sliding_window_view(series, window, axis=0)[::stride]
    return np.ascontiguousarray(view, dtype=np.float32), _window_labels(labels, window, stride)


def load_series_csv(path: str | Path, *, window: int, stride: int | None = None,
                    label_column: str = DEFAULT_LABEL, features: Sequence[str] | None = None,
                    group_column: str | None = None, time_column: str | None = DEFAULT_TIME,
                    task: Task = "classification") -> LocalData:
    """Read a time-series CSV of sensor channels (one row per time step) as windows.

    Args:
        path: the CSV file, e.g. ``timestamp,acc_x,acc_y,acc_z,hr,label``.
        window: time steps per window.
        stride: steps between window starts; defaults to ``window`` (no overlap).
        label_column: per-step label; a window takes its majority label (regression: the mean).
        features: channel columns; by default all but the label, group and time columns.
        group_column: session or subject column; windows never span two of its runs.
        time_column: column left out of the channels when present (it is not parsed).
        task: ``"classification"`` or ``"regression"``.

    Returns:
        The windows, x shaped (n_windows, channels, window).

    Raises:
        DataError: as :func:`load_table_csv`, or the window is longer than every series.
    """
    table = _read_table(Path(path))
    table.index(label_column)
    names = _feature_names(table, features, (label_column, group_column, time_column))
    x, y = _windows(table, names, _labels(table, label_column, task), window,
                    window if stride is None else stride, group_column)
    return LocalData(x, y, names, str(path))


def _windows(table: _Table, names: tuple[str, ...], labels: Labels, window: int, stride: int,
             group_column: str | None) -> tuple[Features, Labels]:
    """The windows of a time-series table's ``names`` channels, within each group's run."""
    path = table.path
    series = np.stack([_column(table, name) for name in names], axis=1)
    runs = _runs(table, group_column)
    parts = []
    for start, stop in runs:
        if stop - start < window:
            log.warning("%s: lines %d-%d: %d rows, shorter than the window (%d); skipped",
                        path, table.lines[start], table.lines[stop - 1], stop - start, window)
        parts.append(make_windows(series[start:stop], labels[start:stop], window, stride))
    x = np.concatenate([part[0] for part in parts])
    if len(x) == 0:
        longest = max(stop - start for start, stop in runs)
        raise DataError(f"{path}: window of {window} rows is longer than the series "
                        f"({longest} rows{' in the longest group' if group_column else ''})")
    y: Labels = np.concatenate([part[1] for part in parts])
    return x, y


def _npz_arrays(path: Path, required: tuple[str, ...] = ("x", "y")
                ) -> dict[str, npt.NDArray[Any]]:
    _check_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single array, not an .npz archive with "
                        f"{' and '.join(map(repr, required))}")
    with archive:
        missing = sorted(set(required) - set(archive.files))
        if missing:
            raise DataError(f"{path}: no array {missing} in the archive "
                            f"(has: {', '.join(archive.files) or 'nothing'})")
        try:
            return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: unreadable array ({error})") from error


def _check_npz(path: Path, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    for key, array in (("x", x), ("y", y)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(f"{path}: array '{key}' has dtype {array.dtype}, not numbers")
    if x.ndim not in (2, 3, 4) or y.ndim != 1:
        raise DataError(f"{path}: 'x' must be 2-D, 3-D or 4-D (samples first) and 'y' 1-D; "
                        f"got x {x.shape}, y {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: 'x' has {len(x)} samples, 'y' has {len(y)}")
    for key, array in (("x", x), ("y", y)):
        if not np.isfinite(array).all():
            index = np.argwhere(~np.isfinite(array))[0]
            raise DataError(f"{path}: array '{key}' index {tuple(map(int, index))}: not finite")


def load_npz(path: str | Path, *, task: Task = "classification") -> LocalData:
    """Read an ``.npz`` archive holding ``x`` (samples first), ``y`` and optionally names.

    Args:
        path: the archive; read with ``allow_pickle=False``.
        task: ``"classification"`` or ``"regression"``.

    Returns:
        The samples; feature names from a ``feature_names`` array or ``x0, x1, ...``.

    Raises:
        DataError: unreadable archive, missing ``x``/``y``, wrong dims, mismatched lengths,
            non-finite values or bad labels.
    """
    file = Path(path)
    arrays = _npz_arrays(file)
    x, y = arrays["x"], arrays["y"]
    _check_npz(file, x, y)
    width = x.shape[1]
    names = tuple(str(n) for n in arrays.get("feature_names", [f"x{i}" for i in range(width)]))
    if task == "regression":
        return LocalData(x.astype(np.float32), y.astype(np.float32), names, str(path))
    labels = _class_labels(y.astype(np.float64))
    if isinstance(labels, int):
        raise DataError(f"{path}: array 'y' index {labels}: class label must be an integer "
                        f"in [0, {MAX_CLASS}], got {y[labels]!r}")
    return LocalData(x.astype(np.float32), labels, names, str(path))


def load_data(path: str | Path, *, label_column: str | None = None,
              features: Sequence[str] | None = None, window: int | None = None,
              stride: int | None = None, group_column: str | None = None,
              time_column: str | None = DEFAULT_TIME,
              task: Task = "classification") -> LocalData:
    """Read local data, choosing the adapter from the extension and the options.

    ``.npz`` goes to :func:`load_npz`; ``.csv`` to :func:`load_series_csv` when ``window`` is
    given, else to :func:`load_table_csv`. ``label_column`` defaults to ``"label"``.

    Raises:
        ConfigError: options that do not apply to the file's format.
        DataError: the file cannot be read (see the adapters).
    """
    file = Path(path)
    csv_options = (label_column, features, window, stride, group_column)
    if file.suffix.lower() == ".npz":
        if any(option is not None for option in csv_options):
            raise ConfigError(f"{file}: label, feature and window options apply to CSV only")
        return load_npz(file, task=task)
    if file.suffix.lower() != ".csv":
        raise DataError(f"{file}: unknown data format {file.suffix!r} (expected .csv or .npz)")
    label = DEFAULT_LABEL if label_column is None else label_column
    if window is None:
        if stride is not None or group_column is not None:
            raise ConfigError(f"{file}: stride and group_column need a window")
        return load_table_csv(file, label_column=label, features=features, task=task)
    return load_series_csv(file, window=window, stride=stride, label_column=label,
                           features=features, group_column=group_column,
                           time_column=time_column, task=task)


def _check_inputs(path: Path, x: npt.NDArray[Any]) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: array 'x' has dtype {x.dtype}, not numbers")
    if x.ndim not in (2, 3, 4) or len(x) == 0:
        raise DataError(f"{path}: 'x' must be 2-D, 3-D or 4-D with samples first; got {x.shape}")
    if not np.isfinite(x).all():
        index = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{path}: array 'x' index {tuple(map(int, index))}: not finite")


def load_inputs(path: str | Path, *, label_column: str | None = None,
                features: Sequence[str] | None = None, window: int | None = None,
                stride: int | None = None, group_column: str | None = None,
                time_column: str | None = DEFAULT_TIME) -> tuple[Features, tuple[str, ...]]:
    """Read only the model inputs of a data file, which need not hold labels (for predictions).

    The same formats and options as :func:`load_data`, but no label is required or read: a
    CSV's label column (``label_column``, default ``"label"``), when the file has one, is
    left out of the features, as in training; an ``.npz`` needs only ``x``. A time-series CSV
    gives one row per window, as for training.

    Returns:
        ``x`` as :func:`load_data` would give it, and the feature (or channel) names.

    Raises:
        ConfigError: options that do not apply to the file's format.
        DataError: the file cannot be read (named by file, line and column).
    """
    file = Path(path)
    if file.suffix.lower() == ".npz":
        if any(o is not None for o in (label_column, features, window, stride, group_column)):
            raise ConfigError(f"{file}: label, feature and window options apply to CSV only")
        arrays = _npz_arrays(file, ("x",))
        _check_inputs(file, arrays["x"])
        width = arrays["x"].shape[1]
        names = tuple(str(n) for n in arrays.get("feature_names",
                                                  [f"x{i}" for i in range(width)]))
        return arrays["x"].astype(np.float32), names
    if file.suffix.lower() != ".csv":
        raise DataError(f"{file}: unknown data format {file.suffix!r} (expected .csv or .npz)")
    table = _read_table(file)
    label = DEFAULT_LABEL if label_column is None else label_column
    if window is None:
        if stride is not None or group_column is not None:
            raise ConfigError(f"{file}: stride and group_column need a window")
        names = _feature_names(table, features, (label,))
        return np.stack([_column(table, n) for n in names], axis=1).astype(np.float32), names
    names = _feature_names(table, features, (label, group_column, time_column))
    no_labels = np.zeros(len(table.rows), np.int64)
    x, _ = _windows(table, names, no_labels, window, window if stride is None else stride,
                    group_column)
    return x, names
