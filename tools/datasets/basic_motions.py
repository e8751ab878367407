"""``basic-motions``: smartwatch accelerometer + gyroscope windows bundled with sktime.

The UEA ``BasicMotions`` files inside the sktime package hold 80 recordings of 10 s at 10 Hz
(6 channels × 100 steps) of four students standing, walking, running and playing badminton,
already split 40/40 into train and test. The files carry no participant id and do not document
the order of recordings, so no natural partition by wearer can be derived honestly: groups are
None and a federation uses an IID (or Dirichlet) partitioner.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.datasets.dataset import ClassLabels, Dataset, DatasetInfo, Samples

CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
"""Channel order of the files: 3-D accelerometer, then 3-D gyroscope."""
CLASSES = ("standing", "walking", "running", "badminton")


def _split(split: str) -> tuple[Samples, ClassLabels]:
    from sktime.datasets import load_basic_motions  # heavy import, only when asked for

    # sktime reads its own packaged .ts files (sktime/datasets/data/BasicMotions) when present
    x, names = load_basic_motions(split=split, return_type="numpy3D")
    labels = np.array([CLASSES.index(str(name).lower()) for name in names], dtype=np.int64)
    return np.asarray(x, dtype=np.float32), labels


def _shuffled(rng: np.random.Generator, x: Samples,
              y: ClassLabels) -> tuple[Samples, ClassLabels]:
    order: npt.NDArray[np.int64] = rng.permutation(len(y))
    return x[order], y[order]


def load_basic_motions_dataset(seed: int) -> Dataset:
    """Load BasicMotions with its published train/test split, each shuffled by ``seed``.

    Args:
        seed: seeds the order of samples (the files list them class by class).

    Returns:
        x (40, 6, 100) float32 per split, labels 0..3 in the order of :data:`CLASSES`.
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = _shuffled(rng, *_split("train"))
    x_test, y_test = _shuffled(rng, *_split("test"))
    info = DatasetInfo(
        name="basic-motions", feature_names=CHANNELS, classes=CLASSES, model="cnn1d",
        input_shape=(len(CHANNELS), 100), notes="UEA BasicMotions from sktime's package data "
        "(offline); published 40/40 split; no wearer id in the files: use iid or dirichlet")
    return Dataset(x_train, y_train, x_test, y_test, info)
