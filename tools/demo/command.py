"""``fedge demo``: federated training on this machine, every participant a real MQTT process.

Starts a broker on a free loopback port (Mosquitto when installed, else the
embedded amqtt broker on MQTT 3.1.1), the aggregator, and one ``fedge-client``
process per party, each with only its own data file. Shows a progress bar per
round, prints a results table, and writes ``--json``, ``--plot`` and the final
model as an int8 inference ``.tflite``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tools.datasets import DATASETS
from tools.demo.config import CODECS, STRATEGIES, WEIGHTINGS, DemoConfig
from tools.demo.data import PARTITIONS
from tools.demo.evaluate import as_parties_see_it, scores, weights_of_checkpoint
from tools.demo.prepare import Setup, prepare
from tools.demo.report import build_result, print_table
from tools.extras import require
from tools.runtime.broker import mosquitto_available
from tools.runtime.federation import FederationPlan, run_federation

log = logging.getLogger(__name__)
DEFAULT = DemoConfig()  # the flags' defaults are the config's


def add_parser(sub: Any) -> None:
    """Registers ``fedge demo``."""
    p = sub.add_parser("demo", help="run a federation on this machine over a real MQTT broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default=DEFAULT.dataset,
                   help="default: seed-gaussian (the seed article's two parties)")
    p.add_argument("--clients", type=int, help="number of client processes (default: the "
                   "dataset's natural parties, else 4)")
    p.add_argument("--rounds", type=int, help="federated rounds (default 10)")
    p.add_argument("--keras", type=Path, metavar="MODEL.keras", help="train this saved Keras "
                   "model (its layers and weights, see fedge export --keras) instead of the "
                   "dataset's zoo model, e.g. examples/seed.keras with seed-gaussian")
    p.add_argument("--partition", choices=PARTITIONS, help="how the training data is split: "
                   "natural (by party/device), iid, dirichlet (label skew), quantity")
    p.add_argument("--alpha", type=float, default=DEFAULT.alpha,
                   help="Dirichlet / quantity skew alpha")
    p.add_argument("--codec", choices=CODECS, default=DEFAULT.codec,
                   help="update codec (default int8)")
    p.add_argument("--strategy", default=DEFAULT.strategy, choices=STRATEGIES)
    p.add_argument("--weighting", choices=WEIGHTINGS, default=DEFAULT.weighting,
                   help="FedAvg weights: by sample count, or uniform (the seed article)")
    p.add_argument("--epochs", type=int, help="local epochs per round")
    p.add_argument("--lr", type=float, help="local learning rate")
    p.add_argument("--mu", type=float, default=DEFAULT.mu,
                   help="FedProx proximal weight (0 = FedAvg)")
    p.add_argument("--seed", type=int, default=DEFAULT.seed,
                   help="seeds data, partition, model, training")
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the in-process amqtt broker (MQTT 3.1.1) even when mosquitto is "
                   "installed (it is used automatically when mosquitto is not)")
    p.add_argument("--out", type=Path, default=DEFAULT.out,
                   help="working directory: data shares, state, logs (default out/demo)")
    p.add_argument("--json", type=Path, help="results JSON (default OUT/results.json)")
    p.add_argument("--plot", type=Path, help="accuracy/loss PNG (default OUT/rounds.png)")
    p.add_argument("--round-timeout", type=float, default=DEFAULT.round_timeout,
                   help="seconds a round waits for its clients (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    dp = p.add_argument_group("client-level differential privacy (docs/privacy.md)")
    dp.add_argument("--dp-epsilon", type=float, metavar="E", help="run DP-FedAvg to this ε "
                    "over the planned rounds (the aggregator clips, noises and accounts; the "
                    "table shows ε per round); default off. With a handful of parties a small "
                    "ε costs most of the accuracy: it is meant for many devices")
    dp.add_argument("--dp-delta", type=float, default=DEFAULT.dp_delta, metavar="D",
                    help=f"δ of the guarantee; default {DEFAULT.dp_delta:g}")
    dp.add_argument("--dp-clip", type=float, default=DEFAULT.dp_clip, metavar="C",
                    help=f"L2 clip of each update with DP on; default {DEFAULT.dp_clip:g}")
    p.set_defaults(func=run)


def config_of(args: argparse.Namespace) -> DemoConfig:
    """The run's settings from the parsed ``fedge demo`` flags.

    Raises:
        ConfigError: a value out of range, naming the flag.
    """
    return DemoConfig(
        dataset=args.dataset, clients=args.clients, rounds=args.rounds,
        partition=args.partition, alpha=args.alpha, codec=args.codec, strategy=args.strategy,
        weighting=args.weighting, epochs=args.epochs, lr=args.lr, mu=args.mu, seed=args.seed,
        broker=args.broker, embedded_broker=args.embedded_broker, out=args.out,
        json_path=args.json, plot_path=args.plot, round_timeout=args.round_timeout,
        progress=not args.no_progress, keras=args.keras, dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta, dp_clip=args.dp_clip)


def _plan(config: DemoConfig, s: Setup) -> FederationPlan:
    d = s.defaults
    agg = ["--rounds", str(d.rounds), "--min-clients", str(d.min_clients),
           "--min-available", str(len(s.shares)), "--round-timeout", str(config.round_timeout),
           "--epochs", str(d.epochs), "--batch-size", str(d.batch_size), "--lr", str(d.lr),
           "--mu", str(config.mu), "--codec", config.codec, "--strategy", config.strategy,
           "--weighting", config.weighting, "--seed", str(config.seed)]
    if config.dp_epsilon is not None:
        agg += ["--dp-clip", str(config.dp_clip), "--dp-epsilon", str(config.dp_epsilon),
                "--dp-delta", str(config.dp_delta)]
    clients = tuple(
        ("--client-id", c.client_id, "--data", str(c.path),
         "--state-dir", str(config.out / "clients" / f"{c.client_id}-state"),
         "--seed", str(config.seed + i), *(() if d.normalise else ("--no-normalise",)))
        for i, c in enumerate(s.shares))
    return FederationPlan(out=config.out, federation=f"demo-{config.dataset}",
                          model=s.model_path, aggregator_args=tuple(agg), client_args=clients,
                          broker=config.broker, embedded=config.embedded_broker,
                          timeout=max(600.0, d.rounds * config.round_timeout * 2.5))


def _evaluate_version(s: Setup, state: Path, version: int) -> dict[str, Any]:
    """The global model of ``version`` on the pooled test set, scaled as each party scales
    (the mean over parties), and on each party's own test share."""
    weights = weights_of_checkpoint(state, version)
    ds = s.dataset
    pooled = as_parties_see_it(s.model_file, weights, ds.x_test, ds.y_test, s.party_scalings)
    per_client = {c.client_id: scores(s.model_file, weights, c.scaling(c.x_test), c.y_test)
                  for c in s.shares if len(c.x_test)}
    return {**pooled, "clients": per_client}


