"""``fedge bench tables``: a real clinical table federated by site, and the scaling it needs.

The ``ncctg-lung`` table (:mod:`tools.datasets.lung`: death within a year of the NCCTG lung
cancer trial's patients, 4 sites of whole institutions, categories and missing cells) is
read from one CSV per site onto the schema exactly as ``fedge-client --schema`` reads it
(:mod:`edge_client.encode`), and trained with the exported model's TFLite ``train``
signature (:class:`edge_client.model.TrainableModel`), FedAvg by the aggregator's own maths
(:class:`aggregator.fedavg.Strategy`), in-process: the wire is measured by ``fedge bench
round`` and ``fedge bench results``. Two scalings of the numeric inputs, on the same rows:

- **shared**: the federated statistics path. Every site's summaries
  (:func:`edge_client.feature_stats.site_summaries`) are combined and written into the
  schema (``fedge stats --out``): every site imputes and standardises with the federation's
  mean and std.
- **per-site**: the same schema and fill values, no shared mean/std: each site standardises
  with its own (the default without a statistics phase).

Each arm trains federated (FedAvg) and local-only (each site alone, as many epochs);
pooled training (every site's rows in one place, scaled with their pooled statistics) is
the reference. Every model is scored on all sites' held-out rows, each row scaled as its
own site scales it (where the model would be used); local-only is the mean over sites.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.fedavg import ServerState, Strategy
from edge_client.encode import load_schema_csv, schema_norm_stats
from edge_client.model import TrainableModel
from edge_client.normalise import normalise
from edge_client.schema import Schema
from edge_client.scoring import binary_scores
from tools.datasets.lung import lung_sites, shared_lung_schema, write_csv
from tools.export.class_weights import balanced_weights

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]

SEEDS = tuple(range(10))  # ~45 test rows a seed: one seed's AUC has a standard error ~0.09
ROUNDS, EPOCHS, LR, BATCH = 20, 2, 0.05, 16  # logreg, SGD with momentum; not tuned
ARMS = ("shared", "per-site")


@dataclass(frozen=True)
class SiteArrays:
    """One site's rows as its device holds them: raw encoded inputs, labels, its scaling."""

    x: Array
    y: Array
    x_test: Array
    y_test: Array


def per_site(schema: Schema) -> Schema:
    """``schema`` without shared mean/std: each site standardises with its own."""
    return schema.with_features([replace(f, mean=None, std=None) for f in schema.features])


def site_arrays(schema: Schema, train: Sequence[Path], test: Sequence[Path]) -> list[SiteArrays]:
    """Each site's files read onto ``schema`` and standardised as its device does."""
    out = []
    for tr, te in zip(train, test, strict=True):
        a, b = load_schema_csv(tr, schema).data, load_schema_csv(te, schema).data
        stats = schema_norm_stats(schema, a.x)
        out.append(SiteArrays(normalise(a.x, stats), a.y, normalise(b.x, stats), b.y))
    return out


def scores(model: TrainableModel, weights: dict[str, Array], sites: Sequence[SiteArrays]
           ) -> list[float]:
    """Accuracy, ROC AUC and balanced accuracy (the mean of sensitivity and specificity)
    over every site's held-out rows, each scaled as its site does."""
    model.set_weights(weights)
    p = np.concatenate([model.predict(s.x_test)[:, 1] for s in sites])
    y = np.concatenate([s.y_test for s in sites])
    s = binary_scores(y, p)
    c = s["confusion"]
    balanced = (c["tp"] / max(c["tp"] + c["fn"], 1) + c["tn"] / max(c["tn"] + c["fp"], 1)) / 2
    return [float(s["accuracy"]), float(s["roc_auc"] or 0.0), float(balanced)]


def fedavg(model: TrainableModel, sites: Sequence[SiteArrays], seed: int) -> dict[str, Array]:
    """``ROUNDS`` rounds of FedAvg (every site, ``EPOCHS`` local epochs, weighted by rows)."""
    strategy, state = Strategy("fedavg"), ServerState()
    weights = model.get_weights()
    for r in range(ROUNDS):
        acc = strategy.accumulator()
        for k, s in enumerate(sites):
            model.set_weights(weights)
            model.fit(s.x, s.y.astype(np.float32), epochs=EPOCHS, lr=LR,
                      rng=np.random.default_rng([seed, r, k]))
            acc.add({n: v - weights[n] for n, v in model.get_weights().items()}, len(s.y))
        weights, state = strategy.apply(weights, acc.result(), state)
    return weights


def alone(model: TrainableModel, start: dict[str, Array], x: Array, y: Array, seed: int
          ) -> dict[str, Array]:
    """The initial weights trained on one data set for as many epochs as the federation."""
    model.set_weights(start)
    model.fit(x, y.astype(np.float32), epochs=ROUNDS * EPOCHS, lr=LR,
              rng=np.random.default_rng(seed))
    return model.get_weights()


