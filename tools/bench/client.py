"""Bench: what a device carries: installed size and peak memory, fedge's edge client vs TensorFlow.

**Installed size.** Full run: two fresh virtual environments made by ``python -m venv``,
one with ``pip install -c constraints.txt '.[edge]'`` (the README's device install, fedge
itself included), one with ``pip install -c constraints.txt tensorflow-cpu numpy``; the
size is the sum of the file sizes under ``site-packages`` after the install minus before
(pip and setuptools of the empty venv). Quick run (method ``metadata``): the same two
sets of distributions (each with its dependencies, resolved from their metadata) summed
from the file lists of the project's existing ``.venv`` (fedge's own code not counted).

**Peak RSS in a round.** The real ``fedge-client --once`` takes part in one round against
the real ``fedge-aggregator`` on a local Mosquitto (a ``cnn1d`` on 400 synthetic 6×100
windows, 2 local epochs). Its peak resident set size is ``ru_maxrss`` of
``getrusage(RUSAGE_CHILDREN)`` in a small parent that only starts it and waits, so
nothing but the client is counted. The same client is run with ``import tensorflow``
forced first (TensorFlow then also provides the interpreter, as in a client built on
TensorFlow), and, in a full run, from the fresh edge venv. One more row: the
``tflite_runtime`` client in one real round of the ``imaging`` model at 64×64×3 (batch 8;
400 random images, 2 local epochs), against the
issue's device bound of 150 MB peak RSS.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from packaging.requirements import Requirement

from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

ROOT = Path(__file__).resolve().parents[2]
MODEL = ("cnn1d", (6, 100), 4)
#: (model, input shape, classes, batch) of the imaging round, and its peak RSS bound.
IMAGING = ("imaging", (64, 64, 3), 7, 8)
IMAGING_BOUND_BYTES = 150e6
SAMPLES, EPOCHS = 400, 2
EDGE_ROOTS, TF_ROOTS = ("fedge[edge]",), ("tensorflow-cpu", "numpy")
#: Waits for one child and writes its peak RSS (KiB on Linux) to the file in argv[1].
PEAK_SCRIPT = ("import json, resource, subprocess, sys\n"
               "code = subprocess.call(sys.argv[2:])\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "open(sys.argv[1], 'w').write(json.dumps({'code': code, 'maxrss_kib': peak}))\n")
#: Bytes of the files each installed distribution lists, as JSON (run in the measured venv).
DIST_SIZES = ("import importlib.metadata as m, json\n"
              "sizes = {}\n"
              "for d in m.distributions():\n"
              "    paths = [d.locate_file(f) for f in d.files or []]\n"
              "    sizes[d.metadata['Name']] = sum(p.stat().st_size for p in paths\n"
              "                                    if p.is_file())\n"
              "print(json.dumps(sizes))\n")
WITH_TENSORFLOW = ("import sys\nimport tensorflow  # loaded first, as in a TensorFlow client\n"
                   "from edge_client.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")


def run(quick: bool) -> dict[str, Any]:
    """Sizes and peak RSS; ``quick`` measures sizes from ``.venv`` metadata (no new venvs)."""
    with tempfile.TemporaryDirectory(prefix="fedge-bench-client-") as tmp:
        work = Path(tmp)
        edge_python: Path | None = None
        if quick:
            method, edge, tf = "metadata", metadata_size(EDGE_ROOTS), metadata_size(TF_ROOTS)
        else:
            method = "fresh venv"
            edge = venv_size(work / "edge-venv", [f"{ROOT}[edge]"])
            tf = venv_size(work / "tf-venv", list(TF_ROOTS))
            edge_python = work / "edge-venv" / "bin" / "python"
        sizes = {"method": method, "edge": edge, "tensorflow": tf,
                 "ratio": tf["bytes"] / edge["bytes"]}
        memory = peak_rss(work, edge_python)
    return {"sizes": sizes, "memory": memory, "model": f"{MODEL[0]} {MODEL[1]}",
            "samples": SAMPLES, "epochs": EPOCHS}


# -- installed size ------------------------------------------------------------------
def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of every regular file under ``path``."""
    total = files = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                total, files = total + p.stat().st_size, files + 1
    return total, files