def _require(config: DemoConfig) -> None:
    """Raises MissingExtra, before anything starts, when the demo could not run to the end."""
    modules = ["tensorflow", "prometheus_client", "matplotlib"]  # export, aggregator, plot
    if config.progress:
        modules.append("tqdm")
    if config.broker is None and (config.embedded_broker or not mosquitto_available()):
        modules.append("amqtt")
    require("fedge demo", *modules)


def federate(config: DemoConfig) -> dict[str, Any]:
    """Runs the federation and the baselines; returns the result (``tools.demo.report``).

    Writes only into ``config.out`` (data shares, state, logs, the int8 model); prints
    nothing but the progress bar when ``config.progress`` asks for one (log records are
    written above it, never through it).

    Raises:
        MissingExtra: TensorFlow, matplotlib, tqdm, prometheus_client or amqtt (when no
            Mosquitto) is not installed.
    """
    _require(config)
    s = prepare(config)
    state = config.out / "aggregator"
    evaluations: dict[int, dict[str, Any]] = {}
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=s.defaults.rounds, desc=f"fedge demo {config.dataset}", unit="round")

    def on_round(row: dict[str, Any]) -> None:
        version = int(row.get("version", 0))
        if version not in evaluations:
            evaluations[version] = _evaluate_version(s, state, version)
        ev = evaluations[version]
        if bar is not None:
            bar.update(1)
            auc = {} if ev["roc_auc"] is None else {"auc": f"{ev['roc_auc']:.3f}"}
            bar.set_postfix(acc=f"{ev['accuracy']:.3f}", **auc,
                            clients=len(row.get("participants", [])))
        else:
            log.info("round %s: %s, accuracy %.3f", row.get("round"), row.get("outcome"),
                     ev["accuracy"])

    try:
        with contextlib.ExitStack() as stack:
            if bar is not None:
                from tqdm.contrib.logging import logging_redirect_tqdm

                stack.enter_context(logging_redirect_tqdm())
            rows = run_federation(_plan(config, s), on_round)
    finally:
        if bar is not None:
            bar.close()
    initial = _evaluate_version(s, state, 0)
    return build_result(config, s, rows, evaluations, initial)


def run(args: argparse.Namespace) -> int:
    """Runs the demo end to end; returns 0 on success."""
    config = config_of(args)
    if config.keras is not None and not config.keras.is_file():
        print(f"fedge demo: error: --keras {config.keras}: no such file", file=sys.stderr)
        return 2
    try:
        result = federate(config)
    except ValueError as exc:  # a Keras model fedge cannot train, or not for this dataset
        print(f"fedge demo: error: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    json_path = config.results_path
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    plot_path = config.rounds_png
    from tools.demo.plot import plot_rounds

    plot_rounds(result, plot_path, f"fedge demo: {config.dataset}, {result['clients']} clients, "
                f"{config.codec} updates")
    print(f"\nwrote {json_path}, {plot_path}, {result['final']['int8_model']}")
    return 0
