"""The ``--plot`` PNG of ``fedge evaluate``: ROC curve and calibration, or predicted vs true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tools.evaluate.report import roc_points

Array = npt.NDArray[Any]


def plot_scores(doc: dict[str, Any], y: Array, outputs: Array, path: Path) -> None:
    """Writes the PNG: binary, ROC curve and calibration table; multiclass, one-vs-rest ROC
    curves; regression, predictions against targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = doc["task"]
    fig, axes = plt.subplots(1, 2 if task == "binary" else 1, figsize=(10 if task == "binary"
                                                                     else 5.2, 4.6))
    first = axes[0] if task == "binary" else axes
    if task == "binary":
        fpr, tpr = roc_points(y, outputs[:, 1])
        first.plot(fpr, tpr, lw=2, label=f"ROC AUC {doc['roc_auc']:.3f}")
        _calibration(axes[1], doc["calibration"])
    elif task == "multiclass":
        for c in range(outputs.shape[1]):
            if 0 < int(np.sum(y == c)) < len(y):
                fpr, tpr = roc_points((y == c).astype(np.int64), outputs[:, c])
                first.plot(fpr, tpr, lw=1.5, label=f"class {c} vs rest")
    if task == "regression":
        first.scatter(y, outputs, s=8, alpha=0.5)
        low, high = float(min(np.min(y), np.min(outputs))), float(max(np.max(y),
                                                                        np.max(outputs)))
        first.plot([low, high], [low, high], ls=":", color="grey", label="prediction = target")
        first.set(xlabel="target", ylabel="prediction", title=f"MSE {doc['mse']:.4g}")
    else:
        first.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
        first.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1),
                  ylim=(0, 1.01), title="ROC curve")
    first.legend(fontsize=8, loc="lower right")
    first.grid(alpha=0.3)
    fig.suptitle(f"fedge evaluate: {doc['model']['name']} on {Path(doc['data']['file']).name} "
                 f"(n = {doc['n']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _calibration(ax: Any, table: list[dict[str, Any]]) -> None:
    filled = [b for b in table if b["count"]]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    ax.plot([b["mean_predicted"] for b in filled], [b["observed_rate"] for b in filled], "o-",
            label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate of class 1",
           xlim=(0, 1), ylim=(0, 1.01), title="calibration (10 bins)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
