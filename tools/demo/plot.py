"""The demo's PNG: global and per-client accuracy and loss per round."""

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
                label="global model, pooled test set")
    ax_loss.plot(xs, [r["loss"] for r in rounds], "o-", lw=2.5, color="black", label="global")
    clients = sorted({c for r in rounds for c in r.get("clients", {})})
    for c in clients:
        pts = [(r["round"], r["clients"][c]) for r in rounds if c in r.get("clients", {})]
        ax_acc.plot([p[0] for p in pts], [p[1]["accuracy"] for p in pts], ".--", alpha=0.7,
                    label=f"global model on {c}'s test data")
        ax_loss.plot([p[0] for p in pts], [p[1]["loss"] for p in pts], ".--", alpha=0.7,
                     label=c)
    pooled = result.get("final", {}).get("pooled_accuracy")
    if pooled is not None:
        ax_acc.axhline(pooled, color="grey", ls=":", label="pooled (centralised) training")
    ax_acc.set(xlabel="round", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    ax_loss.set(xlabel="round", ylabel="loss", title="loss")
    ax_acc.legend(fontsize=7, loc="lower right")
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
