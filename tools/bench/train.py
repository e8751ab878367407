"""Bench: on-device training speed, the TFLite ``train`` signature next to Keras ``fit``.

Every zoo model is exported (SGD with momentum 0.9, batch 32) and trained on the same
random data two ways in one run:

- **TFLite**: a child process with TensorFlow made unimportable (like a device) loads
  the exported file in ``tflite_runtime`` and times (a) bare calls of the ``train``
  signature on prepared batches, with one thread and with one per core, and (b)
  ``TrainableModel.fit`` with one thread, which adds shuffling, padding and masking.
- **Keras**: the equivalent Keras model (same layers, loss, optimizer and batch size)
  is compiled and timed in ``model.fit`` after a warm-up fit (tracing excluded), with
  TensorFlow's default threading (all cores).

Reported per model: steps per second of each (best of 3; ``quick``: half the steps,
one repetition) and the ratio TFLite ``train`` on one thread / Keras.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
BATCH = 32
SEED = 20240601
LEARNING_RATE = 0.01
#: (model, input shape, classes, label, TFLite steps, Keras steps) of a full run
CASES: tuple[tuple[str, tuple[int, ...], int, str, int, int], ...] = (
    ("logreg", (30,), 2, "30 features, binary", 4000, 1000),
    ("mlp", (30,), 2, "30 features, binary", 4000, 1000),
    ("cnn1d", (6, 100), 4, "6×100 window, 4 classes", 1000, 300),
    ("cnn2d", (28, 28), 10, "28×28 image, 10 classes", 300, 200),
)
THREADS = os.cpu_count() or 1

# The device side, run in a child process without TensorFlow; prints JSON.
DEVICE_SCRIPT = r"""
import json, sys, time

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            raise ImportError(f"{name} is blocked: a device has no TensorFlow")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
import numpy as np
from edge_client.model import TrainableModel
from edge_client.runtime import Interpreter

