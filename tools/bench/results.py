"""``fedge bench results``: federated accuracy next to local-only and pooled training.

For each dataset and seed this runs real ``fedge demo`` federations (a Mosquitto broker, the
aggregator and one ``fedge-client`` process per party, TFLite training on the device side):
FedAvg with fp32 updates, FedAvg with int8 updates (the demo's default codec) and FedProx with
fp32 updates. Every run also trains the demo's two baselines with the same TFLite model file
(batch size, optimizer, initial weights), the same learning rate and ``rounds × local epochs``
epochs: pooled (the union of the clients' training data in one place) and local-only (each
client alone, averaged over clients). All are scored on the same pooled test set.

It takes minutes, so ``fedge bench all`` leaves it out; run ``fedge bench results``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo import DemoConfig, federate

log = logging.getLogger(__name__)

ROUNDS = 10
SEEDS = (0, 1, 2)
MU = 0.01
"""FedProx proximal weight: the middle of the FedProx paper's grid {0.001, 0.01, 0.1, 1}."""
OUT = Path("out/bench/results")


@dataclass(frozen=True)
class Study:
    """One dataset as it is federated: how many clients and how the data is split."""

    dataset: str
    clients: int
    partition: str


@dataclass(frozen=True)
class Method:
    """One federated training run: the update codec and the FedProx weight."""

    key: str
    label: str
    codec: str
    mu: float


STUDIES = (
    Study("breast-cancer", 4, "iid"),
    Study("basic-motions", 4, "iid"),
    Study("wearable-synthetic", 10, "natural"),
    Study("seed-gaussian", 2, "natural"),
)
METHODS = (
    Method("fedavg-fp32", "FedAvg", "fp32", 0.0),
    Method("fedavg-int8", "FedAvg", "int8", 0.0),
    Method("fedprox-fp32", f"FedProx (μ = {MU:g})", "fp32", MU),
)
BASELINES = (("local-only", "local-only (each client alone)"), ("pooled", "pooled (centralised)"))


def demo_run(study: Study, method: Method, seed: int, rounds: int, out: Path
             ) -> dict[str, Any]:
    """One ``fedge demo`` run in a fresh ``out`` folder; returns the demo's result dict."""
    shutil.rmtree(out, ignore_errors=True)
    return federate(demo_config(study, method, seed, rounds, out))


def demo_config(study: Study, method: Method, seed: int, rounds: int, out: Path
                ) -> DemoConfig:
    """The demo's settings for one run: the study's split, the method's codec and μ."""
    return DemoConfig(dataset=study.dataset, clients=study.clients, partition=study.partition,
                      rounds=rounds, codec=method.codec, mu=method.mu, seed=seed, out=out,
                      progress=False)


def _measure_study(study: Study, seeds: Sequence[int], rounds: int, out: Path
                   ) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*(m.key for m in METHODS),
                                                              *(b for b, _ in BASELINES))}
    settings: dict[str, Any] = {}
    for seed in seeds:
        for method in METHODS:
            log.info("results: %s, %s, seed %d", study.dataset, method.key, seed)
            r = demo_run(study, method, seed, rounds, out / study.dataset / f"{method.key}-{seed}")
            f = r["final"]
            runs[method.key].append({"seed": seed, "accuracy": f["accuracy"], "loss": f["loss"],
                                     "bytes_up_per_round": f["bytes_up_total"] / rounds})
            if method is METHODS[0]:  # the baselines depend on the seed only
                runs["local-only"].append({"seed": seed, "accuracy": f["local_only_accuracy"]})
                runs["pooled"].append({"seed": seed, "accuracy": f["pooled_accuracy"],
                                       "loss": f["pooled_loss"]})
            settings = {k: r[k] for k in ("model", "clients", "partition", "epochs", "lr",
                                          "batch_size", "optimizer")}
    return {"dataset": study.dataset, "settings": settings, "runs": runs}


def run(quick: bool = False, *, studies: Sequence[Study] = STUDIES,
        seeds: Sequence[int] = SEEDS, rounds: int | None = None, out: Path = OUT
        ) -> dict[str, Any]:
    """Measures every study; ``quick``: the first study, the first seed, 2 rounds.

    Args:
        quick: a smoke run.
        studies: datasets to federate.
        seeds: each seeds the data split, the initial weights and the training.
        rounds: federated rounds (default 10, quick 2).
        out: working folder of the demo runs (emptied run by run).

    Returns:
        JSON-able measurements: per study its settings and per method one row per seed.
    """
    if quick:
        studies, seeds = studies[:1], seeds[:1]
    rounds = rounds or (2 if quick else ROUNDS)
    measured = [_measure_study(study, seeds, rounds, out) for study in studies]
    return {"rounds": rounds, "seeds": list(seeds), "mu": MU, "studies": measured}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _accuracies(runs: list[dict[str, Any]]) -> list[float]:
    return [float(r["accuracy"]) for r in runs]


