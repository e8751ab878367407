"""Tests of edge_client/table.py: CSV tables read in blocks, in bounded memory, bit-exactly."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client import table
from edge_client.data import load_data, load_inputs
from tools.bench.data import write_table_csv

# A child process loads the file and reports its peak resident memory before and after.
_PEAK = """
import json, resource, sys
from edge_client.data import load_data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = load_data(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "rows": len(data),
                  "bytes": data.x.nbytes + data.y.nbytes}))
"""


@pytest.mark.slow
def test_a_big_csv_loads_in_about_the_memory_of_its_float32_arrays(tmp_path: Path) -> None:
    # main read every cell into a list of Python strings first: a 120 MB CSV peaked at
    # 1,484 MB (a 178 MB one at 2.6 GB, issue 14 finding 9)
    path = tmp_path / "site.csv"
    rows = write_table_csv(path, 110)
    run = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True,
                         text=True, check=True)
    peak = json.loads(run.stdout)
    assert peak["rows"] == rows
    grown_mb = (peak["after_kb"] - peak["before_kb"]) / 1024
    arrays_mb = peak["bytes"] / 2**20
    assert grown_mb < 2 * arrays_mb + 64, (grown_mb, arrays_mb)


def _naive_table(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The reader main had: every cell as a string, then one float64 array per column."""
    with path.open(newline="") as stream:
        rows = [row for row in csv.reader(stream) if row]
    header, body = rows[0], rows[1:]
    names = [n for n in header if n != label]
    x = np.stack([np.asarray([r[header.index(n)] for r in body], np.float64) for n in names],
                 axis=1).astype(np.float32)
    y = np.asarray([r[header.index(label)] for r in body], np.float64).astype(np.int64)
    return x, y


_CELL = st.one_of(
    st.floats(-3e38, 3e38).map(repr),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f" {v:.9g} "),
    st.integers(-10**20, 10**20).map(str),
    st.sampled_from(["1e-46", "3.4028234e38", "-0", "+4", "0.1000000000000000055511151"]),
)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(_CELL, _CELL, st.integers(0, 9)), min_size=1, max_size=40),
       block_rows=st.integers(1, 7))
def test_blocks_give_the_bits_a_whole_file_read_gives(tmp_path_factory: pytest.TempPathFactory,
                                                      rows: list[tuple[str, str, int]],
                                                      block_rows: int) -> None:
    path = tmp_path_factory.mktemp("bits") / "t.csv"
    path.write_text("a,label,b\n" + "".join(f"{a},{y},{b}\n" for a, b, y in rows))
    expected_x, expected_y = _naive_table(path, "label")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(table, "BLOCK_ROWS", block_rows)
        patch.setattr(table.row_blocks, "__defaults__", (block_rows,))
        data = load_data(path)
        assert load_inputs(path)[0].tobytes() == expected_x.tobytes()
    assert data.x.tobytes() == expected_x.tobytes() and data.x.dtype == np.float32
    assert data.y.tobytes() == expected_y.tobytes()


def test_groups_and_errors_cross_block_boundaries(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table.row_blocks, "__defaults__", (2,))
    lines = ["t,v,s,label"] + [f"{i},{i},{'ab'[i // 3]},0" for i in range(6)]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_data(path, window=2, stride=1, group_column="s", time_column="t")
    np.testing.assert_array_equal(data.x[:, 0, 0], [0, 1, 3, 4])  # no window spans a and b
    path.write_text("\n".join([*lines, "6,x,b,0"]) + "\n")
    with pytest.raises(table.DataError, match='line 8, column "v": not a number'):
        load_data(path, window=2, group_column="s", time_column="t")


def test_a_file_that_grows_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("a,label\n1,0\n")
    header = table.read_header(path)
    path.write_text("a,label\n" + "1,0\n" * 5)
    filling = table.Filling(header.max_rows, (1,), np.float32, path)
    with pytest.raises(table.DataError, match="changed while it was read"):
        for block in table.row_blocks(header, [0]):
            filling.put(np.asarray(block.cells, np.float64))
