"""Partitioners: which client holds which sample, for simulating a federation.

Each function returns one sorted index array per client. Every sample is assigned exactly once
and no client is left empty; when that is impossible (fewer samples than clients) the function
raises :class:`~edge_client.errors.ConfigError`. Randomness comes only from the ``rng`` passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError

Indices = npt.NDArray[np.int64]
Partition = list[Indices]


def _check(n_samples: int, n_clients: int) -> None:
    if n_clients < 1:
        raise ConfigError(f"need at least one client, got {n_clients}")
    if n_samples < n_clients:
        raise ConfigError(f"cannot give {n_clients} clients a sample each from {n_samples}")


def _split_at(order: Indices, sizes: npt.NDArray[np.int64]) -> Partition:
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> Partition:
    """Shuffle the samples and deal them out in sizes that differ by at most one.

    Raises:
        ConfigError: fewer samples than clients, or no client.
    """
    _check(n_samples, n_clients)
    sizes = np.full(n_clients, n_samples // n_clients, dtype=np.int64)
    sizes[: n_samples % n_clients] += 1
    return _split_at(rng.permutation(n_samples).astype(np.int64), sizes)


def quantity_skew(n_samples: int, n_clients: int, alpha: float,
                  rng: np.random.Generator) -> Partition:
    """Give clients IID samples in amounts drawn from a Dirichlet(alpha) (small alpha: skewed).

    Every client gets one sample first, then the rest are spread by the drawn shares.

    Raises:
        ConfigError: fewer samples than clients, no client, or alpha <= 0.
    """
    _check(n_samples, n_clients)
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}")
    shares = rng.dirichlet(np.full(n_clients, alpha))
    sizes = 1 + rng.multinomial(n_samples - n_clients, shares).astype(np.int64)
    return _split_at(rng.permutation(n_samples).astype(np.int64), sizes)


def _fill_empty(parts: list[list[int]]) -> None:
    """Move one sample from the largest client to each empty one (in place)."""
    for empty in (i for i, part in enumerate(parts) if not part):
        donor = max(range(len(parts)), key=lambda i: len(parts[i]))
        parts[empty].append(parts[donor].pop())


def dirichlet_label_skew(labels: npt.NDArray[np.integer[Any]], n_clients: int, alpha: float,
                         rng: np.random.Generator) -> Partition:
    """Split each class among clients by shares drawn from a Dirichlet(alpha).

    Small alpha gives each client few classes; large alpha approaches IID. A client left empty
    by the draw receives one sample from the largest client.

    Args:
        labels: class label of each sample.
        n_clients: number of clients.
        alpha: Dirichlet concentration, > 0.
        rng: the source of randomness.

    Raises:
        ConfigError: fewer samples than clients, no client, or alpha <= 0.
    """
    _check(len(labels), n_clients)
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}")
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.extend(chunk.tolist())
    _fill_empty(parts)
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def natural(groups: npt.NDArray[np.integer[Any]]) -> Partition:
    """One client per distinct group (party, device, wearer), in ascending group order.

    Raises:
        ConfigError: no samples.
    """
    if len(groups) == 0:
        raise ConfigError("cannot partition zero samples")
    inverse = np.unique(groups, return_inverse=True)[1].ravel()
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    return _split_at(order, np.bincount(inverse).astype(np.int64))