def best_seconds(action, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best

def train_signature(data, feeds, threads, repeats):
    model = Interpreter(data, num_threads=threads, runtime="tflite_runtime")
    for feed in feeds[:3]:  # warm-up: first calls allocate
        model.run("train", feed)
    return best_seconds(lambda: [model.run("train", feed) for feed in feeds], repeats)

results = {}
for job in json.load(sys.stdin):
    data = open(job["file"], "rb").read()
    arrays = np.load(job["data"])
    x, y = arrays["x"], arrays["y"]
    batch, steps, repeats = job["batch"], job["steps"], job["repeats"]
    scalars = {"mask": np.ones(batch, np.float32), "lr": np.float32(0.01), "mu": np.float32(0)}
    feeds = [{"x": x[i * batch:(i + 1) * batch], "y": y[i * batch:(i + 1) * batch], **scalars}
             for i in range(steps)]
    row = {f"train_{t}": steps / train_signature(data, feeds, t, repeats) for t in job["threads"]}
    model = TrainableModel(data, num_threads=1, runtime="tflite_runtime")
    model.fit(x[:3 * batch], y[:3 * batch], lr=0.01, rng=np.random.default_rng(1))  # warm-up
    fit = lambda: model.fit(x, y, lr=0.01, rng=np.random.default_rng(0))
    row["fit_1"] = steps / best_seconds(fit, repeats)
    results[job["name"]] = row
print(json.dumps(results))
"""


def _data(shape: tuple[int, ...], classes: int, steps: int) -> tuple[Array, Array]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(steps * BATCH, *shape)).astype(np.float32)
    y = rng.integers(0, max(classes, 2), steps * BATCH).astype(np.float32)
    return x, y


def keras_model(name: str, shape: tuple[int, ...], classes: int) -> Any:
    """The Keras twin of a zoo model (same layers and weight shapes), uncompiled."""
    import keras

    layers = keras.layers
    units = classes if classes >= 3 else 1
    stacks: dict[str, list[Any]] = {
        "logreg": [layers.Flatten()],
        "mlp": [layers.Flatten(), layers.Dense(32), layers.ReLU(), layers.Dense(16), layers.ReLU()],
        "cnn1d": [
            layers.Permute((2, 1)),
            layers.Conv1D(16, 5), layers.ReLU(), layers.AveragePooling1D(2),
            layers.Conv1D(16, 3), layers.ReLU(), layers.AveragePooling1D(2), layers.Flatten(),
        ],
        "cnn2d": [
            layers.Reshape((*shape, 1)),
            layers.Conv2D(8, 3), layers.ReLU(), layers.AveragePooling2D(2),
            layers.Conv2D(16, 3), layers.ReLU(), layers.AveragePooling2D(2), layers.Flatten(),
        ],
    }  # fmt: skip
    return keras.Sequential([keras.Input(shape), *stacks[name], layers.Dense(units)])


def _keras_steps_per_second(
    name: str, shape: tuple[int, ...], classes: int, steps: int, repeats: int
) -> dict[str, Any]:
    import keras

    model = keras_model(name, shape, classes)
    loss = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if classes >= 3
        else keras.losses.BinaryCrossentropy(from_logits=True)
    )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9), loss=loss)
    x, y = _data(shape, classes, steps)
    model.fit(x[: 4 * BATCH], y[: 4 * BATCH], batch_size=BATCH, epochs=1, verbose=0)  # trace
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        best = min(best, time.perf_counter() - start)
    return {"steps_s": steps / best, "params": int(model.count_params())}


def _tflite_steps_per_second(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    env = {**os.environ, "FEDGE_TFLITE_RUNTIME": "tflite_runtime"}
    done = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT], input=json.dumps(jobs), env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the TFLite timing process failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _export_jobs(directory: Path, steps_of: dict[str, int], repeats: int) -> list[dict[str, Any]]:
    from models.export import export_trainable

    jobs = []
    for name, shape, classes, *_ in CASES:
        path = directory / f"{name}.tflite"
        path.write_bytes(export_trainable(name, shape, classes, BATCH, "sgd", momentum=0.9))
        x, y = _data(shape, classes, steps_of[name])
        np.savez(directory / f"{name}.npz", x=x, y=y)
        jobs.append({
            "name": name, "file": str(path), "data": str(directory / f"{name}.npz"),
            "batch": BATCH, "steps": steps_of[name], "repeats": repeats,
            "threads": sorted({1, THREADS}),
        })  # fmt: skip
    return jobs


def run(quick: bool) -> dict[str, Any]:
    """Measure every zoo model; JSON-able results.

    Args:
        quick: half the steps and one timed repetition instead of the best of three.
    """
    repeats, scale = (1, 2) if quick else (3, 1)
    with tempfile.TemporaryDirectory(prefix="fedge-bench-train-") as directory:
        steps = {case[0]: case[4] // scale for case in CASES}
        tflite = _tflite_steps_per_second(_export_jobs(Path(directory), steps, repeats))
    rows = []
    for name, shape, classes, label, _, keras_steps in CASES:
        keras = _keras_steps_per_second(name, shape, classes, keras_steps // scale, repeats)
        _check_twin(name, shape, classes, keras["params"])
        t = tflite[name]
        rows.append({
            "model": name, "task": label, "params": keras["params"],
            "tflite_train_steps_s": round(t["train_1"], 1),
            "tflite_train_all_cores_steps_s": round(t[f"train_{THREADS}"], 1),
            "tflite_fit_steps_s": round(t["fit_1"], 1),
            "keras_fit_steps_s": round(keras["steps_s"], 1),
            "ratio": round(t["train_1"] / keras["steps_s"], 2),
        })  # fmt: skip
    return {
        "batch_size": BATCH,
        "cores": THREADS,
        "repeats": repeats,
        "versions": {p: _version(p) for p in ("tflite-runtime", "tensorflow-cpu", "keras")},
        "rows": rows,
    }


def _check_twin(name: str, shape: tuple[int, ...], classes: int, keras_params: int) -> None:
    from models.zoo import weight_shapes

    params = sum(int(np.prod(s)) for s in weight_shapes(name, shape, classes).values())
    if keras_params != params:
        raise RuntimeError(f"the Keras twin of {name} has {keras_params} parameters, not {params}")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def render(result: Mapping[str, Any]) -> str:
    """The Markdown section for ``docs/results.md``."""
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    cores = result["cores"]
    lines = [
        "## On-device training: TFLite `train` signature vs Keras `fit`",
        "",
        f"Steps per second at batch {result['batch_size']}, SGD with momentum 0.9, the same "
        f"random data, best of {result['repeats']}. TFLite: `tflite_runtime` in a process "
        "without TensorFlow, 1 thread unless noted; `TrainableModel.fit` adds shuffling, "
        f"padding and masking. Keras: `model.fit`, TensorFlow's default threading ({cores} "
        f"cores). × Keras = TFLite `train` on 1 thread / Keras. ({versions})",
        "",
        f"| model | task | params | TFLite `train` | TFLite `train`, {cores} threads "
        "| `TrainableModel.fit` | Keras `fit` | × Keras |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['params']:,} | {r['tflite_train_steps_s']:,.0f} "
            f"| {r['tflite_train_all_cores_steps_s']:,.0f} | {r['tflite_fit_steps_s']:,.0f} "
            f"| {r['keras_fit_steps_s']:,.0f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"