def venv_size(venv: Path, requirements: list[str]) -> dict[str, Any]:
    """Makes ``venv``, installs ``requirements``; what the install added under site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    before, files_before = tree_bytes(site)
    t0 = time.perf_counter()
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c",
                           str(ROOT / "constraints.txt"), *requirements],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {requirements} failed:\n{done.stderr[-2000:]}")
    after, files_after = tree_bytes(site)
    seconds = time.perf_counter() - t0
    sizes = json.loads(subprocess.run([str(python), "-c", DIST_SIZES], capture_output=True,
                                      text=True, check=True).stdout)
    added = {k: v for k, v in sizes.items() if k.lower() not in ("pip", "setuptools")}
    return {"bytes": after - before, "files": files_after - files_before,
            "install_seconds": round(seconds, 1), "distributions": len(added),
            "largest": _largest(added)}


def _largest(sizes: dict[str, int], count: int = 3) -> dict[str, int]:
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:count])


def closure(roots: Iterable[str]) -> dict[str, md.Distribution]:
    """Installed distributions needed by ``roots`` (requirement strings), transitively."""
    found: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # not installed here: an optional dependency of another platform
        found[key] = dist
        for text in dist.requires or []:
            dep = Requirement(text)
            extras = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(x) for x in extras):
                todo.append(dep)
    return found


def metadata_size(roots: Iterable[str]) -> dict[str, Any]:
    """Bytes of the files the metadata of ``roots``' closure lists (in this environment)."""
    dists = closure(roots)
    sizes: dict[str, int] = {}
    files = 0
    for name, dist in dists.items():
        paths = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        found = [p for p in paths if p.is_file()]
        sizes[name], files = sum(p.stat().st_size for p in found), files + len(found)
    return {"bytes": sum(sizes.values()), "files": files, "distributions": len(dists),
            "largest": _largest(sizes)}


# -- peak RSS ----------------------------------------------------------------------
def peak_rss(work: Path, edge_python: Path | None) -> list[dict[str, Any]]:
    """One round per client variant against the real aggregator; peak RSS of each client."""
    from models.export import export_trainable

    cases = {}
    for name, shape, classes, batch in ((*MODEL, 32), IMAGING):
        model, data = work / f"{name}.tflite", work / f"{name}.npz"
        model.write_bytes(export_trainable(name, shape, classes, batch, seed=0))
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.normal(size=(SAMPLES, *shape)).astype(np.float32),
                 y=rng.integers(0, classes, SAMPLES))
        cases[name] = (model, data, f"{name} {'×'.join(map(str, shape))}, batch {batch}")
    tflite = [sys.executable, "-m", "edge_client"]
    variants: list[tuple[str, str, list[str]]] = [
        ("fedge-client (tflite_runtime)", MODEL[0], tflite),
        ("fedge-client, TensorFlow imported first (tf.lite)", MODEL[0],
         [sys.executable, "-c", WITH_TENSORFLOW]),
        ("fedge-client (tflite_runtime)", IMAGING[0], tflite),
    ]
    if edge_python is not None:
        variants.insert(0, ("fedge-client from the fresh edge venv", MODEL[0],
                            [str(edge_python), "-m", "edge_client"]))
    rows = []
    with MosquittoBroker() as broker, ExitStack() as stack:
        fleet = stack.enter_context(Fleet(work / "logs"))
        for i, (label, name, command) in enumerate(variants):
            model, data, what = cases[name]
            row = {**_one_round(fleet, broker.url, model, data, work, i, label, command),
                   "model": what}
            if name == IMAGING[0]:
                row["bound_bytes"] = IMAGING_BOUND_BYTES
                row["within_bound"] = row["peak_rss_bytes"] < IMAGING_BOUND_BYTES
            rows.append(row)
    return rows


