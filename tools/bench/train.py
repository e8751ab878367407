"""Bench: on-device training speed, the TFLite ``train`` signature next to Keras ``fit``.

Every zoo model is exported (SGD with momentum 0.9, batch 32; the imaging model at
64×64×3 at batch 8, a device-sized batch; devices accept up to 27 there, see docs/models.md) and
trained on the same random data two ways in one run:

- **TFLite**: a child process with TensorFlow made unimportable (like a device) loads
  the exported file in ``tflite_runtime`` and times (a) bare calls of the ``train``
  signature on prepared batches, with one thread and with one per core, and (b)
  ``TrainableModel.fit`` with one thread, which adds shuffling, padding and masking.
- **Keras**: the equivalent Keras model (same layers, loss, optimizer and batch size)
  is compiled and timed in ``model.fit`` after a warm-up fit (tracing excluded), with
  TensorFlow's default threading (all cores).

Reported per model: steps per second of each (best of 3; ``quick``: half the steps,
one repetition) and the ratio TFLite ``train`` on one thread / Keras, against the
issue's target of 2× (at least 1×).

**GFLOP/s.** The FLOPs of one training step are counted analytically from the layer
shapes of the Keras twin: multiply-accumulates of the convolutions (plain, depthwise and
pointwise) and dense layers, ×2 for the forward FLOPs, and the backward pass taken as
about 2× the forward (dx and dW), so a step ≈ 3× the forward FLOPs of the batch;
elementwise layers (activations, normalisation, pooling) are not counted. Achieved
GFLOP/s = that × steps per second; it is printed beside a single-core sgemm peak measured
in the same run: numpy float32 matmul of 512×512 in a child process started with
``OPENBLAS_NUM_THREADS=1`` (and the OpenMP/MKL equivalents) so BLAS really has one thread.
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
#: (model, input shape, classes, label, batch, TFLite steps, Keras steps) of a full run
CASES: tuple[tuple[str, tuple[int, ...], int, str, int, int, int], ...] = (
    ("logreg", (30,), 2, "30 features, binary", BATCH, 4000, 1000),
    ("mlp", (30,), 2, "30 features, binary", BATCH, 4000, 1000),
    ("cnn1d", (6, 100), 4, "6×100 window, 4 classes", BATCH, 1000, 300),
    ("cnn2d", (28, 28), 10, "28×28×1 image, 10 classes", BATCH, 300, 200),
    ("imaging", (64, 64, 3), 7, "64×64×3 image, 7 classes", 8, 200, 200),
)
#: The issue's speed target: TFLite on 1 thread / Keras on all cores (1× at least).
TARGET_RATIO = 2.0
SGEMM_N = 512
#: One-thread float32 matmul, best of many; prints GFLOP/s and the BLAS thread count.
SGEMM_SCRIPT = r"""
import json, sys, time
import numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
a @ b
best = float("inf")
for _ in range(20):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
try:
    from threadpoolctl import threadpool_info
    threads = max([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] or [0])
