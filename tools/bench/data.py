"""Bench: peak memory and speed of loading a big site's CSV, beside numpy and pandas.

Issue 14 found a 178 MB CSV peaking at 2.6 GB while loading. Each loader runs in a fresh
child process on the same generated table (4 float features and a 0/1 label per row);
measured: the **growth** of its peak resident memory (``ru_maxrss`` after loading minus
before, so the interpreter and imports are not counted) next to the size of the float32
feature matrix plus labels it returns, and the **seconds** the load took. Peers:
``numpy.loadtxt`` (float32; what a device could do with numpy alone) and
``pandas.read_csv`` (float32 columns; not on a device). The goal: fedge's growth at most
1.5x its arrays plus 64 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SIZES_MB = {True: 20, False: 178}  # quick: a smoke run; full: the 178 MB table
GOAL_FACTOR, GOAL_SLACK_MB = 1.5, 64
_LOADERS = {
    "fedge (edge_client.data)": "from edge_client.data import load_data\n"
                                "d = load_data(path); n = d.x.nbytes + d.y.nbytes",
    "numpy.loadtxt (float32)": "import numpy as np\n"
                               "a = np.loadtxt(path, delimiter=',', skiprows=1, "
                               "dtype=np.float32); n = a.nbytes",
    "pandas.read_csv (float32)": "import pandas as pd\n"
                                 "f = pd.read_csv(path, dtype='float32'); "
                                 "n = int(f.memory_usage(index=False).sum())",
}
_CHILD = """
import json, resource, sys, time
path = sys.argv[1]
{imports}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
{load}
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"growth_kb": after - before, "bytes": n, "seconds": seconds}}))
"""


def write_table_csv(path: Path, megabytes: float, block_rows: int = 5_000) -> int:
    """A CSV of 4 float features and a 0/1 label, about ``megabytes`` MB; returns its rows."""
    rng = np.random.default_rng(0)
    values, labels = rng.normal(size=(block_rows, 4)), rng.integers(0, 2, block_rows)
    block = "".join(f"{a:.6f},{b:.6f},{c:.6f},{d:.6f},{y}\n"
                    for (a, b, c, d), y in zip(values, labels, strict=True))
    repeats = int(megabytes * 1_000_000) // len(block) + 1
    with path.open("w") as out:
        out.write("a,b,c,d,label\n")
        for _ in range(repeats):
            out.write(block)
    return repeats * block_rows


def peak_growth(path: Path, loader: str) -> dict[str, Any]:
    """Load ``path`` with one of the loaders in a child process; its figures."""
    imports, load = _LOADERS[loader].split("\n", 1)  # imports before the clock starts
    child = _CHILD.format(imports=imports, load=load)
    run = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True,
                         text=True, check=False)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr else "failed"}
    found: dict[str, Any] = json.loads(run.stdout)
    return found


def run(quick: bool) -> dict[str, Any]:
    """Measure every loader on one generated table (``quick``: 20 MB, else 178 MB)."""
    with tempfile.TemporaryDirectory(prefix="fedge-bench-data-") as folder:
        path = Path(folder) / "site.csv"
        rows = write_table_csv(path, SIZES_MB[quick])
        size = path.stat().st_size
        measured = {loader: peak_growth(path, loader) for loader in _LOADERS}
    ours = measured["fedge (edge_client.data)"]
    goal_met = ("error" not in ours and ours["growth_kb"] / 1024
                <= GOAL_FACTOR * ours["bytes"] / 2**20 + GOAL_SLACK_MB)
    return {"file_bytes": size, "rows": rows, "loaders": measured, "goal_met": goal_met,
            "goal": f"growth <= {GOAL_FACTOR}x the arrays + {GOAL_SLACK_MB} MB"}


def render(result: Mapping[str, Any]) -> str:
    """The Markdown section for ``docs/results.md``."""
    lines = ["## Loading a big site's CSV: peak memory", "",
             f"A {result['file_bytes'] / 1e6:.0f} MB CSV, {result['rows']:,} rows of 4 float "
             "features and a label; each loader in a fresh process. Growth: peak resident "
             "memory after loading minus before.", "",
             "| loader | growth MB | arrays MB | growth / arrays | seconds |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for loader, m in result["loaders"].items():
        if "error" in m:
            lines.append(f"| {loader} | failed: {m['error']} | | | |")
            continue
        growth, arrays = m["growth_kb"] / 1024, m["bytes"] / 2**20
        lines.append(f"| {loader} | {growth:,.0f} | {arrays:,.0f} | {growth / arrays:.2f} "
                     f"| {m['seconds']:.1f} |")
    verdict = "met" if result["goal_met"] else "not met"
    lines += ["", f"Goal (fedge: {result['goal']}): **{verdict}**."]
    return "\n".join(lines) + "\n"