def _points(a: Sequence[float], b: Sequence[float]) -> str:
    """Mean difference a − b in accuracy points (percentage points)."""
    return f"{100 * (mean_std(a)[0] - mean_std(b)[0]):+.1f}"


def _mean_of(runs: list[dict[str, Any]], key: str, scale: float, digits: int) -> str:
    """Mean of ``key`` over the seeds, scaled and formatted; empty when not measured."""
    if key not in runs[0]:
        return ""
    return f"{scale * float(np.mean([r[key] for r in runs])):.{digits}f}"


def _method_rows(study: dict[str, Any], rounds: int) -> list[str]:
    s, runs = study["settings"], study["runs"]
    pooled = _accuracies(runs["pooled"])
    labels = {**{m.key: (m.label, m.codec) for m in METHODS},
              **{k: (label, "") for k, label in BASELINES}}
    settings = [f"{s['clients']}, {s['partition']}", f"{rounds} × {s['epochs']}",
                f"{s['lr']:g}, {s['optimizer']}, {s['batch_size']}"]
    lines = []
    for i, key in enumerate(("local-only", *(m.key for m in METHODS), "pooled")):
        acc = _accuracies(runs[key])
        mean, std = mean_std(acc)
        per_seed = " / ".join(f"{a:.3f}" for a in acc)
        kb = _mean_of(runs[key], "bytes_up_per_round", 1e-3, 1)
        loss = _mean_of(runs[key], "loss", 1.0, 3)
        label, codec = labels[key]
        first = [f"{study['dataset']} ({s['model']})", *settings] if i == 0 else [""] * 4
        vs = "" if key == "pooled" else _points(acc, pooled)
        lines.append(f"| {' | '.join(first)} | {label} | {codec} | {mean:.3f} ± {std:.3f} | "
                     f"{per_seed} | {vs} | {loss} | {kb} |")
    return lines


def _summary(study: dict[str, Any]) -> str:
    runs = study["runs"]
    fp32, int8 = _accuracies(runs["fedavg-fp32"]), _accuracies(runs["fedavg-int8"])
    prox, pooled = _accuracies(runs["fedprox-fp32"]), _accuracies(runs["pooled"])
    return (f"| {study['dataset']} | {_points(int8, pooled)} | {_points(int8, fp32)} | "
            f"{_points(prox, fp32)} |")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _method(result: dict[str, Any]) -> str:
    rounds, seeds = result["rounds"], result["seeds"]
    return (
        f"Each federated row is a real `fedge demo` run ({_plural(rounds, 'round')}): a "
        "Mosquitto broker, the aggregator and one `fedge-client` process per party training "
        "with the TFLite runtime, updates sent over MQTT with the codec shown, FedAvg "
        "weighted by sample count; FedProx adds the proximal term μ/2·‖w − w_global‖² "
        f"(μ = {result['mu']:g}) to the local loss. Each client keeps 20 % of its data as a "
        "local hold-out and trains on the rest. The baselines use the same TFLite model file "
        "(batch size, optimizer, initial weights) and learning rate, trained for rounds × "
        "local epochs epochs: pooled on the union of all the clients' data (hold-outs "
        "included), local-only on each client's data alone (the mean over clients is shown). "
        "Every model is scored on the same pooled test set (features standardised with the "
        "pooled training statistics; each client standardises with its own); for "
        "wearable-synthetic that set is the last quarter of the stream of each of the "
        "dataset's 20 devices, the ones not in the federation included. Accuracy is the "
        f"mean ± sample standard deviation over {_plural(len(seeds), 'seed')} "
        f"({', '.join(map(str, seeds))}); a seed sets the train/test split (where the "
        "dataset has one), the partition, the initial weights and the training order. The "
        "settings are `fedge demo`'s defaults (`tools/demo/data.py`); those of the three "
        "real datasets were compared on seeds 3-7, not on these. `vs pooled` is the mean "
        "difference in percentage points; `test loss` the mean cross-entropy on the test set "
        "(runs with equal accuracies still differ there); `up KB` the clients' update bytes "
        "per round, all clients together.")


def render(result: dict[str, Any]) -> str:
    """The Markdown section: the method, one table of accuracies, one of differences."""
    head = [
        "## Accuracy: federated vs local-only vs pooled (`fedge bench results`)", "",
        _method(result), "",
        "| dataset (model) | clients, partition | rounds × local epochs | lr, optimizer, batch "
        "| method | updates | accuracy | per seed | vs pooled | test loss | up KB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [line for study in result["studies"]
            for line in _method_rows(study, result["rounds"])]
    summary = ["", "Differences of the means, in percentage points:", "",
               "| dataset | FedAvg int8 − pooled | FedAvg int8 − fp32 | FedProx − FedAvg (fp32) |",
               "| --- | --- | --- | --- |",
               *(_summary(study) for study in result["studies"])]
    return "\n".join([*head, *rows, *summary]) + "\n"
