"""Bench: bytes on the wire and speed of the update codecs (fp32, fp16, int8).

Every zoo model is configured for a few tasks (tabular features, wearable windows,
small images) and sends one update of random deltas (normal, σ = 0.01) through the
whole client → aggregator path: :func:`edge_client.quantize.quantize_update` (int8 with
stochastic rounding), :meth:`Update.encode`, :func:`edge_client.transfer.split` at
128 KiB, then :class:`~edge_client.transfer.Reassembler`, :meth:`Update.decode` and
:func:`~edge_client.quantize.dequantize_update`. A synthetic 1M-parameter dense layer
shows the throughput on a payload larger than one chunk.

Measured per model and codec: **wire bytes** (sum of the chunk payloads, so the update
header, the tensor headers, the int8 scales and the chunk headers are all counted; MQTT's
own fixed header and topic are not), their **ratio** to fp32, and **encode** / **decode**
speed in MB/s of float32 model weights (4 bytes × parameters) per second, best of the
repeats. The goal is int8 at most 0.27× fp32 for models of 10k parameters or more.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edge_client.protocol import CODECS, Update
from edge_client.quantize import Float32Array, dequantize_update, quantize_update
from edge_client.transfer import DEFAULT_MAX_PAYLOAD, Reassembler, split

Shapes = Mapping[str, tuple[int, ...]]
Case = tuple[str, Shapes]  # (label, weight name → shape)

Task = tuple[tuple[int, ...], int, str]  # input shape, classes, label
TABULAR: tuple[Task, ...] = (((30,), 2, "30 features, binary"),
                             ((784,), 10, "784 features, 10 classes"))
WINDOWS: tuple[Task, ...] = (((6, 100), 4, "6×100 window, 4 classes"),
                             ((6, 1000), 4, "6×1000 window, 4 classes"))
IMAGES: tuple[Task, ...] = (((28, 28), 10, "28×28 image, 10 classes"),
                            ((64, 64), 10, "64×64 image, 10 classes"))
RGB: tuple[Task, ...] = (((64, 64, 3), 7, "64×64×3 image, 7 classes"),)
TASKS = {"logreg": TABULAR, "mlp": TABULAR, "cnn1d": WINDOWS, "cnn2d": IMAGES, "imaging": RGB}
#: transfer learning: the imaging model with its stem and first block frozen (layers 0-6),
#: whose weights stay in the model file and never travel
FROZEN_IMAGING = frozenset(range(7))
SYNTHETIC: Case = ("dense 1000×1000 (synthetic)", {"kernel": (1000, 1000), "bias": (1000,)})
GOAL_PARAMS, GOAL_RATIO = 10_000, 0.27
SEED = 20240601


def zoo_cases() -> list[Case]:
    """Every zoo model on its kind of input (a model not in TASKS: every task it accepts)."""
    from models import zoo  # tools may import models; kept local so tests can inject cases

    cases: list[Case] = []
    for name in zoo.NAMES:
        for input_shape, classes, label in TASKS.get(name, TABULAR + WINDOWS + IMAGES):
            try:
                shapes = zoo.weight_shapes(name, input_shape, classes)
            except ValueError:  # ArchitectureError: this model does not take this input
                continue
            cases.append((f"{name}: {label}", dict(shapes)))
    for input_shape, classes, label in RGB:
        spec = zoo.build("imaging", input_shape, classes)
        frozen = dataclasses.replace(spec, frozen=FROZEN_IMAGING).weight_shapes()
        cases.append((f"imaging, stem + block 1 frozen: {label}", dict(frozen)))
    return cases


def _best_seconds(action: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _send(delta: Mapping[str, Float32Array], codec: str, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    tensors, _ = quantize_update(delta, codec, None, rng=rng if codec == "int8" else None)
    update = Update("bench", 1, "client-1", 0, "0" * 64, bytes(16), 100, {"loss": 0.5},
                    codec, tensors)
    return split(update.encode(), "u-1-0001", max_payload=DEFAULT_MAX_PAYLOAD)


def _receive(chunks: Sequence[bytes]) -> dict[str, Float32Array]:
    reassembler = Reassembler()
    payload = None
    for chunk in chunks:
        payload = reassembler.accept("client-1", chunk, 0.0) or payload
    assert payload is not None
    return dequantize_update(Update.decode(payload).tensors)


def measure(label: str, shapes: Shapes, repeats: int) -> dict[str, Any]:
    """Wire bytes and speeds of one update of ``shapes`` for every codec."""
    rng = np.random.default_rng(SEED)
    delta = {n: (rng.normal(size=s) * 0.01).astype(np.float32) for n, s in shapes.items()}
    params = sum(math.prod(s) for s in shapes.values())
    megabytes = 4 * params / 1e6
    codecs: dict[str, dict[str, Any]] = {}
    for codec in CODECS:
        chunks = _send(delta, codec, SEED)
        encode_s = _best_seconds(functools.partial(_send, delta, codec, SEED), repeats)
        decode_s = _best_seconds(functools.partial(_receive, chunks), repeats)
        codecs[codec] = {"wire_bytes": sum(map(len, chunks)), "chunks": len(chunks),
                         "encode_mb_s": round(megabytes / encode_s, 2),
                         "decode_mb_s": round(megabytes / decode_s, 2)}
    for result in codecs.values():
        result["ratio"] = round(result["wire_bytes"] / codecs["fp32"]["wire_bytes"], 4)
    return {"model": label, "params": params, "tensors": len(shapes), "codecs": codecs}


def run(quick: bool, cases: Sequence[Case] | None = None) -> dict[str, Any]:
    """Measure every case (``quick``: fewer repeats); JSON-able results.

    Args:
        quick: 3 repeats instead of 20 for the timings (sizes are exact either way).
        cases: (label, weight shapes) to measure; default: the zoo plus a synthetic
            1M-parameter layer.
    """
    cases = list(cases) if cases is not None else [*zoo_cases(), SYNTHETIC]
    repeats = 3 if quick else 20
    rows = [measure(label, shapes, repeats) for label, shapes in cases]
    large = [r["codecs"]["int8"]["ratio"] for r in rows if r["params"] >= GOAL_PARAMS]
    return {"max_payload": DEFAULT_MAX_PAYLOAD, "repeats": repeats, "rows": rows,
            "goal": f"int8 <= {GOAL_RATIO}x fp32 for models >= {GOAL_PARAMS} params",
            "goal_met": bool(large) and max(large) <= GOAL_RATIO,
            "worst_int8_ratio_at_goal_size": max(large) if large else None}


def render(result: Mapping[str, Any]) -> str:
    """The Markdown section for ``docs/results.md``."""
    lines = [
        "## Update codecs: bytes on the wire and speed",
        "",
        f"One update through quantize → encode → chunk ({result['max_payload']} B cap) and "
        "back; wire bytes include every header. Speeds: MB of float32 weights per second, "
        f"best of {result['repeats']}.",
        "",
        "| model | params | codec | wire bytes | chunks | × fp32 | encode MB/s | decode MB/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        for codec, c in row["codecs"].items():
            lines.append(f"| {row['model']} | {row['params']:,} | {codec} | {c['wire_bytes']:,} "
                         f"| {c['chunks']} | {c['ratio']:.3f} | {c['encode_mb_s']:.1f} "
                         f"| {c['decode_mb_s']:.1f} |")
    worst = result["worst_int8_ratio_at_goal_size"]
    verdict = "met" if result["goal_met"] else "not met"
    lines += ["", f"Goal ({result['goal']}): **{verdict}**"
              + (f", worst int8 ratio {worst:.3f}." if worst is not None else ".")]
    return "\n".join(lines) + "\n"
