"""``fedge simulate``: a fleet of simulated devices with faults against the real aggregator.

Starts a broker (Mosquitto on a free loopback port, or ``--broker``), up to a thousand
simulated devices in a few worker processes (``tools.simulate.worker``: one MQTT connection
per device, the real wire protocol, precomputed quantized updates instead of training),
and the real ``fedge-aggregator`` process. Faults are drawn per device and round from
``--seed``: ``--dropout`` (skip the round), ``--slow`` (answer ``--slow-delay`` seconds
late), ``--crash-mid-upload`` (publish some chunks, vanish without DISCONNECT, come back
after the round's deadline), ``--duplicate-sends`` (publish the update twice).

With ``--train`` the devices really train: each worker holds one TFLite interpreter
of the dataset's zoo model (tflite_runtime, as ``fedge-client``) and trains each of its
devices on that device's shard of ``--dataset`` with the client's own training code,
swapping weights per device; the aggregator announces ``--epochs`` and ``--lr`` as usual
(pass ``--dp-*`` flags through ``--aggregator-arg``). The initial and final global models
are then scored on the dataset's held-out test set, and each worker's training throughput
is reported. At most 300 devices fit in one worker (``--workers``).

Prints one line per round (selected, sent, received, accepted, re-sends answered
"already accepted", faults, duration, rejections by reason) and writes ``--json`` in
the layout of the demo's results (accuracy null: simulated devices do not evaluate).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.history import read_history
from edge_client.errors import ConfigError
from tools.runtime.federation import FederationError, start_broker
from tools.runtime.fleet import Child, Fleet
from tools.simulate.faults import Faults
from tools.simulate.pool import DevicePool, default_processes, fleet_devices
from tools.simulate.report import HEADER, format_row, rows_of, summary
from tools.simulate.shards import FleetData, fleet_data
from tools.simulate.spec import WorkerSpec

log = logging.getLogger(__name__)
MAX_CLIENTS = 4096  # a Round lists at most 4096 selected ids
FEDERATION = "simulate"
# paho's network loop uses select(), which takes file descriptors below 1024, and a device
# holds about three (its socket and a wake-up pair): 500 devices in one worker failed to
# connect on this project's machines, 250 (the default split) work
MAX_PER_WORKER = 300
DEFAULT_DATASET = "wearable-synthetic"  # makes as many devices as asked, naturally partitioned
TRAIN_BATCH = 32  # shards of a few dozen samples train in one or two batches


def _dataset(args: argparse.Namespace) -> str:
    return str(args.dataset or DEFAULT_DATASET)


def add_parser(sub: Any) -> None:
    """Registers ``fedge simulate``."""
    p = sub.add_parser("simulate", help="simulated devices with faults against the real "
                       "aggregator over a real broker", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", "--devices", type=int, default=100, dest="clients",
                   help="simulated devices (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--processes", "--workers", type=int, dest="processes",
                   help="worker processes (default: one per 250 devices)")
    p.add_argument("--seed", type=int, default=0, help="seeds faults, samples and updates")
    t = p.add_argument_group("training (--train)")
    t.add_argument("--train", action="store_true", help="devices really train with the TFLite "
                   "runtime on their shard of --dataset (one interpreter per worker); the "
                   "dataset then decides the model, input shape and classes")
    t.add_argument("--dataset", help="offline dataset for --train (default wearable-synthetic,"
                   " built with --devices devices); one of " + ", ".join(_dataset_names()))
    t.add_argument("--epochs", type=int, help="local epochs per round, announced by the "
                   "aggregator (default: the aggregator's)")
    t.add_argument("--lr", type=float, help="local learning rate, announced by the aggregator "
                   "(default: the model file's)")
    p.add_argument("--model", default="mlp", help="zoo model (default mlp)")
    p.add_argument("--input-shape", default="784", help="comma-separated (default 784)")
    p.add_argument("--classes", type=int, default=10, help="default 10")
    p.add_argument("--codec", choices=["fp32", "fp16", "int8"], default="int8")
    p.add_argument("--round-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--min-clients", type=int, help="quorum (default: half the clients)")
    p.add_argument("--resend-after", type=float, default=20.0, help="seconds without a "
                   "reply before a device re-sends its update (default 20, as fedge-client)")
    p.add_argument("--max-payload", type=int, default=16384, help="chunk size of every "
                   "payload in bytes (default 16384, so updates span several chunks)")
    g = p.add_argument_group("faults (probabilities per device and round)")
    g.add_argument("--dropout", type=float, default=0.0, help="skip the round")
    g.add_argument("--slow", type=float, default=0.0, help="answer --slow-delay s late")
    g.add_argument("--slow-delay", type=float, default=5.0, help="seconds (default 5)")
    g.add_argument("--crash-mid-upload", type=float, default=0.0,
                   help="publish some chunks, disconnect without DISCONNECT, return next round")
    g.add_argument("--duplicate-sends", type=float, default=0.0, help="send the update twice")
    p.add_argument("--aggregator-arg", action="append", default=[], metavar="ARG",
                   help="one more flag for fedge-aggregator, e.g. "
                   "--aggregator-arg=--max-transfers=1024 (repeatable)")
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument("--out", type=Path, default=Path("out/simulate"),
                   help="model, state, logs and events (default out/simulate)")
    p.add_argument("--json", type=Path, help="results JSON (default OUT/results.json)")
    p.set_defaults(func=run)


def _dataset_names() -> list[str]:
    from tools.datasets import DATASETS

    return list(DATASETS)


def check_args(args: argparse.Namespace) -> tuple[int, ...]:
    """Validates the flags; returns the input shape.

    Raises:
        ConfigError: a value out of range, naming the flag.
    """
    if not 1 <= args.clients <= MAX_CLIENTS:
        raise ConfigError(f"--clients must be in [1, {MAX_CLIENTS}], got {args.clients}")
    for flag in ("rounds", "processes", "min_clients"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    workers = args.processes or default_processes(args.clients)
    if math.ceil(args.clients / workers) > MAX_PER_WORKER:
        raise ConfigError(f"--workers {workers}: {math.ceil(args.clients / workers)} devices "
                          f"per worker, at most {MAX_PER_WORKER} fit in one (give --workers "
                          f"{math.ceil(args.clients / MAX_PER_WORKER)} or more)")
    if args.min_clients is not None and args.min_clients > args.clients:
        raise ConfigError("--min-clients cannot exceed --clients")
    for flag in ("dropout", "slow", "crash_mid_upload", "duplicate_sends"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise ConfigError(f"--{flag.replace('_', '-')} is a probability in [0, 1]")
    if args.dataset is not None and not args.train:
        raise ConfigError("--dataset needs --train (without it devices send random deltas)")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    if min(args.round_timeout, args.resend_after) <= 0 or args.slow_delay < 0:
        raise ConfigError("--round-timeout and --resend-after must be positive, --slow-delay "
                          "not negative")
    try:
        return tuple(int(d) for d in str(args.input_shape).split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {args.input_shape!r}: expected e.g. 784 or 6,100"
                          ) from None


def export_model(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[Path, dict[str, Any]]:
    """Writes the trainable model file; returns its path and weight shapes."""
    from models import zoo
    from models.export import export_trainable

    try:
        shapes = zoo.weight_shapes(args.model, shape, args.classes)
        blob = export_trainable(args.model, shape, args.classes, 32, seed=args.seed)
    except ValueError as e:
        raise ConfigError(f"--model {args.model} --input-shape {args.input_shape}: {e}"
                          ) from None
    path = args.out / "model.tflite"
    path.write_bytes(blob)
    return path, dict(shapes)


def export_dataset_model(args: argparse.Namespace, data: FleetData
                         ) -> tuple[Path, dict[str, Any]]:
    """``--train``: the dataset's zoo model, exported trainable; its path and weight shapes."""
    from models import zoo
    from models.export import export_trainable

    info = data.dataset.info
    blob = export_trainable(info.model, info.input_shape, len(info.classes), TRAIN_BATCH,
                            seed=args.seed)
    path = args.out / "model.tflite"
    path.write_bytes(blob)
    return path, dict(zoo.weight_shapes(info.model, info.input_shape, len(info.classes)))


