"""The demo's PNG: global and per-client accuracy (and ROC AUC, binary tasks) and loss per round.

The y-axes fit the data: a federation that moves between 0.55 and 0.65 is not drawn as a flat
line at the top of a 0-1 axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_rounds(result: dict[str, Any], path: Path, title: str) -> None:
    """Writes a two-panel PNG (accuracy, loss) from the demo's JSON result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r for r in result["rounds"] if r.get("accuracy") is not None]
    xs = [r["round"] for r in rounds]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_acc.plot(xs, [r["accuracy"] for r in rounds], "o-", lw=2.5, color="black",
                label="global model accuracy, pooled test set")
    ax_loss.plot(xs, [r["loss"] for r in rounds], "o-", lw=2.5, color="black", label="global")
    clients = sorted({c for r in rounds for c in r.get("clients", {})})
    for c in clients:
        pts = _points(rounds, c)
        ax_acc.plot([p[0] for p in pts], [p[1]["accuracy"] for p in pts], ".--", alpha=0.7,
                    label=f"global model on {c}'s test data")
        ax_loss.plot([p[0] for p in pts], [p[1]["loss"] for p in pts], ".--", alpha=0.7,
                     label=c)
    shown = [r["accuracy"] for r in rounds] + [p[1]["accuracy"] for c in clients
                                               for p in _points(rounds, c)]
    aucs = [r.get("roc_auc") for r in rounds]
    binary = bool(aucs) and None not in aucs
    if binary:
        ax_acc.plot(xs, aucs, "s-", lw=2, color="tab:red", label="global model ROC AUC")
        shown += [a for a in aucs if a is not None]
    pooled = result.get("final", {}).get("pooled_accuracy")
    if pooled is not None:
        ax_acc.axhline(pooled, color="grey", ls=":", label="pooled (centralised) training")
        shown.append(pooled)
    ylabel = "accuracy, ROC AUC" if binary else "accuracy"
    ax_acc.set(xlabel="round", ylabel=ylabel, title=ylabel, ylim=fitted_limits(shown))
    ax_loss.set(xlabel="round", ylabel="loss", title="loss")
    ax_acc.legend(fontsize=7, loc="best")
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _points(rounds: list[dict[str, Any]], client: str) -> list[tuple[int, dict[str, Any]]]:
    return [(r["round"], r["clients"][client]) for r in rounds if client in r.get("clients", {})]


def fitted_limits(values: list[float]) -> tuple[float, float]:
    """y-limits around ``values`` with a margin, within [0, 1] (a score axis)."""
    if not values:
        return 0.0, 1.02
    low, high = min(values), max(values)
    margin = max(0.02, 0.1 * (high - low))
    return max(0.0, low - margin), min(1.02, high + margin)
