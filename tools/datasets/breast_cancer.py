"""``breast-cancer``: scikit-learn's bundled Wisconsin diagnostic data (no download)."""

from __future__ import annotations

import numpy as np

from tools.datasets.dataset import Dataset, DatasetInfo


def load_breast_cancer_dataset(seed: int, *, test_fraction: float = 0.25) -> Dataset:
    """Load the 569 × 30 tumour measurements with a stratified, seeded train/test split.

    Features are left in their raw units: each client normalises with its own local
    statistics (``edge_client.data.compute_norm_stats``).

    Args:
        seed: seeds the split.
        test_fraction: share of samples held out, stratified by class.

    Returns:
        x (n, 30) float32, labels 0 = malignant, 1 = benign; no natural groups.
    """
    from sklearn.datasets import load_breast_cancer  # heavy import, only when asked for
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed)
    info = DatasetInfo(
        name="breast-cancer", feature_names=tuple(str(n) for n in bunch.feature_names),
        classes=tuple(str(n) for n in bunch.target_names), model="mlp", input_shape=(30,),
        notes="sklearn load_breast_cancer (bundled file); stratified split; raw units; "
        "no natural partition: use iid or dirichlet")
    return Dataset(x_train, y_train, x_test, y_test, info)