def _one_seed(seed: int, folder: Path) -> dict[str, Any]:
    from models.export import export_trainable

    split = lung_sites(seed)
    train = [write_csv(folder / f"{s.name}.csv", s.train) for s in split]
    test = [write_csv(folder / f"{s.name}-test.csv", s.test) for s in split]
    shared = shared_lung_schema(train)
    model = TrainableModel(export_trainable("logreg", (len(shared.encoded_names),), 2, BATCH,
                                            "sgd", seed, schema=shared.to_dict()))
    start = model.get_weights()
    out: dict[str, Any] = {"seed": seed, "sites": [len(s.train) for s in split]}
    for arm, schema in (("shared", shared), ("per-site", per_site(shared))):
        sites = site_arrays(schema, train, test)
        out[f"{arm}/fedavg"] = scores(model, fedavg(model, sites, seed), sites)
        local = [scores(model, alone(model, start, s.x, s.y, seed + k), sites)
                 for k, s in enumerate(sites)]
        out[f"{arm}/local-only"] = [float(v) for v in np.mean(local, axis=0)]
    sites = site_arrays(shared, train, test)
    x = np.concatenate([s.x for s in sites])  # shared scaling = the pooled rows' statistics
    y = np.concatenate([s.y for s in sites])
    out["pooled"] = scores(model, alone(model, start, x, y, seed), sites)
    # the rarer outcome weighted up by the federation's label counts (--class-weights balanced)
    weighted = TrainableModel(export_trainable(
        "logreg", (len(shared.encoded_names),), 2, BATCH, "sgd", seed, schema=shared.to_dict(),
        class_weights=balanced_weights(shared.class_counts)))
    out["shared/fedavg-balanced"] = scores(weighted, fedavg(weighted, sites, seed), sites)
    labels = np.concatenate([s.y_test for s in sites])
    out["majority"] = max(float(labels.mean()), 1 - float(labels.mean()))
    return out


def run(quick: bool = False, *, seeds: Sequence[int] = SEEDS) -> dict[str, Any]:
    """Every seed (``quick``: the first); JSON-able (accuracy, ROC AUC) per method and seed."""
    seeds = seeds[:1] if quick else seeds
    with tempfile.TemporaryDirectory(prefix="fedge-bench-tables-") as tmp:
        runs = [_one_seed(seed, Path(tmp) / str(seed)) for seed in seeds]
    return {"seeds": list(seeds), "rounds": ROUNDS, "epochs": EPOCHS, "lr": LR,
            "batch_size": BATCH, "runs": runs}


def _cell(values: Sequence[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    spread = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return f"{a.mean():.3f} ± {spread:.3f}"


ROWS = (("shared", "shared/local-only", "local-only (each site alone)"),
        ("shared", "shared/fedavg", "FedAvg"),
        ("shared", "shared/fedavg-balanced", "FedAvg, `--class-weights balanced`"),
        ("per-site", "per-site/local-only", "local-only (each site alone)"),
        ("per-site", "per-site/fedavg", "FedAvg"),
        ("pooled statistics", "pooled", "pooled (centralised)"))


def render(result: dict[str, Any]) -> str:
    """The Markdown section: the method and one table of accuracy and ROC AUC."""
    runs, seeds = result["runs"], result["seeds"]
    sizes = " / ".join(str(n) for n in runs[0]["sites"])
    lines = [
        "## A clinical table by site: shared vs per-site scaling (`fedge bench tables`)", "",
        "`ncctg-lung` (docs/data.md): death within a year in the NCCTG lung cancer trial, "
        "4 sites of whole institutions (non-IID), 13 inputs from 7 columns (one-hot "
        "categories, missing cells filled with the federated means, missing indicators). "
        "Each site's CSV is read onto the schema as fedge-client reads it and trained with "
        f"the exported logreg's TFLite `train` signature (SGD, lr {result['lr']:g}, batch "
        f"{result['batch_size']}); FedAvg ({result['rounds']} rounds × {result['epochs']} "
        "local epochs, weighted by rows) by the aggregator's maths, in-process; local-only "
        "and pooled train as many epochs. **shared**: every site standardises with the "
        "federation's mean/std from the federated statistics (`fedge stats --out`); "
        "**per-site**: each with its own. Scored on all sites' held-out rows, each scaled as "
        "its own site scales it (local-only: the mean over the 4 sites' models). Mean ± "
        f"sample standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}: "
        f"the hold-out and the initial weights); training rows per site (seed "
        f"{seeds[0]}): {sizes}. Predicting the commoner outcome for everyone scores "
        f"accuracy {np.mean([r['majority'] for r in runs]):.3f} (balanced accuracy and ROC AUC "
        "0.5): one-year death is hard to predict from these columns. Balanced accuracy is the "
        "mean of sensitivity and specificity at p ≥ 0.5; `--class-weights balanced` weights "
        "the loss by the federation's label counts (from the same statistics).", "",
        "| scaling | method | accuracy | balanced accuracy | ROC AUC | ROC AUC per seed |",
        "| --- | --- | --- | --- | --- | --- |"]
    for scaling, key, label in ROWS:
        acc, auc, bal = ([r[key][i] for r in runs] for i in range(3))
        lines.append(f"| {scaling} | {label} | {_cell(acc)} | {_cell(bal)} | {_cell(auc)} | "
                     f"{' / '.join(f'{a:.3f}' for a in auc)} |")
    paired = [r["shared/fedavg"][1] - r["per-site/fedavg"][1] for r in runs]
    lines += ["", f"FedAvg, shared − per-site scaling, paired by seed: ROC AUC {_cell(paired)} "
              f"(shared higher in {sum(d > 0 for d in paired)} of {len(paired)} seeds)."]
    return "\n".join(lines) + "\n"
