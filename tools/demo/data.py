"""Splits a dataset into one data file per client, as each party would hold it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError
from tools.datasets import Dataset, dirichlet_label_skew, iid, natural, quantity_skew
from tools.demo.config import DemoConfig
from tools.evaluate.scaling import Scaling

PARTITIONS = ("natural", "iid", "dirichlet", "quantity")
DEFAULT_ROUNDS = 10  # the README's reference run and `fedge bench results`
Array = npt.NDArray[Any]

# per dataset: clients, partition, epochs, lr, batch, optimizer, normalise, party name.
# seed-gaussian is the README's reference run. The others were compared with 10 rounds on
# seeds 3-7, so that `fedge bench results` (seeds 0-2) is not scored on the seeds they were
# chosen on; the pooled baseline shares lr, batch size and optimizer, so a setting was kept
# only when pooled training stayed at its best too. basic-motions: SGD with momentum beat Adam
# (whose moments restart every round) for federated and pooled training alike.
_DEFAULTS: dict[str, tuple[int, str, int, float, int, str, bool, str]] = {
    "seed-gaussian": (2, "natural", 2, 0.1, 32, "sgd", False, "party"),
    "breast-cancer": (4, "iid", 2, 0.05, 16, "sgd", True, "hospital"),
    "basic-motions": (4, "iid", 5, 0.01, 4, "sgd", True, "wearer"),
    "wearable-synthetic": (10, "natural", 2, 0.005, 32, "adam", True, "device"),
    "ncctg-lung": (4, "natural", 2, 0.05, 16, "sgd", True, "site"),  # not tuned
}


@dataclass(frozen=True)
class DemoDefaults:
    """Settings of one demo run: flags, else the dataset's defaults."""

    clients: int
    partition: str
    rounds: int
    epochs: int
    lr: float
    batch_size: int
    optimizer: str
    normalise: bool
    party: str
    min_clients: int


def defaults_for(ds: Dataset, config: DemoConfig) -> DemoDefaults:
    """Combines the run's settings with the dataset's defaults."""
    clients, partition, epochs, lr, batch, opt, norm, party = _DEFAULTS[ds.info.name]
    partition = config.partition or partition
    if partition == "natural":
        if ds.groups_train is None:
            raise ConfigError(f"--partition natural: {ds.info.name} has no natural parties; "
                              "use iid, dirichlet or quantity")
        groups = int(ds.groups_train.max()) + 1
        clients = config.clients or min(clients, groups)
        if clients > groups:
            raise ConfigError(f"--clients {clients}: {ds.info.name} has {groups} parties")
    else:
        clients = config.clients or clients
    rounds = config.rounds or DEFAULT_ROUNDS
    if rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    return DemoDefaults(clients, partition, rounds, config.epochs or epochs, config.lr or lr,
                        batch, opt, norm, party, max(1, clients - clients // 4))


@dataclass(frozen=True)
class ClientShare:
    """One client's data file and its slice of the test set (used only to plot)."""

    client_id: str
    path: Path
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    scaling: Scaling
    train_index: npt.NDArray[np.int64]  # rows of the dataset's training set this client holds


def _parts(ds: Dataset, d: DemoDefaults, rng: np.random.Generator
           ) -> tuple[list[Array], list[Array]]:
    n_train, n_test = len(ds.y_train), len(ds.y_test)
    if d.partition == "natural":
        assert ds.groups_train is not None
        test = (natural(ds.groups_test) if ds.groups_test is not None
                else iid(n_test, d.clients, rng))
        return list(natural(ds.groups_train))[: d.clients], list(test)[: d.clients]
    if d.partition == "iid":
        train = iid(n_train, d.clients, rng)
    elif d.partition == "dirichlet":
        train = dirichlet_label_skew(ds.y_train, d.clients, 0.5, rng)
    else:
        train = quantity_skew(n_train, d.clients, 0.5, rng)
    return list(train), list(iid(n_test, d.clients, rng))


def share_data(ds: Dataset, d: DemoDefaults, folder: Path, rng: np.random.Generator
               ) -> list[ClientShare]:
    """Writes ``folder/{party}-{i}.npz`` (x, y) per client; returns the shares."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = _parts(ds, d, rng)
    shares = []
    for i, (tr, te) in enumerate(zip(train, test, strict=False)):
        cid = f"{d.party}-{i + 1}"
        x, y = ds.x_train[tr], ds.y_train[tr]
        path = folder / f"{cid}.npz"
        np.savez(path, x=x, y=y.astype(np.int64))
        shares.append(ClientShare(cid, path, x, y, ds.x_test[te], ds.y_test[te],
                                  Scaling.fit(x, d.normalise, f"{cid}'s training data"),
                                  np.asarray(tr, dtype=np.int64)))
    return shares


def pooled_training(ds: Dataset, shares: list[ClientShare]) -> tuple[Array, Array]:
    """All the clients' training samples in one place, in the dataset's order.

    This is the pooled (centralised) baseline's data: exactly what the federation holds, so
    with fewer clients than natural parties the parties left out are left out here too.
    """
    rows = np.sort(np.concatenate([c.train_index for c in shares]))
    return ds.x_train[rows], ds.y_train[rows]