except ImportError:
    threads = None
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9, "blas_threads": threads}))
"""
ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
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


def _data(shape: tuple[int, ...], classes: int, steps: int, batch: int
          ) -> tuple[Array, Array]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(steps * batch, *shape)).astype(np.float32)
    y = rng.integers(0, max(classes, 2), steps * batch).astype(np.float32)
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
        "imaging": [
            layers.Conv2D(16, 3, strides=2, padding="same"), layers.BatchNormalization(),
            layers.ReLU(),
            *[layer for filters in (32, 64) for layer in (
                layers.SeparableConv2D(filters, 3, padding="same"),
                layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(2))],
            layers.GlobalAveragePooling2D(), layers.Dropout(0.2),
        ],
    }  # fmt: skip
    return keras.Sequential([keras.Input(shape), *stacks[name], layers.Dense(units)])


def forward_macs(model: Any) -> int:
    """Multiply-accumulates of one example's forward pass through a built Keras model.

    Convolutions (plain, depthwise and the pointwise part of separable ones) and dense
    layers; elementwise layers are not counted.
    """
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        out = [int(d) for d in layer.output.shape[1:]]
        cin = int(layer.input.shape[-1])
        if kind == "Dense":
            macs += cin * out[-1]
        elif kind in ("Conv1D", "Conv2D"):
            macs += int(np.prod(out)) * int(np.prod(layer.kernel_size)) * cin
        elif kind == "DepthwiseConv2D":
            macs += int(np.prod(out)) * int(np.prod(layer.kernel_size))
        elif kind == "SeparableConv2D":
            positions = int(np.prod(out[:-1]))
            macs += positions * cin * (int(np.prod(layer.kernel_size)) + out[-1])
    return macs


def train_step_flops(name: str, shape: tuple[int, ...], classes: int, batch: int) -> int:
    """FLOPs of one training step: 2 × forward MACs × batch, × 3 (backward ≈ 2× forward)."""
    return 3 * 2 * forward_macs(keras_model(name, shape, classes)) * batch


def sgemm_peak() -> dict[str, Any]:
    """Single-core float32 matmul GFLOP/s, in a child with BLAS held to one thread."""
    done = subprocess.run(
        [sys.executable, "-c", SGEMM_SCRIPT, str(SGEMM_N)], env={**os.environ, **ONE_THREAD},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the sgemm process failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return {"n": SGEMM_N, **result}


def _keras_steps_per_second(
    name: str, shape: tuple[int, ...], classes: int, batch: int, steps: int, repeats: int
) -> dict[str, Any]:
    import keras

    model = keras_model(name, shape, classes)
    loss = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if classes >= 3
        else keras.losses.BinaryCrossentropy(from_logits=True)
    )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9), loss=loss)
    x, y = _data(shape, classes, steps, batch)
    model.fit(x[: 4 * batch], y[: 4 * batch], batch_size=batch, epochs=1, verbose=0)  # trace
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
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
    for name, shape, classes, _, batch, *_ in CASES:
        path = directory / f"{name}.tflite"
        path.write_bytes(export_trainable(name, shape, classes, batch, "sgd", momentum=0.9))
        x, y = _data(shape, classes, steps_of[name], batch)
        np.savez(directory / f"{name}.npz", x=x, y=y)
        jobs.append({
            "name": name, "file": str(path), "data": str(directory / f"{name}.npz"),
            "batch": batch, "steps": steps_of[name], "repeats": repeats,
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
        steps = {case[0]: case[5] // scale for case in CASES}
        tflite = _tflite_steps_per_second(_export_jobs(Path(directory), steps, repeats))
    peak = sgemm_peak()
    rows = []
    for name, shape, classes, label, batch, _, keras_steps in CASES:
        keras = _keras_steps_per_second(name, shape, classes, batch, keras_steps // scale, repeats)
        _check_twin(name, shape, classes, keras["params"])
        t = tflite[name]
        flops = train_step_flops(name, shape, classes, batch)
        ratio = round(t["train_1"] / keras["steps_s"], 2)
        rows.append({
            "model": name, "task": label, "params": keras["params"], "batch": batch,
            "tflite_train_steps_s": round(t["train_1"], 1),
            "tflite_train_all_cores_steps_s": round(t[f"train_{THREADS}"], 1),
            "tflite_fit_steps_s": round(t["fit_1"], 1),
            "keras_fit_steps_s": round(keras["steps_s"], 1),
            "ratio": ratio,
            "step_flops": flops,
            "tflite_gflops": round(flops * t["train_1"] / 1e9, 3),
            "keras_gflops": round(flops * keras["steps_s"] / 1e9, 3),
            "target_met": ratio >= TARGET_RATIO,
        })  # fmt: skip
    return {
        "batch_size": BATCH,
        "target_ratio": TARGET_RATIO,
        "sgemm": {**peak, "gflops": round(peak["gflops"], 2)},
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
    sgemm = result["sgemm"]
    target = result["target_ratio"]
    lines = [
        "## On-device training: TFLite `train` signature vs Keras `fit`",
        "",
        f"Steps per second at batch {result['batch_size']} (`imaging` at 64×64×3: batch 8), "
        "SGD with momentum 0.9, the same "
        f"random data, best of {result['repeats']}. TFLite: `tflite_runtime` in a process "
        "without TensorFlow, 1 thread unless noted; `TrainableModel.fit` adds shuffling, "
        f"padding and masking. Keras: `model.fit`, TensorFlow's default threading ({cores} "
        f"cores). × Keras = TFLite `train` on 1 thread / Keras. ({versions})",
        "",
        f"| model | task | batch | params | TFLite `train` | TFLite `train`, {cores} threads "
        "| `TrainableModel.fit` | Keras `fit` | × Keras |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['batch']} | {r['params']:,} "
            f"| {r['tflite_train_steps_s']:,.0f} "
            f"| {r['tflite_train_all_cores_steps_s']:,.0f} | {r['tflite_fit_steps_s']:,.0f} "
            f"| {r['keras_fit_steps_s']:,.0f} | {r['ratio']:.2f} |"
        )
    threads = sgemm["blas_threads"]
    lines += [
        "",
        "Achieved GFLOP/s. FLOPs of one training step counted from the layer shapes: "
        "multiply-accumulates of the convolutions and dense layers × 2 for the forward pass, "
        "the backward pass (dx and dW) taken as 2× the forward, so a step ≈ 3× the forward "
        "FLOPs of the batch (activations, normalisation and pooling not counted). "
        f"Single-core sgemm peak in the same run: numpy float32 {sgemm['n']}×{sgemm['n']} "
        "matmul in a process with `OPENBLAS_NUM_THREADS=1`"
        + (f" (BLAS threads seen by threadpoolctl: {threads})" if threads is not None else "")
        + f": **{sgemm['gflops']:.1f} GFLOP/s**. Target: TFLite on 1 thread ≥ {target:g}× "
        "Keras on all cores (at least 1×).",
        "",
        "| model | MFLOP a step | TFLite 1 thread GFLOP/s | % of sgemm peak "
        f"| Keras GFLOP/s | × Keras | ≥ {target:g}× |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['step_flops'] / 1e6:,.2f} | {r['tflite_gflops']:.2f} "
            f"| {100 * r['tflite_gflops'] / sgemm['gflops']:.1f} | {r['keras_gflops']:.2f} "
            f"| {r['ratio']:.2f} | {'met' if r['target_met'] else 'not met'} |"
        )
    return "\n".join(lines) + "\n"
