"""Offline datasets for the demo and the benchmarks, and partitioners to federate them.

Every dataset is built from a seed with no network access, as a frozen :class:`Dataset`:

- ``seed-gaussian``: the seed article's two contradicting parties (2 features, logreg).
- ``breast-cancer``: scikit-learn's bundled Wisconsin diagnostic data (30 features, mlp).
- ``basic-motions``: sktime's bundled smartwatch motions (6 × 100 windows, cnn1d).
- ``wearable-synthetic``: generated HR / steps / sleep streams with anomalies (cnn1d).
- ``ncctg-lung``: lifelines' bundled NCCTG lung cancer table, death within a year, sites of
  whole institutions, categories and missing cells through the schema (logreg).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from edge_client.errors import ConfigError
from tools.datasets.basic_motions import load_basic_motions_dataset
from tools.datasets.breast_cancer import load_breast_cancer_dataset
from tools.datasets.dataset import Dataset, DatasetInfo, ZooModel
from tools.datasets.gaussian import load_seed_gaussian
from tools.datasets.lung import load_lung_dataset
from tools.datasets.partition import Partition, dirichlet_label_skew, iid, natural, quantity_skew
from tools.datasets.wearable import load_wearable_synthetic

__all__ = [
    "DATASETS", "Dataset", "DatasetInfo", "Partition", "ZooModel", "dirichlet_label_skew",
    "iid", "load_dataset", "natural", "quantity_skew",
]

DATASETS: Mapping[str, Callable[..., Dataset]] = {
    "seed-gaussian": load_seed_gaussian,
    "breast-cancer": load_breast_cancer_dataset,
    "basic-motions": load_basic_motions_dataset,
    "wearable-synthetic": load_wearable_synthetic,
    "ncctg-lung": load_lung_dataset,
}
"""Dataset name -> builder taking ``seed`` and the dataset's own keyword options."""


def load_dataset(name: str, seed: int = 0, **options: Any) -> Dataset:
    """Build a dataset by name.

    Args:
        name: a key of :data:`DATASETS`.
        seed: seeds every random choice; the same seed gives the same arrays.
        **options: the builder's keyword options, e.g. ``n_per_party`` for seed-gaussian.

    Raises:
        ConfigError: unknown name, or an option the builder does not take.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    builder = DATASETS[name]
    try:
        inspect.signature(builder).bind(seed, **options)
    except TypeError as error:
        raise ConfigError(f"dataset {name!r}: {error}") from error
    return builder(seed, **options)
