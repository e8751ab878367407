"""The demo's result: JSON layout, baselines, the int8 deployment model, the printed table.

JSON layout (``--json``)::

    {"dataset", "model", "clients", "partition", "codec", "strategy", "weighting", "seed",
     "epochs", "lr", "batch_size", "optimizer", "mu",
     "rounds": [{"round", "outcome", "version", "participants", "participant_ids", "samples",
                 "accuracy", "loss",              # global model after the round, pooled test
                 "clients": {id: {"accuracy", "loss"}},  # same model, each client's test share
                 "client_metrics": {...},         # weighted means reported by the clients
                 "bytes_up", "bytes_down", "rejections", "duration_s"}],
     "initial": {"accuracy", "loss"},
     "final": {"accuracy", "loss", "pooled_accuracy", "pooled_loss", "local_only_accuracy",
               "local_only_per_client", "int8_model", "int8_model_accuracy",
               "bytes_up_total", "bytes_down_total"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_client.runtime import Interpreter
from tools.demo.config import DemoConfig
from tools.demo.evaluate import evaluate, local_only, train_alone, weights_of_checkpoint
from tools.demo.prepare import Setup


def _round_row(row: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": row["round"], "outcome": row.get("outcome"), "version": row.get("version"),
        "participants": len(row.get("participants", [])),
        "participant_ids": row.get("participants", []), "samples": row.get("samples", 0),
        "accuracy": ev["accuracy"], "loss": ev["loss"], "clients": ev["clients"],
        "client_metrics": row.get("metrics", {}), "bytes_up": row.get("bytes_in", 0),
        "bytes_down": row.get("bytes_out", 0), "rejections": row.get("rejections", {}),
        "duration_s": row.get("duration_s"),
    }


def _int8(folder: Path, s: Setup, weights: dict[str, Any]) -> tuple[str, float]:
    from models.export import export_inference_int8

    ds, scale = s.dataset, s.pooled_scaling
    blob = export_inference_int8(ds.info.model, ds.info.input_shape, len(ds.info.classes),
                                 weights, scale(s.pooled_x)[:256])
    path = folder / "model-int8.tflite"
    path.write_bytes(blob)
    interp = Interpreter(blob)
    x_test = scale(ds.x_test)
    out = np.concatenate([interp.run("infer", {"x": x_test[i:i + 1]})["output"]
                          for i in range(len(x_test))]).reshape(len(x_test), -1)
    # one column: P(class 1) of a binary model; else class probabilities
    pred = (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
    return str(path), float((pred == ds.y_test).mean())


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
    local = local_only(s.model_file, [(c.scaling(c.x_train), c.y_train) for c in s.shares],
                       (scale(ds.x_test), ds.y_test), epochs=epochs, lr=d.lr, seed=config.seed)
    int8_path, int8_acc = _int8(config.out, s, weights)
    return {
        "dataset": ds.info.name, "model": ds.info.model, "clients": len(s.shares),
        "partition": d.partition, "codec": config.codec, "strategy": config.strategy,
        "weighting": config.weighting, "seed": config.seed, "epochs": d.epochs, "lr": d.lr,
        "batch_size": d.batch_size, "optimizer": d.optimizer, "mu": config.mu,
        "rounds": rounds, "initial": {"accuracy": initial["accuracy"], "loss": initial["loss"]},
        "final": {
            "accuracy": last["accuracy"], "loss": last["loss"], "clients": last["clients"],
            "pooled_accuracy": pooled, "pooled_loss": pooled_loss,
            "local_only_accuracy": float(np.mean(local)),
            "local_only_per_client": local, "int8_model": int8_path,
            "int8_model_accuracy": int8_acc,
            "bytes_up_total": sum(r["bytes_up"] for r in rounds),
            "bytes_down_total": sum(r["bytes_down"] for r in rounds),
        },
    }


def print_table(result: dict[str, Any]) -> None:
    """Prints rounds and the final comparison as plain-text tables."""
    print(f"\n{'round':>5} {'outcome':>10} {'clients':>7} {'samples':>7} {'accuracy':>8} "
          f"{'loss':>7} {'up KB':>7} {'down KB':>8}")
    for r in result["rounds"]:
        print(f"{r['round']:>5} {r['outcome']!s:>10} {r['participants']:>7} {r['samples']:>7} "
              f"{r['accuracy']:>8.3f} {r['loss']:>7.3f} {r['bytes_up'] / 1e3:>7.1f} "
              f"{r['bytes_down'] / 1e3:>8.1f}")
    f = result["final"]
    print(f"\nfinal global model (pooled test set): accuracy {f['accuracy']:.3f}")
    for cid, m in sorted(f["clients"].items()):
        print(f"  on {cid}'s test data: accuracy {m['accuracy']:.3f}")
    print(f"pooled (centralised) training:        accuracy {f['pooled_accuracy']:.3f}")
    print(f"local-only training (mean of clients): accuracy {f['local_only_accuracy']:.3f}")
    print(f"int8 inference model:                  accuracy {f['int8_model_accuracy']:.3f}")
