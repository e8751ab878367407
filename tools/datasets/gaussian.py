"""``seed-gaussian``: the seed article's two parties whose labels contradict each other.

Party 1 draws 2-D features around ``[1, 0.5]`` and labels a point 1 when ``x0 > x1``; party 2
draws around ``[-1, -0.5]`` and labels a point 1 when ``x0 < x1``. No single linear model fits
both parties, which is what the demo shows about naive averaging. The covariance is the
identity: the article gives only the centres, nothing implies correlation or another scale.
"""

from __future__ import annotations

import numpy as np

from tools.datasets.dataset import ClassLabels, Dataset, DatasetInfo, Groups, Samples

CENTRES = ((1.0, 0.5), (-1.0, -0.5))
"""Mean of each party's features: party 1 first."""


def party_samples(rng: np.random.Generator, party: int, n: int) -> tuple[Samples, ClassLabels]:
    """Draw ``n`` labelled points of one party (0 for party 1, 1 for party 2).

    Args:
        rng: the source of randomness.
        party: 0 labels ``x0 > x1`` as 1; 1 labels ``x0 < x1`` as 1.
        n: number of points.
    """
    x = rng.normal(loc=CENTRES[party], scale=1.0, size=(n, 2)).astype(np.float32)
    positive = x[:, 0] > x[:, 1] if party == 0 else x[:, 0] < x[:, 1]
    return x, positive.astype(np.int64)


def _parties(rng: np.random.Generator, n: int) -> tuple[Samples, ClassLabels, Groups]:
    drawn = [party_samples(rng, party, n) for party in range(len(CENTRES))]
    groups = np.repeat(np.arange(len(CENTRES), dtype=np.int64), n)
    return np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn]), groups


def load_seed_gaussian(seed: int, *, n_per_party: int = 1000,
                       n_test_per_party: int = 500) -> Dataset:
    """Build the two-party Gaussian dataset.

    Args:
        seed: seeds every draw; the same seed gives the same arrays.
        n_per_party: training points per party.
        n_test_per_party: held-out points per party (``Dataset.test_of(p)`` gives one party's,
            ``x_test``/``y_test`` the pooled set).

    Returns:
        x (n, 2) float32, labels {0, 1}, groups = party (0 or 1) for train and test.
    """
    rng = np.random.default_rng(seed)
    x_train, y_train, g_train = _parties(rng, n_per_party)
    x_test, y_test, g_test = _parties(rng, n_test_per_party)
    info = DatasetInfo(
        name="seed-gaussian", feature_names=("x0", "x1"), classes=("0", "1"), model="logreg",
        input_shape=(2,), notes="2 parties, N([1, 0.5], I) labelled x0 > x1 and "
        "N([-1, -0.5], I) labelled x0 < x1; natural partition = party; identity covariance "
        "(assumed: the article gives only the centres)")
    return Dataset(x_train, y_train, x_test, y_test, info, g_train, g_test)