def _one_round(fleet: Fleet, url: str, model: Path, data: Path, work: Path, i: int,
               label: str, command: list[str]) -> dict[str, Any]:
    federation = f"rss{i}"
    agg = fleet.start(f"aggregator-{i}", "aggregator", [
        "--broker", url, "--federation", federation, "--model", str(model),
        "--state-dir", str(work / f"agg-{i}"), "--rounds", "1", "--min-clients", "1",
        "--round-timeout", "120", "--epochs", str(EPOCHS)])
    out = work / f"peak-{i}.json"
    client = [*command, "--broker", url, "--federation", federation, "--client-id", "dev-1",
              "--data", str(data), "--state-dir", str(work / f"client-{i}"),
              "--once", "--seed", "0"]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(out), *client],
                          capture_output=True, text=True, timeout=300, cwd=work)
    seconds = time.perf_counter() - t0
    peak: dict[str, int | None] = (json.loads(out.read_text()) if out.exists()
                                   else {"code": None, "maxrss_kib": None})
    if peak["code"] != 0:
        raise RuntimeError(f"{label} did not finish its round:\n{done.stderr[-2000:]}")
    code = agg.proc.wait(timeout=60)
    if code != 0:
        raise RuntimeError(f"the aggregator exited with {code}:\n{agg.tail()}")
    return {"client": label, "peak_rss_bytes": int(peak["maxrss_kib"] or 0) * 1024,
            "seconds": round(seconds, 2)}


def _size_row(label: str, size: dict[str, Any]) -> str:
    largest = ", ".join(f"{k} {v / 1e6:,.0f}" for k, v in size["largest"].items())
    seconds = size.get("install_seconds")
    return (f"| {label} | {size['distributions']} | {size['files']:,} | "
            f"{size['bytes'] / 1e6:,.1f} | {largest} | "
            f"{'' if seconds is None else f'{seconds:.0f}'} |")


def render(result: dict[str, Any]) -> str:
    """The Markdown section for ``docs/results.md``."""
    s = result["sizes"]
    how = ("fresh venvs made by `python -m venv` and `pip install -c constraints.txt`; bytes "
           "of the files the install added to site-packages" if s["method"] == "fresh venv"
           else "file lists in the installed metadata of the project's `.venv` (each set "
           "with its dependencies; fedge's own code not counted)")
    mem = result["memory"]
    base = next(m for m in mem if m["client"] == "fedge-client (tflite_runtime)"
                and "bound_bytes" not in m)
    lines = [
        "## What a device carries: fedge's edge install vs TensorFlow",
        "",
        f"Installed size, measured with {how}.",
        "",
        "| install | distributions | files | MB | largest (MB) | pip install (s) |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
        _size_row("`fedge[edge]` (numpy, paho-mqtt, cbor2, tflite-runtime)", s["edge"]),
        _size_row("`tensorflow-cpu` + numpy", s["tensorflow"]),
        "",
        f"TensorFlow is **{s['ratio']:.0f}×** the edge install.",
        "",
        f"Peak RSS of one client process taking part in one round (real `fedge-client --once`, "
        f"real `fedge-aggregator`, local Mosquitto; {result['samples']} random "
        f"samples, {result['epochs']} local epochs), from `getrusage(RUSAGE_CHILDREN)` of a "
        f"parent that only waits for it. × = peak / the `tflite_runtime` client's on "
        f"{base['model']}.",
        "",
        "| client | model | peak RSS (MB) | × | wall time (s) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for m in mem:
        lines.append(f"| {m['client']} | {m['model']} | {m['peak_rss_bytes'] / 1e6:,.1f} | "
                     f"{m['peak_rss_bytes'] / base['peak_rss_bytes']:.2f} | {m['seconds']:.1f} |")
    for m in mem:
        if "bound_bytes" in m:
            verdict = "within" if m["within_bound"] else "over"
            lines += ["", f"The device bound for {m['model']} is {m['bound_bytes'] / 1e6:.0f} MB "
                      f"peak RSS: {m['peak_rss_bytes'] / 1e6:,.1f} MB is **{verdict}** it."]
    return "\n".join(lines) + "\n"
