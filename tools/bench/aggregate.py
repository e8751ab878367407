"""Bench: fedge's streaming FedAvg next to Flower's ``aggregate`` and ``aggregate_inplace``.

Every case (N clients × P parameters × implementation) runs in a fresh subprocess, so
one case's heap cannot flatter or burden another. All three get the same updates:
client i sends ``base·aᵢ + bᵢ`` (float32, tensors ``dense/kernel`` and ``dense/bias``)
with ``nᵢ`` samples, ``base`` being one seeded random vector made before measuring.
The exact weighted mean is known in closed form, so each result's error is reported.

Each implementation receives its input the way its API wants it:

* **fedge**: updates arrive one at a time from a generator, as they would from the
  network, and :class:`aggregator.fedavg.WeightedMean` folds each in (float64 sum);
* **flwr aggregate**: ``aggregate(results)`` needs the list of all ``(arrays, n)``;
* **flwr aggregate_inplace**: ``aggregate_inplace(results)`` needs the list of all
  ``(ClientProxy, FitRes)``, whose ``Parameters`` hold the serialized tensors (as received
  over gRPC); it deserializes them one by one inside the call.

Measured per case: **time** spent inside the aggregation calls only (making the inputs
is excluded for all three; ``aggregate_inplace``'s time includes its deserialization);
**peak traced** memory (tracemalloc, which sees numpy buffers) over the whole scenario,
building the inputs included, and how much of it was **inputs held** when aggregation
began; **peak RSS** above the process's RSS before the scenario (``/proc`` VmHWM after
resetting it; it only moves when the allocator maps new pages, so small cases read about
0), in a pass without tracemalloc; time is the best of 3 such passes. Cases whose
estimated footprint exceeds the memory budget are skipped and listed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from aggregator.fedavg import WeightedMean

IMPLS = ("fedge", "flwr aggregate", "flwr aggregate_inplace")
FULL = [(n, p) for p in (10_000, 1_000_000) for n in (10, 100, 1000)]
QUICK = [(10, 10_000), (100, 10_000), (10, 1_000_000), (100, 1_000_000)]
MEMORY_BUDGET = 8e9  # bytes one case may use; this machine is shared with other work
SEED = 20240601
TIMED_REPEATS = 3

Arrays = dict[str, npt.NDArray[Any]]
Mark = Callable[[], None]


def run(quick: bool, memory_budget: float = MEMORY_BUDGET) -> dict[str, Any]:
    """Measure every case (``quick``: a small subset); JSON-able results."""
    has_flwr = importlib.util.find_spec("flwr") is not None
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for n, p in QUICK if quick else FULL:
        for impl in IMPLS:
            need = estimated_bytes(impl, n, p)
            why = ("flwr is not installed" if impl != "fedge" and not has_flwr else
                   f"needs ≈ {need / 1e9:.1f} GB, over the {memory_budget / 1e9:.0f} GB budget"
                   if need > memory_budget else None)
            if why:
                skipped.append({"impl": impl, "n": n, "p": p, "why": why})
            else:
                rows.append(_measure_in_subprocess(impl, n, p))
    _add_ratios(rows)
    return {"quick": quick, "memory_budget_bytes": memory_budget, "rows": rows,
            "skipped": skipped}


def render(result: dict[str, Any]) -> str:
    """A Markdown section: method, one table row per case, skipped cases."""
    lines = [
        "## Aggregation: streaming FedAvg vs Flower",
        "",
        "Weighted FedAvg of N client updates of P float32 parameters. Time is spent inside the "
        "aggregation calls only; *peak traced* (tracemalloc) and *peak RSS* cover the whole "
        "scenario including the inputs each API needs held: fedge folds updates one at a time "
        "as they arrive, Flower's `aggregate` takes the list of all `(arrays, n)` and "
        "`aggregate_inplace` the list of all `FitRes` (serialized tensors, deserialized inside "
        "the call, which its time includes). Each case ran in a fresh process on the same "
        "updates; time is the best of 3 runs; × is Flower's figure divided by fedge's (above "
        "1: fedge is faster or smaller). *Inputs held* is what the list of results occupied "
        "when the call began; *max abs error* is against the exact weighted mean.",
        "",
        "| N | P | implementation | time (ms) | × | peak traced (MB) | × | inputs held (MB) "
        "| peak RSS (MB) | max abs error |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']} | {r['p']:,} | {r['impl']} | {r['seconds'] * 1e3:.3g} | "
            f"{_ratio(r.get('time_ratio'))} | {r['peak_traced_bytes'] / 1e6:,.1f} | "
            f"{_ratio(r.get('memory_ratio'))} | {r['inputs_traced_bytes'] / 1e6:,.1f} | "
            f"{r['peak_rss_bytes'] / 1e6:,.1f} | {r['max_abs_error']:.1e} |"
        )
    for s in result["skipped"]:
        lines.append(f"\nNot measured: {s['impl']} at N={s['n']}, P={s['p']:,}: {s['why']}.")
    return "\n".join(lines) + "\n"


def estimated_bytes(impl: str, n: int, p: int) -> float:
    """Rough peak footprint: Flower holds N inputs (and ``aggregate`` N weighted copies)."""
    if impl == "fedge":
        return 16.0 * p  # float64 sum + one float32 update in flight + float64 result
    if impl == "flwr aggregate":
        return 8.0 * n * p + 8.0 * p
    return 4.0 * n * p + 12.0 * p


def arrivals(base: npt.NDArray[np.float32], n: int) -> Iterator[tuple[Arrays, int]]:
    """The N updates, one at a time: ``base·aᵢ + bᵢ`` with ``nᵢ`` samples."""
    cut = base.size - base.size // 100
    for i in range(n):
        delta = base * np.float32(_scale(i)) + np.float32(_shift(i))
        yield {"dense/kernel": delta[:cut], "dense/bias": delta[cut:]}, _samples(i)
        del delta  # or the next update would be made while this one is still alive


def _scale(i: int) -> float:
    return 1.0 + (i % 7) / 7.0


def _shift(i: int) -> float:
    return (i % 5) * 0.01


def _samples(i: int) -> int:
    return 1 + (i * 7919) % 500


def _base(p: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(SEED).random(p, np.float32) - np.float32(0.5)


def _fedge(base: npt.NDArray[np.float32], n: int, mark: Mark) -> tuple[float, list[Any]]:
    acc = WeightedMean()
    mark()
    spent = 0.0
    for delta, samples in arrivals(base, n):
        t0 = time.perf_counter()
        acc.add(delta, samples)
        spent += time.perf_counter() - t0
        del delta  # the service drops an update once folded
    t0 = time.perf_counter()
    mean = acc.result()
    return spent + time.perf_counter() - t0, [mean["dense/kernel"], mean["dense/bias"]]


def _flwr_aggregate(base: npt.NDArray[np.float32], n: int, mark: Mark) -> tuple[float, list[Any]]:
    from flwr.server.strategy.aggregate import aggregate

    results = [([d["dense/kernel"], d["dense/bias"]], k) for d, k in arrivals(base, n)]
    mark()
    t0 = time.perf_counter()
    out = aggregate(results)
    return time.perf_counter() - t0, list(out)


def _flwr_inplace(base: npt.NDArray[np.float32], n: int, mark: Mark) -> tuple[float, list[Any]]:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.server.strategy.aggregate import aggregate_inplace

    proxy = cast(Any, None)  # aggregate_inplace never looks at the ClientProxy
    results = [
        (proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(
            [d["dense/kernel"], d["dense/bias"]]), k, {}))
        for d, k in arrivals(base, n)
    ]
    mark()
    t0 = time.perf_counter()
    out = aggregate_inplace(results)
    return time.perf_counter() - t0, list(out)


SCENARIOS = {"fedge": _fedge, "flwr aggregate": _flwr_aggregate,
             "flwr aggregate_inplace": _flwr_inplace}


def _measure(impl: str, n: int, p: int) -> dict[str, Any]:
    """One case, in this (fresh) process: a timed/RSS pass, then a tracemalloc pass."""
    scenario, base = SCENARIOS[impl], _base(p)
    scenario(base, 1, lambda: None)  # warm up imports and first-call costs
    rss_before = _reset_peak_rss()
    seconds, out = scenario(base, n, lambda: None)
    peak_rss = _peak_rss() - rss_before
    error = _max_error(out, base, n)
    del out
    for _ in range(TIMED_REPEATS - 1):  # best of a few: the machine may be busy
        seconds = min(seconds, scenario(base, n, lambda: None)[0])
    held: list[int] = []
    tracemalloc.start()
    scenario(base, n, lambda: held.append(tracemalloc.get_traced_memory()[0]))
    peak_traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"impl": impl, "n": n, "p": p, "seconds": seconds, "peak_traced_bytes": peak_traced,
            "inputs_traced_bytes": held[0], "peak_rss_bytes": peak_rss, "max_abs_error": error}


def _max_error(out: list[Any], base: npt.NDArray[np.float32], n: int) -> float:
    w = np.array([_samples(i) for i in range(n)], np.float64)
    scale = float(np.dot(w, [_scale(i) for i in range(n)]) / w.sum())
    shift = float(np.dot(w, [_shift(i) for i in range(n)]) / w.sum())
    got = np.concatenate([np.asarray(a, np.float64).ravel() for a in out])
    return float(np.max(np.abs(got - (base.astype(np.float64) * scale + shift))))


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0) and return that RSS in bytes."""
    # without it the peak includes what came before, the same for every implementation
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_bytes("VmRSS")


def _peak_rss() -> int:
    return _proc_status_bytes("VmHWM")


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _measure_in_subprocess(impl: str, n: int, p: int) -> dict[str, Any]:
    case = json.dumps({"impl": impl, "n": n, "p": p})
    proc = subprocess.run([sys.executable, "-m", "tools.bench.aggregate", "--case", case],
                          capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench case {case} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    ours = {(r["n"], r["p"]): r for r in rows if r["impl"] == "fedge"}
    for r in rows:
        mine = ours.get((r["n"], r["p"]))
        if mine is not None and r["impl"] != "fedge":
            r["time_ratio"] = r["seconds"] / max(mine["seconds"], 1e-9)
            r["memory_ratio"] = r["peak_traced_bytes"] / max(mine["peak_traced_bytes"], 1)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.aggregate [--quick]``; ``--case`` runs one case (internal)."""
    parser = argparse.ArgumentParser(description="streaming FedAvg vs Flower's aggregate")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(_measure(case["impl"], int(case["n"]), int(case["p"]))))
    else:
        print(render(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
