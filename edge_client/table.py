"""A CSV table read in bounded memory: its header, then its rows block by block.

A site's table can be far larger than the Python objects a naive reader would build from it
(a list of lists of strings costs ~15x the file). This reader holds at most
:data:`BLOCK_ROWS` rows as strings at a time; its callers turn each block into numbers and
write them into arrays allocated once for the whole file (:class:`Filling`), so the peak is
about the final arrays plus one block.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import DataError

BLOCK_ROWS = 4096  # rows held as strings at once: a few MB for a wide table, fast to convert
_SCAN_BYTES = 1 << 20  # bytes read at a time when counting lines


@dataclass(frozen=True)
class Header:
    """A CSV file's column names and an upper bound on its data rows."""

    path: Path
    names: tuple[str, ...]
    max_rows: int  # lines in the file: no more records than that

    def index(self, name: str) -> int:
        """The position of column ``name``; a :class:`DataError` naming the header if absent."""
        if name not in self.names:
            raise DataError(f'{self.path}: line 1: no column "{name}" in the header '
                            f"({', '.join(self.names)})")
        return self.names.index(name)


@dataclass(frozen=True)
class Block:
    """Consecutive data rows of a table, only the requested columns.

    Attributes:
        start: index of the first row among the file's data rows.
        lines: physical line number of each row, for error messages.
        cells: one list of cell strings per row, in the requested column order.
    """

    start: int
    lines: list[int]
    cells: list[list[str]]


def check_file(path: Path) -> None:
    """A :class:`DataError` when ``path`` is not a non-empty file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")


def _count_lines(path: Path) -> int:
    count = 1
    with path.open("rb") as stream:
        while chunk := stream.read(_SCAN_BYTES):
            count += chunk.count(b"\n")
    return count


def read_header(path: Path) -> Header:
    """Read the header row of a CSV file and bound its number of rows.

    Raises:
        DataError: missing or empty file, not UTF-8, or a header without distinct,
            non-empty column names.
    """
    check_file(path)
    with path.open(newline="", encoding="utf-8-sig") as stream:
        try:
            names = tuple(name.strip() for name in next(csv.reader(stream), []))
        except csv.Error as error:
            raise DataError(f"{path}: line 1: {error}") from error
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason})") from error
    if not names or "" in names or len(set(names)) != len(names):
        raise DataError(f"{path}: line 1: header needs distinct, non-empty column names")
    return Header(path, names, _count_lines(path))


def row_blocks(header: Header, columns: Sequence[int],
               block_rows: int = BLOCK_ROWS) -> Iterator[Block]:
    """Yield the data rows of ``header``'s file in blocks, keeping only ``columns``.

    Blank lines are skipped. Raises :class:`DataError` for a ragged row, a CSV syntax error
    or text that is not UTF-8 (named by line), and for a file without data rows.
    """
    path, width, start = header.path, len(header.names), 0
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        lines: list[int] = []
        cells: list[list[str]] = []
        try:
            next(reader, None)
            for row in reader:
                if not row:
                    continue  # blank line
                if len(row) != width:
                    raise DataError(f"{path}: line {reader.line_num}: {len(row)} cells, "
                                    f"the header has {width}")
                cells.append([row[i] for i in columns])
                lines.append(reader.line_num)
                if len(cells) == block_rows:
                    yield Block(start, lines, cells)
                    start, lines, cells = start + len(cells), [], []
        except csv.Error as error:
            raise DataError(f"{path}: line {reader.line_num}: {error}") from error
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason})") from error
    if cells:
        yield Block(start, lines, cells)
    elif start == 0:
        raise DataError(f"{path}: no data rows after the header")


class Filling:
    """An array allocated once for at most ``capacity`` rows, filled block by block.

    Memory the rows never reach is never touched (the operating system maps it lazily), and
    :meth:`finish` gives it back, so the peak is the rows actually read.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: npt.DTypeLike,
                 source: Path) -> None:
        self._array: npt.NDArray[Any] = np.empty((capacity, *shape), dtype=dtype)
        self._rows = 0
        self._source = source

    def put(self, values: npt.NDArray[Any]) -> None:
        """Append ``values`` (rows first), cast to the array's dtype."""
        stop = self._rows + len(values)
        if stop > len(self._array):
            raise DataError(f"{self._source}: the file changed while it was read")
        self._array[self._rows:stop] = values
        self._rows = stop

    def finish(self) -> npt.NDArray[Any]:
        """The filled rows; the object must not be used afterwards."""
        array = self._array
        # in place (realloc): no second copy of the data; the array owns its memory
        array.resize((self._rows, *array.shape[1:]), refcheck=False)
        return array
