"""Bench: one round of N clients through the real aggregator, next to the transport floor.

For each N, in one run on a fresh Mosquitto (loopback): N simulated devices
(``tools.simulate.worker``, a few processes, one MQTT connection per device) hold
precomputed int8 updates of a 99,034-parameter ``mlp`` (3,072 inputs: a 32×32×3 image
flattened), one ≈ 100 KB chunk per update at the 128 KiB cap. One subscriber
(``tools.bench.monitor``) takes every time, on receipt, with one clock:

- **floor**: it publishes a ``Round`` on a second federation; every device answers with
  its update's chunks, encoded beforehand (same sizes, same chunking, QoS 1, through the
  same paho adapter); time from the trigger's receipt until it has received every chunk.
  One untimed warm-up, then R timed repetitions.
- **round**: the real ``fedge-aggregator`` (quorum N, so a round closes when all N are
  accepted); time from the receipt of its ``Round`` to the receipt of the ``Manifest`` of
  the new global weights. Devices decode the Round, encode their update and publish (and
  never re-send, which the reference client does after 20 s without a reply); the
  aggregator reassembles, decodes, validates, stores (fsync), folds, replies (waiting for
  each PUBACK), aggregates, checkpoints and publishes the new weights. R rounds.

Each N runs with its own broker, devices and floor. (An experiment that switched Nagle's
algorithm off from outside found the 43 ms delayed-ACK wait per reply that dominated the
first measurement; the transport now ships with ``TCP_NODELAY``, so every row is the
aggregator as shipped.)

The medians are compared. Where the rest goes: the aggregator's worker-thread time in the
median round by stage, as the service reports it through its stage hook
(:mod:`tools.bench.stages`; exclusive wall time, so the stages add up to the round), and
the devices' own encode time, which here shares the machine's cores with everything else.
A round the service reported no window for has no stage times (``window_seconds`` null).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aggregator.stages import Stage
from edge_client.protocol import Hyperparameters, Round, Topics
from edge_client.transfer import DEFAULT_MAX_PAYLOAD
from tools.bench.monitor import FLOOR_RUN, FLOOR_SHA, FloorRun, Monitor, RoundRun
from tools.bench.stages import OTHER
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet
from tools.simulate.device import DeviceSpec, UpdateSource, update_chunks
from tools.simulate.faults import Faults
from tools.simulate.pool import DevicePool, fleet_devices
from tools.simulate.spec import WorkerSpec

MODEL = ("mlp", (3072,), 10)
FULL, QUICK = (10, 100, 500), (10,)
REPEATS_FULL, REPEATS_QUICK = 3, 2
GOAL_N, GOAL_RATIO = 100, 1.5
VARIANT = "shipped"  # every row is the aggregator as shipped (see the module docstring)
SEED = 20240601
NO_RESEND = 3600.0  # devices wait for their reply: a re-send would be measured as work


def run(quick: bool) -> dict[str, Any]:
    """Measure every N (``quick``: N = 10 only, 2 repetitions); JSON-able results."""
    repeats = REPEATS_QUICK if quick else REPEATS_FULL
    with tempfile.TemporaryDirectory(prefix="fedge-bench-round-") as tmp:
        work = Path(tmp)
        model, shapes = _export(work)
        rows = [measure(n, repeats, model, shapes, work / f"n{n}")
                for n in (QUICK if quick else FULL)]
        fs = _filesystem(work)
    params = sum(math.prod(s) for s in shapes.values())
    goal = next((r for r in rows if r["n"] == GOAL_N), None)
    return {"model": f"{MODEL[0]} {MODEL[1][0]} inputs, {MODEL[2]} classes", "params": params,
            "codec": "int8", "max_payload": DEFAULT_MAX_PAYLOAD, "repeats": repeats,
            "state_filesystem": fs, "rows": rows,
            "goal": f"round <= {GOAL_RATIO}x floor at N = {GOAL_N}",
            "goal_met": None if goal is None else goal["ratio"] <= GOAL_RATIO}


def _export(work: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    from models import zoo
    from models.export import export_trainable

    name, shape, classes = MODEL
    path = work / "model.tflite"
    path.write_bytes(export_trainable(name, shape, classes, 32, seed=0))
    return path, dict(zoo.weight_shapes(name, shape, classes))


def measure(n: int, repeats: int, model: Path, shapes: dict[str, tuple[int, ...]],
            work: Path) -> dict[str, Any]:
    """Floor and real rounds for ``n`` devices on one fresh broker.

    Args:
        n: simulated devices.
        repeats: timed floor runs and rounds.
        model: the trainable model file.
        shapes: its weight shapes.
        work: a fresh directory for logs, events and the aggregator's state.
    """
    topics, floor = Topics(f"bench{n}"), Topics(f"floor{n}")
    devices = fleet_devices(n, SEED)
    ids = [d[0] for d in devices]
    per_device = _floor_chunks(devices[0], shapes, floor)
    with ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker())
        fleet = stack.enter_context(Fleet(work / "logs"))
        pool = DevicePool(fleet, work / "devices")
        stack.callback(pool.stop)
        pool.start(WorkerSpec(broker=broker.url, federation=topics.federation, devices=devices,
                              shapes=shapes, events="", floor_federation=floor.federation,
                              seed=SEED, max_payload=DEFAULT_MAX_PAYLOAD,
                              resend_after=NO_RESEND),
                   processes=min(4, max(1, math.ceil(n / 50))))
        monitor = stack.enter_context(Monitor(broker.url, topics, floor))
        pool.wait_ready(timeout=60 + n * 0.2)
        monitor.floor(0, ids, n * per_device)  # warm-up: devices encode their floor chunks
        floors = [monitor.floor(k, ids, n * per_device) for k in range(1, repeats + 1)]
        agg = fleet.start("aggregator", "tools.bench.stages", [
            str(work / "stages.json"), "--",
            *_aggregator_args(n, repeats, model, broker.url, topics, work)])
        rounds = monitor.rounds(repeats, lambda: agg.proc.poll() is None, timeout=600)
        agg.proc.wait(timeout=60)
        pool.stop()
    stages = json.loads((work / "stages.json").read_text())
    return {"n": n, "variant": VARIANT, "processes": len(pool.workers),
            "chunks_per_update": per_device, **_summary(floors, rounds, stages, pool.events)}


def _summary(floors: list[FloorRun], rounds: list[RoundRun], stages: dict[str, Any],
             events: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ratio; stage times and the devices' side of the median round."""
    median = sorted(rounds, key=lambda r: r.seconds)[len(rounds) // 2]
    window: dict[str, Any] = next(
        (w for w in stages["windows"] if w["round"] == median.round_id),
        {"seconds": None, "stages": {}, "calls": {}})  # the service reported no window
    sent = [e for e in events if e["event"] == "sent" and e["round"] == median.round_id]
    floor_s, round_s = [f.seconds for f in floors], [r.seconds for r in rounds]
    return {
        "floor_seconds": floor_s, "round_seconds": round_s,
        "floor_median": statistics.median(floor_s), "round_median": statistics.median(round_s),
        "ratio": statistics.median(round_s) / statistics.median(floor_s),
        "floor_bytes": floors[0].bytes, "round_update_bytes": sum(e["bytes"] for e in sent),
        "median_round": median.round_id, "window_seconds": window["seconds"],
        "stages": {k: round(v, 6) for k, v in window["stages"].items()},
        "calls": window["calls"],
        "devices_encode_seconds": sum(e["encode_s"] for e in sent),
        "last_update_sent_after": max(e["at"] for e in sent) - median.announced_at,
    }


def _floor_chunks(device: tuple[str, int, int], shapes: dict[str, tuple[int, ...]],
                  floor: Topics) -> int:
    """Chunks per update, computed exactly as the devices do."""
    spec = DeviceSpec(device[0], device[1], device[2], floor, Faults(), SEED,
                      DEFAULT_MAX_PAYLOAD)
    r = Round(federation=floor.federation, round_id=1, weights_version=0,
              model_sha256=FLOOR_SHA, deadline=1.0,
              hyperparameters=Hyperparameters(epochs=1, batch_size=32, learning_rate=0.01),
              codec="int8", fraction=1.0, run_id=FLOOR_RUN)
    return len(update_chunks(spec, UpdateSource(shapes, SEED, variants=1), r, bytes(16)))


def _aggregator_args(n: int, repeats: int, model: Path, url: str, topics: Topics,
                     work: Path) -> list[str]:
    return ["--broker", url, "--federation", topics.federation, "--model", str(model),
            "--state-dir", str(work / "aggregator"), "--rounds", str(repeats),
            "--min-clients", str(n), "--min-available", str(n), "--round-timeout", "300",
            "--codec", "int8", "--max-payload", str(DEFAULT_MAX_PAYLOAD)]


def _filesystem(path: Path) -> str:
    """Type of the file system holding ``path`` (fsync costs depend on it)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


VARIANT_LABELS = {VARIANT: "as shipped"}
REPLY = Stage.REPLY.value


def render(result: dict[str, Any]) -> str:
    """The Markdown section for ``docs/results.md``."""
    rows = result["rows"]
    lines = [
        "## One round through the real aggregator vs the MQTT transport floor",
        "",
        f"N simulated clients each send one int8 update of a {result['params']:,}-parameter "
        f"{result['model']} ({result['max_payload']:,} B chunks) through a local Mosquitto. "
        "*Floor*: the same number of clients publish chunks of the same size, encoded "
        "beforehand, with QoS 1 to one plain subscriber; time from its trigger to the last "
        "chunk. *Round*: the real `fedge-aggregator` (quorum N); time from its `Round` "
        "message to the `Manifest` of the new global weights. Both are timed on receipt by "
        f"the same subscriber in the same run; medians of {result['repeats']}. Clients encode "
        "their update when the round arrives (no training), on this machine's cores. "
        "The transport switches Nagle's algorithm off (TCP_NODELAY); with it on, each reply "
        "waited ~43 ms for a delayed ACK and the round took 62.5× the floor at N = 100. "
        f"Aggregator state on {result['state_filesystem']}.",
        "",
        "| N | aggregator | floor (s) | round (s) | × floor | update bytes | clients' encode "
        "(s, total) | last update sent (s) | wait per reply (ms) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        reply = 1e3 * r["stages"].get(REPLY, 0.0) / max(1, r["calls"].get(REPLY, 0))
        lines.append(f"| {r['n']} | {VARIANT_LABELS[r['variant']]} | {r['floor_median']:.3f} "
                     f"| {r['round_median']:.3f} | {r['ratio']:.1f} | "
                     f"{r['round_update_bytes']:,} | {r['devices_encode_seconds']:.3f} | "
                     f"{r['last_update_sent_after']:.3f} | {reply:.1f} |")
    lines += ["", *_stage_table(rows), "", _goal_line(result)]
    return "\n".join(lines) + "\n"


def _stage_table(rows: list[dict[str, Any]]) -> list[str]:
    timed = [r for r in rows if r["window_seconds"] is not None]
    if not timed:
        return ["Where the round's time goes: not reported (the aggregator's service reported "
                "no round window to its stage hook)."]
    labels = sorted({k for r in timed for k in r["stages"]},
                    key=lambda k: -max(r["stages"].get(k, 0.0) for r in timed))
    head = " | ".join(f"N={r['n']}, {VARIANT_LABELS[r['variant']]}" for r in timed)
    lines = [
        "Where the round's time goes: the aggregator's worker thread in the median round, "
        "seconds by stage (exclusive wall time, reported by the service through its stage "
        "hook, `aggregator/stages.py`, and totalled by `tools/bench/stages.py`; "
        f"*{Stage.WAIT.value}* is idle time while clients encode and the broker delivers; "
        f"*{OTHER}* is the rest of the window). The window runs from just before the "
        "round's announcement to the publication of its new global model.",
        "",
        f"| stage | {head} |",
        "| --- |" + " ---: |" * len(timed),
    ]
    for label in labels:
        cells = " | ".join(f"{r['stages'].get(label, 0.0):.3f}" for r in timed)
        lines.append(f"| {label} | {cells} |")
    total = " | ".join(f"{r['window_seconds']:.3f}" for r in timed)
    lines.append(f"| **announcement → round closed** | {total} |")
    return lines


def _goal_line(result: dict[str, Any]) -> str:
    if result["goal_met"] is None:
        return f"Target ({result['goal']}): not measured in this run."
    ratio = next(r["ratio"] for r in result["rows"] if r["n"] == GOAL_N)
    verdict = "met" if result["goal_met"] else "not met"
    return f"Target ({result['goal']}): **{verdict}** ({ratio:.1f}×)."
