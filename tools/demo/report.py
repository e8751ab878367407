"""The demo's result: JSON layout, baselines, the int8 deployment model, the printed table.

JSON layout (``--json``)::

    {"dataset", "model", "clients", "partition", "codec", "strategy", "weighting", "seed",
     "epochs", "lr", "batch_size", "optimizer", "mu",
     "scaling": {"kind": "none" | "each-party", "note", "parties"},  # of the headline scores
     "rounds": [{"round", "outcome", "version", "participants", "participant_ids", "samples",
                 "accuracy", "loss", "roc_auc",   # global model after the round, pooled test
                 "accuracy_range",                # [lowest, highest] over the parties' scalings
                 "clients": {id: {"accuracy", "loss", "roc_auc"}},  # each client's test share
                 "client_metrics": {...},         # weighted means reported by the clients
                 "bytes_up", "bytes_down", "rejections", "duration_s",
                 "epsilon"}],                    # client-level DP spent so far, or None
     "initial": {"accuracy", "loss", "roc_auc"},
     "final": {"accuracy", "loss", "roc_auc", "accuracy_range", "clients",
               "pooled_accuracy", "pooled_loss", "local_only_accuracy",
               "local_only_per_client", "int8_model", "int8_model_accuracy",
               "int8_model_roc_auc", "bytes_up_total", "bytes_down_total"}}

The headline scores (``accuracy``, ``loss``, ``roc_auc``) are those of the global model on
the pooled test set scaled as each party scales its inputs (its own standardisation, or raw
values when the clients run --no-normalise), averaged over the parties; ``scaling`` says
which. ``roc_auc`` is None unless the task is binary. The pooled (centralised) baseline is
standardised with the statistics of all the training data, which only it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_client.runtime import Interpreter
from edge_client.scoring import binary_scores
from tools.demo.config import DemoConfig
from tools.demo.evaluate import evaluate, local_only, train_alone, weights_of_checkpoint
from tools.demo.prepare import Setup


def _round_row(row: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": row["round"], "outcome": row.get("outcome"), "version": row.get("version"),
        "participants": len(row.get("participants", [])),
        "participant_ids": row.get("participants", []), "samples": row.get("samples", 0),
        "accuracy": ev["accuracy"], "loss": ev["loss"], "roc_auc": ev["roc_auc"],
        "accuracy_range": ev["accuracy_range"], "clients": ev["clients"],
        "client_metrics": row.get("metrics", {}), "bytes_up": row.get("bytes_in", 0),
        "bytes_down": row.get("bytes_out", 0), "rejections": row.get("rejections", {}),
        "duration_s": row.get("duration_s"),
        "epsilon": (row.get("dp") or {}).get("epsilon"),  # client-level DP spent so far
    }


def _int8(folder: Path, s: Setup, weights: dict[str, Any]) -> tuple[str, float, float | None]:
    """The int8 model, calibrated on the parties' training data as each scales it, and its
    accuracy and (binary) ROC AUC as the parties see it (mean over their scalings)."""
    from models.export import MAX_REPRESENTATIVE, export_spec_int8

    ds = s.dataset
    calibration = np.concatenate([c.scaling(c.x_train) for c in s.shares])
    picked = np.random.default_rng(0).permutation(len(calibration))[:MAX_REPRESENTATIVE]
    blob = export_spec_int8(s.spec, weights, calibration[picked], constants=s.constants)
    path = folder / "model-int8.tflite"
    path.write_bytes(blob)
    interp = Interpreter(blob)
    accuracies, aucs = [], []
    for scaling in s.party_scalings:
        x_test = scaling(ds.x_test)
        out = np.concatenate([interp.run("infer", {"x": x_test[i:i + 1]})["output"]
                              for i in range(len(x_test))]).reshape(len(x_test), -1)
        accuracies.append(float((out.argmax(axis=1) == ds.y_test).mean()))
        if out.shape[1] == 2:  # binary: [P(0), P(1)], quantized
            p = np.clip(out[:, 1] / np.maximum(out.sum(axis=1), 1e-12), 0.0, 1.0)
            aucs.append(binary_scores(ds.y_test, p)["roc_auc"])
    auc = None if not aucs or None in aucs else float(np.mean([a for a in aucs if a is not None]))
    return str(path), float(np.mean(accuracies)), auc


def build_result(config: DemoConfig, s: Setup, rows: list[dict[str, Any]],
                 evaluations: dict[int, dict[str, Any]], initial: dict[str, Any]
                 ) -> dict[str, Any]:
    """Assembles the JSON result, with the pooled and local-only baselines."""
    d, ds = s.defaults, s.dataset
    rounds = [_round_row(r, evaluations[int(r.get("version", 0))]) for r in rows]
    final_version = int(rows[-1].get("version", 0)) if rows else 0
    weights = weights_of_checkpoint(config.out / "aggregator", final_version)
    last = evaluations.get(final_version, initial)
    scale = s.pooled_scaling
    epochs = d.epochs * d.rounds
    # same model file (batch size, optimizer), same lr, rounds x local epochs, on the union
    pooled_w = train_alone(s.model_file, scale(s.pooled_x), s.pooled_y, epochs=epochs,
                           lr=d.lr, seed=config.seed)
    pooled_loss, pooled = evaluate(s.model_file, pooled_w, scale(ds.x_test), ds.y_test)
    local = local_only(s.model_file, [(c.x_train, c.y_train, c.scaling) for c in s.shares],
                       (ds.x_test, ds.y_test), epochs=epochs, lr=d.lr, seed=config.seed)
    int8_path, int8_acc, int8_auc = _int8(config.out, s, weights)
    return {
        "dataset": ds.info.name, "model": s.spec.name, "clients": len(s.shares),
        "partition": d.partition, "codec": config.codec, "strategy": config.strategy,
        "weighting": config.weighting, "seed": config.seed, "epochs": d.epochs, "lr": d.lr,
        "batch_size": d.batch_size, "optimizer": d.optimizer, "mu": config.mu,
        "scaling": s.scaling_note(), "rounds": rounds,
        "initial": {"accuracy": initial["accuracy"], "loss": initial["loss"],
                    "roc_auc": initial["roc_auc"]},
        "final": {
            "accuracy": last["accuracy"], "loss": last["loss"], "roc_auc": last["roc_auc"],
            "accuracy_range": last["accuracy_range"], "clients": last["clients"],
            "pooled_accuracy": pooled, "pooled_loss": pooled_loss,
            "local_only_accuracy": float(np.mean(local)),
            "local_only_per_client": local, "int8_model": int8_path,
            "int8_model_accuracy": int8_acc, "int8_model_roc_auc": int8_auc,
            "bytes_up_total": sum(r["bytes_up"] for r in rounds),
            "bytes_down_total": sum(r["bytes_down"] for r in rounds),
        },
    }


def _auc(value: float | None) -> str:
    return "" if value is None else f", ROC AUC {value:.3f}"


def print_table(result: dict[str, Any]) -> None:
    """Prints rounds and the final comparison as plain-text tables (ROC AUC: binary tasks)."""
    binary = result["final"]["roc_auc"] is not None
    dp = any(r.get("epsilon") is not None for r in result["rounds"])
    auc_head = f" {'ROC AUC':>7}" if binary else ""
    eps_head = f" {'ε':>6}" if dp else ""
    print(f"\n{'round':>5} {'outcome':>10} {'clients':>7} {'samples':>7} {'accuracy':>8}"
          f"{auc_head} {'loss':>7} {'up KB':>7} {'down KB':>8}{eps_head}")
    for r in result["rounds"]:
        auc = f" {r['roc_auc']:>7.3f}" if binary else ""
        eps = f" {r['epsilon']:>6.3f}" if dp and r.get("epsilon") is not None else (
            f" {'':>6}" if dp else "")
        print(f"{r['round']:>5} {r['outcome']!s:>10} {r['participants']:>7} {r['samples']:>7} "
              f"{r['accuracy']:>8.3f}{auc} {r['loss']:>7.3f} {r['bytes_up'] / 1e3:>7.1f} "
              f"{r['bytes_down'] / 1e3:>8.1f}{eps}")
    f, scaling = result["final"], result["scaling"]
    print(f"\nfinal global model (pooled test set): accuracy {f['accuracy']:.3f}"
          f"{_auc(f['roc_auc'])}")
    if scaling["kind"] == "none":
        print("  inputs as the clients train on them: raw feature values (--no-normalise)")
    else:
        low, high = f["accuracy_range"]
        print(f"  inputs standardised as each party does its own (fedge-client's default); "
              f"mean over {scaling['parties']} parties: {low:.3f}-{high:.3f}")
    for cid, m in sorted(f["clients"].items()):
        print(f"  on {cid}'s test data: accuracy {m['accuracy']:.3f}{_auc(m['roc_auc'])}")
    pooled_scaling = "" if scaling["kind"] == "none" else (
        " (standardised with all the training data's statistics)")
    print(f"pooled (centralised) training:        accuracy {f['pooled_accuracy']:.3f}"
          f"{pooled_scaling}")
    print(f"local-only training (mean of clients): accuracy {f['local_only_accuracy']:.3f}")
    print(f"int8 inference model:                  accuracy {f['int8_model_accuracy']:.3f}"
          f"{_auc(f['int8_model_roc_auc'])}")
