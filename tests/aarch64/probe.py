"""Checks and trains fedge model files on this machine's TFLite runtime, as a device does.

usage: python probe.py JOB_DIR     reads JOB_DIR/plan.json, writes JOB_DIR/out-MACHINE.json

``test_aarch64.py`` runs it on the same files and data twice, on x86 and on the emulated
aarch64 device, and compares the two outputs. It imports only what a device has
(``edge_client``: numpy and the TFLite runtime; TensorFlow is made unimportable), and per
trainable file it does what a model check does: read the metadata, load the file (its
signatures must match the metadata), round-trip the weights, evaluate, train with a seeded
shuffle, evaluate again and predict. An int8 inference file is run row by row.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any


class _BlockTensorFlow:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            raise ImportError(f"{name} is blocked: a device has no TensorFlow")


sys.meta_path.insert(0, _BlockTensorFlow())  # type: ignore[arg-type]

import numpy as np  # noqa: E402

from edge_client.model import TrainableModel, read_metadata  # noqa: E402
from edge_client.runtime import Interpreter  # noqa: E402


def trainable(blob: bytes, data: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Everything a model check and one local training run show about one file."""
    meta = read_metadata(blob)
    model = TrainableModel(blob, num_threads=1)
    start = model.get_weights()
    model.set_weights(start)
    assert all(np.array_equal(v, start[k]) for k, v in model.get_weights().items())
    x, y = data["x"], data["y"]
    before = model.evaluate(x, y)
    clock = time.perf_counter()
    losses = model.fit(x, y, epochs=job["epochs"], lr=job["lr"],
                       rng=np.random.default_rng(job["seed"]))
    seconds = time.perf_counter() - clock
    steps = job["epochs"] * -(-len(x) // meta.batch_size)
    return {
        "runtime": model.runtime, "kind": meta.kind, "signatures": sorted(meta.signatures),
        "losses": losses, "before": before, "after": model.evaluate(x, y),
        "predict": model.predict(x[:8]).ravel().tolist(),
        "weights": {k: v.ravel().tolist() for k, v in model.get_weights().items()},
        "steps_per_s": steps / seconds,
    }


def inference(blob: bytes, data: Any) -> dict[str, Any]:
    """Outputs of an (int8) inference file, one example per call."""
    model = Interpreter(blob, num_threads=1)
    rows = [model.run("infer", {"x": row[None]})["output"] for row in data["x"]]
    return {"runtime": model.runtime, "output": np.concatenate(rows).ravel().tolist()}


def main(job_dir: Path) -> int:
    plan = json.loads((job_dir / "plan.json").read_text())
    out: dict[str, Any] = {"jobs": {}}
    for job in plan["jobs"]:
        blob = (job_dir / job["file"]).read_bytes()
        data = np.load(job_dir / job["data"])
        if job["kind"] == "trainable":
            out["jobs"][job["name"]] = trainable(blob, data, job)
        else:
            out["jobs"][job["name"]] = inference(blob, data)
    runtime = next(iter(out["jobs"].values()))["runtime"]
    out.update(machine=platform.machine(), python=platform.python_version(),
               numpy=np.__version__, runtime=runtime,
               runtime_version=importlib.metadata.version(runtime.replace("_", "-")),
               tensorflow_loaded="tensorflow" in sys.modules)
    (job_dir / f"out-{platform.machine()}.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
