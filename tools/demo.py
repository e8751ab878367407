"""``fedge demo``: federated training on this machine, every participant a real MQTT process.

Starts a broker on a free loopback port (Mosquitto when installed, else the
embedded amqtt broker on MQTT 3.1.1), the aggregator, and one ``fedge-client``
process per party, each with only its own data file. Shows a progress bar per
round, prints a results table, and writes ``--json``, ``--plot`` and the final
model as an int8 inference ``.tflite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError
from tools.datasets import DATASETS, Dataset, load_dataset
from tools.demo_data import (
    PARTITIONS,
    ClientShare,
    DemoDefaults,
    defaults_for,
    pooled_training,
    share_data,
)
from tools.demo_report import build_result, print_table
from tools.evaluate import Scaling, evaluate, weights_of_checkpoint
from tools.runtime.federation import FederationPlan, run_federation

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]


def add_parser(sub: Any) -> None:
    """Registers ``fedge demo``."""
    p = sub.add_parser("demo", help="run a federation on this machine over a real MQTT broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="seed-gaussian",
                   help="default: seed-gaussian (the seed article's two parties)")
    p.add_argument("--clients", type=int, help="number of client processes (default: the "
                   "dataset's natural parties, else 4)")
    p.add_argument("--rounds", type=int, help="federated rounds (default 10)")
    p.add_argument("--partition", choices=PARTITIONS, help="how the training data is split: "
                   "natural (by party/device), iid, dirichlet (label skew), quantity")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet / quantity skew alpha")
    p.add_argument("--codec", choices=["fp32", "fp16", "int8"], default="int8",
                   help="update codec (default int8)")
    p.add_argument("--strategy", default="fedavg",
                   choices=["fedavg", "fedavgm", "fedadam", "median", "trimmed-mean"])
    p.add_argument("--weighting", choices=["samples", "uniform"], default="samples",
                   help="FedAvg weights: by sample count, or uniform (the seed article)")
    p.add_argument("--epochs", type=int, help="local epochs per round")
    p.add_argument("--lr", type=float, help="local learning rate")
    p.add_argument("--mu", type=float, default=0.0, help="FedProx proximal weight (0 = FedAvg)")
    p.add_argument("--seed", type=int, default=0, help="seeds data, partition, model, training")
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the in-process amqtt broker (MQTT 3.1.1) even when mosquitto is "
                   "installed (it is used automatically when mosquitto is not)")
    p.add_argument("--out", type=Path, default=Path("out/demo"),
                   help="working directory: data shares, state, logs (default out/demo)")
    p.add_argument("--json", type=Path, help="results JSON (default OUT/results.json)")
    p.add_argument("--plot", type=Path, help="accuracy/loss PNG (default OUT/rounds.png)")
    p.add_argument("--round-timeout", type=float, default=60.0,
                   help="seconds a round waits for its clients (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Setup:
    """Everything prepared before the federation starts."""

    dataset: Dataset
    defaults: DemoDefaults
    shares: list[ClientShare]
    model_file: bytes
    model_path: Path
    pooled_x: Array  # the union of the clients' training data (the pooled baseline's)
    pooled_y: Array
    pooled_scaling: Scaling


def prepare(args: argparse.Namespace) -> Setup:
    """Loads the data, splits it into client files, exports the trainable model."""
    from models.export import export_trainable

    ds = load_dataset(args.dataset, seed=args.seed)
    d = defaults_for(ds, args)
    # a previous run's state would be resumed (the aggregator recovers from its state dir)
    # and its results reported as this run's, whatever the flags now say
    for stale in ("aggregator", "clients", "logs"):
        shutil.rmtree(args.out / stale, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    shares = share_data(ds, d, args.out / "clients", np.random.default_rng(args.seed))
    model_file = export_trainable(ds.info.model, ds.info.input_shape, len(ds.info.classes),
                                  d.batch_size, optimizer=d.optimizer, seed=args.seed)
    model_path = args.out / "model.tflite"
    model_path.write_bytes(model_file)
    pooled_x, pooled_y = pooled_training(ds, shares)
    return Setup(ds, d, shares, model_file, model_path, pooled_x, pooled_y,
                 Scaling.fit(pooled_x, d.normalise))


def _plan(args: argparse.Namespace, s: Setup) -> FederationPlan:
    d = s.defaults
    agg = ["--rounds", str(d.rounds), "--min-clients", str(d.min_clients),
           "--min-available", str(len(s.shares)), "--round-timeout", str(args.round_timeout),
           "--epochs", str(d.epochs), "--batch-size", str(d.batch_size), "--lr", str(d.lr),
           "--mu", str(args.mu), "--codec", args.codec, "--strategy", args.strategy,
           "--weighting", args.weighting, "--seed", str(args.seed)]
    clients = tuple(
        ("--client-id", c.client_id, "--data", str(c.path),
         "--state-dir", str(args.out / "clients" / f"{c.client_id}-state"),
         "--seed", str(args.seed + i), *(() if d.normalise else ("--no-normalise",)))
        for i, c in enumerate(s.shares))
    return FederationPlan(out=args.out, federation=f"demo-{args.dataset}", model=s.model_path,
                          aggregator_args=tuple(agg), client_args=clients, broker=args.broker,
                          embedded=args.embedded_broker,
                          timeout=max(600.0, d.rounds * args.round_timeout * 2.5))


def _evaluate_version(s: Setup, state: Path, version: int) -> dict[str, Any]:
    weights = weights_of_checkpoint(state, version)
    ds = s.dataset
    loss, acc = evaluate(s.model_file, weights, s.pooled_scaling(ds.x_test), ds.y_test)
    per_client = {}
    for c in s.shares:
        if len(c.x_test):
            c_loss, c_acc = evaluate(s.model_file, weights, c.scaling(c.x_test), c.y_test)
            per_client[c.client_id] = {"accuracy": c_acc, "loss": c_loss}
    return {"accuracy": acc, "loss": loss, "clients": per_client}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The flags ``fedge demo ARGV`` would get, for running the demo from code."""
    parser = argparse.ArgumentParser(prog="fedge")
    add_parser(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def federate(args: argparse.Namespace, *, progress: bool = False) -> dict[str, Any]:
    """Runs the federation and the baselines; returns the result (``tools.demo_report``).

    Writes only into ``args.out`` (data shares, state, logs, the int8 model); prints nothing
    unless ``progress`` asks for a progress bar.
    """
    if args.clients is not None and args.clients < 1:
        raise ConfigError("--clients must be at least 1")
    s = prepare(args)
    state = args.out / "aggregator"
    evaluations: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.defaults.rounds, desc=f"fedge demo {args.dataset}", unit="round")

    def on_round(row: dict[str, Any]) -> None:
        version = int(row.get("version", 0))
        if version not in evaluations:
            evaluations[version] = _evaluate_version(s, state, version)
        ev = evaluations[version]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{ev['accuracy']:.3f}", clients=len(row.get("participants", [])))
        else:
            log.info("round %s: %s, accuracy %.3f", row.get("round"), row.get("outcome"),
                     ev["accuracy"])

    try:
        rows = run_federation(_plan(args, s), on_round)
    finally:
        if bar is not None:
            bar.close()
    initial = _evaluate_version(s, state, 0)
    return build_result(args, s, rows, evaluations, initial)


def run(args: argparse.Namespace) -> int:
    """Runs the demo end to end; returns 0 on success."""
    result = federate(args, progress=not args.no_progress)
    print_table(result)
    json_path = args.json or args.out / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    plot_path = args.plot or args.out / "rounds.png"
    from tools.plot import plot_rounds

    plot_rounds(result, plot_path, f"fedge demo: {args.dataset}, {result['clients']} clients, "
                f"{args.codec} updates")
    print(f"\nwrote {json_path}, {plot_path}, {result['final']['int8_model']}")
    return 0
