"""Local data adapters of the device: CSV tables, ``.npz`` arrays and windowed sensor series.

Only numpy and the ``csv`` module are used (a device has no pandas). Data files are untrusted
input: every problem is a :class:`~edge_client.errors.DataError` whose message names the file
and, where the format has them, the line and the column. Normalisation statistics are computed
on the device and hold only per-feature means and deviations, never rows.
"""

from __future__ import annotations

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
from edge_client.table import Filling, Header, check_file, read_header, row_blocks

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


def _class_labels(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | int:
    """Return the labels as int64, or the index of the first one that is not a class."""
    bad = (values < 0) | (values > MAX_CLASS) | (values != np.floor(values))
    return int(np.argmax(bad)) if bad.any() else values.astype(np.int64)


@dataclass(frozen=True)
class _Run:
    """Rows [start, stop) of one group value, and their first and last physical lines."""

    start: int
    stop: int
    first_line: int
    last_line: int


class _Runs:
    """Splits the rows into runs of one group value while they stream past."""

    def __init__(self, path: Path, column: str | None) -> None:
        self._path, self._column = path, column
        self._runs: list[_Run] = []
        self._key: str | None = None
        self._start = self._first = self._last = self._rows = 0

    def add(self, lines: list[int], keys: list[str] | None) -> None:
        if keys is None:  # one run: the whole table
            self._first = lines[0] if self._rows == 0 else self._first
            self._rows, self._last = self._rows + len(lines), lines[-1]
            return
        for i, line in enumerate(lines):
            key = keys[i]
            if not key.strip():
                raise DataError(f'{self._path}: line {line}, column "{self._column}": '
                                "empty cell")
            if self._rows == 0 or key != self._key:
                self._close()
                self._key, self._start, self._first = key, self._rows, line
            self._last = line
            self._rows += 1

    def _close(self) -> None:
        if self._rows > self._start:
            self._runs.append(_Run(self._start, self._rows, self._first, self._last))

    def finish(self) -> list[_Run]:
        self._close()
        return self._runs


def _cell_error(path: Path, names: Sequence[str], lines: list[int],
                cells: list[list[str]]) -> DataError:
    for column, name in enumerate(names):
        for line, row in zip(lines, cells, strict=True):
            where = f'{path}: line {line}, column "{name}"'
            cell = row[column]
            if not cell.strip():
                return DataError(f"{where}: empty cell")
            try:
                value = float(cell)
            except ValueError:
                return DataError(f"{where}: not a number: {cell!r}")
            if not math.isfinite(value):
                return DataError(f"{where}: {cell!r} is not a finite number")
    return DataError(f"{path}: lines {lines[0]}-{lines[-1]}: unreadable numbers")


def _numbers(path: Path, names: Sequence[str], lines: list[int],
             cells: list[list[str]]) -> npt.NDArray[np.float64]:
    """The cells as float64 (rows x names), or a DataError naming the first bad cell."""
    try:
        values = np.asarray(cells, dtype=np.float64).reshape(len(cells), len(names))
    except ValueError:
        raise _cell_error(path, names, lines, cells) from None
    if not np.isfinite(values).all():
        raise _cell_error(path, names, lines, cells)
    return values


def _block_labels(path: Path, name: str, lines: list[int], raw: list[str],
                  values: npt.NDArray[np.float64], task: Task) -> Labels:
    if task == "regression":
        return values.astype(np.float32)
    labels = _class_labels(values)
    if isinstance(labels, int):
        raise DataError(f'{path}: line {lines[labels]}, column "{name}": class label must be '
                        f"an integer in [0, {MAX_CLASS}], got {raw[labels]!r}")
    return labels


@dataclass(frozen=True)
class _Parsed:
    x: Features
    y: Labels | None
    runs: list[_Run]


def _read_csv(header: Header, names: tuple[str, ...], label: str | None, task: Task,
              group: str | None = None) -> _Parsed:
    """Stream the ``names`` columns (float32), the ``label`` column and the group runs."""
    numeric = (*names, *(() if label is None else (label,)))
    columns = [header.index(n) for n in numeric] + ([] if group is None else [header.index(group)])
    x = Filling(header.max_rows, (len(names),), np.float32, header.path)
    y = None if label is None else Filling(
        header.max_rows, (), np.float32 if task == "regression" else np.int64, header.path)
    runs = _Runs(header.path, group)
    for block in row_blocks(header, columns):
        cells = block.cells if group is None else [row[:-1] for row in block.cells]
        values = _numbers(header.path, numeric, block.lines, cells)
        x.put(values[:, :len(names)])
        if y is not None and label is not None:
            raw = [row[len(names)] for row in block.cells]
            y.put(_block_labels(header.path, label, block.lines, raw, values[:, -1], task))
        runs.add(block.lines, None if group is None else [row[-1] for row in block.cells])
    return _Parsed(x.finish(), None if y is None else y.finish(), runs.finish())


def _feature_names(header: Header, features: Sequence[str] | None,
                   exclude: Sequence[str | None]) -> tuple[str, ...]:
    if features is not None:
        names = tuple(features)
        for name in names:
            header.index(name)
    else:
        names = tuple(name for name in header.names if name not in exclude)
    if not names:
        raise DataError(f"{header.path}: line 1: no feature columns besides the label")
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
    header = read_header(Path(path))
    header.index(label_column)
    names = _feature_names(header, features, (label_column,))
    parsed = _read_csv(header, names, label_column, task)
    assert parsed.y is not None
    return LocalData(parsed.x, parsed.y, names, str(path))


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
    header = read_header(Path(path))
    header.index(label_column)
    names = _feature_names(header, features, (label_column, group_column, time_column))
    parsed = _read_csv(header, names, label_column, task, group_column)
    assert parsed.y is not None
    x, y = _windows(header.path, parsed.x, parsed.y, parsed.runs, window,
                    window if stride is None else stride, grouped=group_column is not None)
    return LocalData(x, y, names, str(path))


def _windows(path: Path, series: Features, labels: Labels, runs: list[_Run], window: int,
             stride: int, *, grouped: bool) -> tuple[Features, Labels]:
    """The windows of a time series (rows x channels), within each group's run."""
    parts = []
    for run in runs:
        rows = run.stop - run.start
        if rows < window:
            log.warning("%s: lines %d-%d: %d rows, shorter than the window (%d); skipped",
                        path, run.first_line, run.last_line, rows, window)
        parts.append(make_windows(series[run.start:run.stop], labels[run.start:run.stop],
                                  window, stride))
    x = np.concatenate([part[0] for part in parts])
    if len(x) == 0:
        longest = max(run.stop - run.start for run in runs)
        raise DataError(f"{path}: window of {window} rows is longer than the series "
                        f"({longest} rows{' in the longest group' if grouped else ''})")
    y: Labels = np.concatenate([part[1] for part in parts])
    return x, y


def _npz_arrays(path: Path, required: tuple[str, ...] = ("x", "y")
                ) -> dict[str, npt.NDArray[Any]]:
    check_file(path)
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
    label = DEFAULT_LABEL if label_column is None else label_column
    if window is None and (stride is not None or group_column is not None):
        raise ConfigError(f"{file}: stride and group_column need a window")
    header = read_header(file)
    if window is None:
        names = _feature_names(header, features, (label,))
        return _read_csv(header, names, None, "classification").x, names
    names = _feature_names(header, features, (label, group_column, time_column))
    parsed = _read_csv(header, names, None, "classification", group_column)
    no_labels = np.zeros(len(parsed.x), np.int64)
    x, _ = _windows(file, parsed.x, no_labels, parsed.runs, window,
                    window if stride is None else stride, grouped=group_column is not None)
    return x, names
