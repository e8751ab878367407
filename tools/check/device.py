"""The device half of ``fedge check-model``: run a model file as a device would.

Run as ``python -m tools.check.device FILE``. TensorFlow, Keras and tf_keras are made
unimportable before anything else is imported, so the runtime is a plain TFLite one
(``tflite_runtime`` unless ``FEDGE_TFLITE_RUNTIME`` says otherwise). Prints one JSON
object: the runtime, one ``train`` step's loss, the median step time, whether a
``get_weights``/``set_weights`` round trip returned what was set, and the process's peak
resident memory. Exit 0 when every step ran, 1 (with ``"error"``) when one failed.
"""

from __future__ import annotations

import sys

BLOCKED = ("tensorflow", "keras", "tf_keras")


class _Blocked:
    """An import hook that refuses TensorFlow, as on a device that does not have it."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: fedge check-model plays a device without it")


sys.meta_path.insert(0, _Blocked())

import json  # noqa: E402 - after the hook: nothing below may bring TensorFlow in
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edge_client.errors import FedgeError  # noqa: E402
from edge_client.model_file import archive_start, read_metadata  # noqa: E402
from edge_client.runtime import ENV_VAR, Interpreter  # noqa: E402

NEEDED = ("train", "get_weights", "set_weights")
TIMING_S = 0.3  # measure steps for about this long (at least 3, at most 200)


def _flatbuffer_and_rate(data: bytes) -> tuple[bytes, float]:
    """The flatbuffer without a fedge archive, and the file's default learning rate."""
    try:
        end = archive_start(data)
    except FedgeError:
        return data, 0.01  # not a fedge file: no metadata, a small rate
    rate = read_metadata(data).learning_rate
    return data[:end], 0.01 if rate is None else rate


def _batch(model: Interpreter, rate: float, rng: np.random.Generator) -> dict[str, Any]:
    """Inputs for ``train``: a random batch, all rows real, label 0, FedProx off."""
    feed: dict[str, Any] = {}
    for name, spec in model.inputs("train").items():
        if name == "mask":
            feed[name] = np.ones(spec.shape, spec.dtype)
        elif name == "lr":
            feed[name] = np.asarray(rate, spec.dtype)
        elif name in ("y", "mu") or not np.issubdtype(np.dtype(spec.dtype), np.floating):
            feed[name] = np.zeros(spec.shape, spec.dtype)
        else:
            feed[name] = rng.normal(size=spec.shape).astype(spec.dtype)
    return feed


def _round_trip(model: Interpreter) -> int:
    """Set shifted weights, read them back, restore; the number of tensors."""
    weights = model.run("get_weights", {})
    shifted = {k: (v + 0.25).astype(v.dtype) for k, v in weights.items()}
    model.run("set_weights", shifted)
    back = model.run("get_weights", {})
    wrong = sorted(k for k in shifted if k not in back or not np.array_equal(back[k], shifted[k]))
    if wrong or set(back) != set(shifted):
        raise RuntimeError(f"get_weights after set_weights differs in {wrong or sorted(back)}")
    model.run("set_weights", weights)
    return len(weights)


def check(data: bytes) -> dict[str, Any]:
    """Run the checks on the file contents ``data``; the results as JSON-able values."""
    flatbuffer, rate = _flatbuffer_and_rate(data)
    model = Interpreter(flatbuffer, num_threads=1,
                        runtime=os.environ.get(ENV_VAR) or "tflite_runtime")
    missing = [s for s in NEEDED if s not in model.signatures]
    if missing:
        raise RuntimeError(f"no {', '.join(missing)} signature: not a trainable model "
                           f"(signatures: {', '.join(model.signatures) or 'none'})")
    feed = _batch(model, rate, np.random.default_rng(0))
    loss = float(np.asarray(model.run("train", feed)["loss"]))
    if not np.isfinite(loss):
        raise RuntimeError(f"train gave a non-finite loss ({loss})")
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < TIMING_S and len(times) < 200):
        begin = time.perf_counter()
        model.run("train", feed)
        times.append(time.perf_counter() - begin)
    tensors = _round_trip(model)
    return {
        "runtime": model.runtime, "tensorflow_importable": False, "loss": loss,
        "step_ms": 1000 * float(np.median(times)), "steps_timed": len(times),
        "weights": tensors, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024, "signatures": list(model.signatures),
    }  # fmt: skip


def main(argv: list[str]) -> int:
    """Check the file ``argv[0]``; print the JSON result."""
    try:
        with open(argv[0], "rb") as f:
            result = check(f.read())
    except (FedgeError, RuntimeError, ValueError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
