"""A dataset split over a simulated fleet, the same in the coordinator and every worker.

``fedge simulate --train`` gives each of N devices its own shard of an offline dataset
(:mod:`tools.datasets`): a dataset that generates its own devices (``n_devices``, e.g.
``wearable-synthetic``) is built with N devices and partitioned naturally, any other one
IID from ``seed``. Every shard is standardised with the pooled training statistics
(:mod:`edge_client.normalise`), one fixed preprocessing for the whole fleet, and so is the
held-out test set the coordinator scores the global model on. The split is rebuilt from
``(dataset, devices, seed)`` in every process: no samples cross a process boundary.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError
from edge_client.normalise import compute_norm_stats, normalise
from tools.datasets import DATASETS, Dataset, iid, load_dataset, natural

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class FleetData:
    """Each device's (x, y), standardised, and the held-out test set."""

    dataset: Dataset
    shards: list[tuple[Array, Array]]
    test: tuple[Array, Array]

    @property
    def sizes(self) -> list[int]:
        """Samples per device."""
        return [len(y) for _, y in self.shards]


def _load(name: str, devices: int, seed: int) -> Dataset:
    if name not in DATASETS:
        raise ConfigError(f"--dataset {name!r}: unknown; known: {', '.join(DATASETS)}")
    if "n_devices" in inspect.signature(DATASETS[name]).parameters:
        return load_dataset(name, seed, n_devices=devices)
    return load_dataset(name, seed)


def fleet_data(name: str, devices: int, seed: int) -> FleetData:
    """Dataset ``name`` split over ``devices`` devices (see the module docstring).

    Raises:
        ConfigError: unknown dataset, or fewer training samples than devices.
    """
    ds = _load(name, devices, seed)
    if ds.groups_train is not None and len(np.unique(ds.groups_train)) == devices:
        parts = natural(ds.groups_train)
    else:
        try:
            parts = iid(len(ds.y_train), devices, np.random.default_rng(seed))
        except ConfigError as e:
            raise ConfigError(f"--dataset {name} --devices {devices}: {e}") from None
    stats = compute_norm_stats(ds.x_train)
    x = normalise(ds.x_train, stats)
    shards = [(x[p], ds.y_train[p].astype(np.float32)) for p in parts]
    test = (normalise(ds.x_test, stats), ds.y_test.astype(np.float32))
    return FleetData(ds, shards, test)