def evaluation(model: Path, state: Path, test: tuple[Any, Any]) -> dict[str, Any]:
    """Loss and accuracy on the held-out test set of the initial and the final global model."""
    from edge_client.model import TrainableModel

    m = TrainableModel(model.read_bytes())
    initial = m.evaluate(*test)
    final_file = state / "final" / "weights.npz"
    if not final_file.is_file():
        raise FederationError(f"the aggregator left no final model ({final_file})")
    with np.load(final_file) as npz:
        m.set_weights({k: npz[k] for k in npz.files})
    final = m.evaluate(*test)
    return {"initial": {"loss": initial[0], "accuracy": initial[1]},
            "final": {"loss": final[0], "accuracy": final[1]}, "test_samples": len(test[1])}


def throughput(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker: device-rounds trained (one device training one round), the seconds spent
    in :func:`edge_client.training.train_round` and set_weights, device-rounds per second."""
    return [{"device_rounds": e["devices"], "train_s": round(e["train_s"], 3),
             "device_rounds_per_s": round(e["devices"] / e["train_s"], 1) if e["train_s"]
             else None} for e in events if e["event"] == "trained"]


def _aggregator_args(args: argparse.Namespace, model: Path, url: str, version: str
                     ) -> list[str]:
    quorum = args.min_clients or math.ceil(args.clients / 2)
    return ["--broker", url, "--mqtt-version", version, "--federation", FEDERATION,
            "--model", str(model), "--state-dir", str(args.out / "aggregator"),
            "--rounds", str(args.rounds), "--min-clients", str(quorum),
            "--min-available", str(args.clients), "--round-timeout", str(args.round_timeout),
            "--codec", args.codec, "--max-payload", str(args.max_payload),
            "--seed", str(args.seed),
            *(["--epochs", str(args.epochs)] if args.epochs is not None else []),
            *(["--lr", str(args.lr)] if args.lr is not None else []), *args.aggregator_arg]


def _follow(agg: Child, pool: DevicePool, state: Path, timeout: float) -> None:
    """Prints each round as it closes, until the aggregator exits."""
    end, printed = time.monotonic() + timeout, 0
    print(HEADER, flush=True)
    while True:
        pool.poll()
        rows = rows_of(read_history(state), pool.events)
        for row in rows[printed:]:
            print(format_row(row), flush=True)
        printed = len(rows)
        code = agg.proc.poll()
        if code is not None:
            if code != 0:
                raise FederationError(f"the aggregator exited with {code}:\n{agg.tail()}")
            return
        if time.monotonic() > end:
            raise FederationError(f"not finished after {timeout:.0f}s:\n{agg.tail()}")
        time.sleep(0.2)  # polling files other processes append to


def _simulate(args: argparse.Namespace, model: Path, shapes: dict[str, Any], faults: Faults,
              devices: list[tuple[str, int, int]]) -> tuple[list[dict[str, Any]], int]:
    """Broker, devices and aggregator until the last round; (device events, processes)."""
    with ExitStack() as stack:
        url, version = start_broker(stack, args.broker)
        fleet = stack.enter_context(Fleet(args.out / "logs"))
        pool = DevicePool(fleet, args.out / "devices")
        stack.callback(pool.stop)
        pool.start(WorkerSpec(broker=url, federation=FEDERATION, devices=devices,
                              shapes=shapes, events="", mqtt_version=version, faults=faults,
                              seed=args.seed, max_payload=args.max_payload,
                              resend_after=args.resend_after,
                              dataset=_dataset(args) if args.train else None,
                              model_file=str(model.resolve()) if args.train else None,
                              fleet_size=args.clients),
                   args.processes or default_processes(args.clients))
        pool.wait_ready(timeout=60 + args.clients * 0.2)
        log.info("%d simulated devices online in %d processes", args.clients, len(pool.workers))
        agg = fleet.start("aggregator", "aggregator", _aggregator_args(args, model, url, version))
        per_round = 2 * args.round_timeout + args.slow_delay + 10
        _follow(agg, pool, args.out / "aggregator", timeout=120 + args.rounds * per_round)
    return pool.events, len(pool.workers)


def run(args: argparse.Namespace) -> int:
    """Runs the simulation; returns 0 when every round closed."""
    shape = check_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    state = args.out / "aggregator"
    if state.exists() and any(state.iterdir()):
        raise ConfigError(f"{state} holds a previous run's state; use another --out")
    data = fleet_data(_dataset(args), args.clients, args.seed) if args.train else None
    if data is not None:
        model, shapes = export_dataset_model(args, data)
        devices = [(f"sim-{i:04d}", i, n) for i, n in enumerate(data.sizes)]
    else:
        model, shapes = export_model(args, shape)
        devices = fleet_devices(args.clients, args.seed)
    faults = Faults(args.dropout, args.slow, args.slow_delay, args.crash_mid_upload,
                    args.duplicate_sends)
    started = time.monotonic()
    events, processes = _simulate(args, model, shapes, faults, devices)
    rows = rows_of(read_history(state), events)
    result = {"dataset": "synthetic", "model": args.model, "input_shape": list(shape),
              "classes": args.classes, "clients": args.clients, "processes": processes,
              "codec": args.codec, "seed": args.seed, "round_timeout": args.round_timeout,
              "aggregator_args": args.aggregator_arg, "faults": faults.__dict__,
              "rounds": rows, "initial": {"accuracy": None, "loss": None},
              "final": summary(rows, time.monotonic() - started), "train": None}
    if data is not None:
        info = data.dataset.info
        scores = evaluation(model, state, data.test)
        result.update(dataset=info.name, model=info.model, input_shape=list(info.input_shape),
                      classes=len(info.classes), initial=scores["initial"])
        result["final"].update(scores["final"])
        result["train"] = {"test_samples": scores["test_samples"],
                           "runtimes": sorted({str(e.get("runtime")) for e in events
                                               if e["event"] == "ready"}),
                           "workers": throughput(events)}
        dp = rows[-1].get("dp") if rows else None
        if dp:
            print(f"client-level DP: epsilon {dp['epsilon']:.3f} at delta {dp['delta']:g} "
                  f"after {dp['rounds_spent']} rounds")
        print(f"test accuracy {scores['initial']['accuracy']:.4f} (initial) -> "
              f"{scores['final']['accuracy']:.4f} (final), loss "
              f"{scores['initial']['loss']:.4f} -> {scores['final']['loss']:.4f}")
    path = args.json or args.out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
    return 0
