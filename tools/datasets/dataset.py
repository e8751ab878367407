"""The shape every offline dataset takes: arrays for training and testing plus metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError

ZooModel = Literal["logreg", "mlp", "cnn1d", "cnn2d"]
Samples = npt.NDArray[np.float32]
ClassLabels = npt.NDArray[np.int64]
Groups = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds and how to train on it.

    Attributes:
        name: registry name, e.g. ``"seed-gaussian"``.
        feature_names: names along axis 1 of x (features, or channels of a series).
        classes: class names; label ``i`` is ``classes[i]``.
        model: the suggested model of the zoo.
        input_shape: shape of one sample, e.g. ``(30,)`` or ``(6, 100)`` (channels, time).
        notes: provenance and the choices made (partition, split, what was assumed).
    """

    name: str
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    model: ZooModel
    input_shape: tuple[int, ...]
    notes: str


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays (read-only) with their natural groups, if the data has any.

    Attributes:
        x_train: float32 samples, (n, *info.input_shape).
        y_train: int64 class labels, (n,).
        x_test: float32 held-out samples.
        y_test: int64 held-out labels.
        info: metadata.
        groups_train: natural owner (party, device) of each training sample, or None when the
            data has no natural partition (then use an IID or skewed partitioner).
        groups_test: owner of each held-out sample, or None.
    """

    x_train: Samples
    y_train: ClassLabels
    x_test: Samples
    y_test: ClassLabels
    info: DatasetInfo
    groups_train: Groups | None = None
    groups_test: Groups | None = None

    def __post_init__(self) -> None:
        pairs = (("train", self.x_train, self.y_train, self.groups_train),
                 ("test", self.x_test, self.y_test, self.groups_test))
        for split, x, y, groups in pairs:
            if x.shape[1:] != self.info.input_shape or len(x) != len(y):
                raise ConfigError(f"{self.info.name} {split}: x {x.shape} and y {y.shape} do "
                                  f"not fit input shape {self.info.input_shape}")
            if groups is not None and len(groups) != len(y):
                raise ConfigError(f"{self.info.name} {split}: {len(groups)} groups for "
                                  f"{len(y)} samples")
            for array in (x, y, groups):
                if array is not None:
                    array.setflags(write=False)

    def test_of(self, group: int) -> tuple[Samples, ClassLabels]:
        """Return the held-out samples of one party or device.

        Raises:
            ConfigError: the dataset has no groups, or none with that number.
        """
        if self.groups_test is None or not (self.groups_test == group).any():
            raise ConfigError(f"{self.info.name}: no held-out samples of group {group}")
        mask = self.groups_test == group
        return self.x_test[mask], self.y_test[mask]
