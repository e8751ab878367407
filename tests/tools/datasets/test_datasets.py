"""Tests of tools/datasets: each dataset's shapes, classes and seeding; the partitioners."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client.data import load_data, make_windows
from edge_client.errors import ConfigError
from tools.datasets import (
    DATASETS,
    Dataset,
    Partition,
    dirichlet_label_skew,
    iid,
    load_dataset,
    natural,
    quantity_skew,
)
from tools.datasets.wearable import (
    BRADYCARDIA,
    DROPOUT,
    TACHYCARDIA,
    device_stream,
    write_stream_csv,
)


def same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f))
               for f in ("x_train", "y_train", "x_test", "y_test"))


@pytest.fixture(scope="module")
def gaussian() -> Dataset:
    return load_dataset("seed-gaussian", seed=3)


def test_every_dataset_fits_its_metadata_and_is_read_only() -> None:
    for name in ("seed-gaussian", "wearable-synthetic"):  # the heavy two have their own tests
        data = load_dataset(name, seed=0)
        assert data.info.name == name and data.info.model in ("logreg", "mlp", "cnn1d")
        assert data.x_train.shape[1:] == data.info.input_shape == data.x_test.shape[1:]
        assert len(data.info.feature_names) == data.info.input_shape[0]
        assert set(np.unique(data.y_train)) <= set(range(len(data.info.classes)))
        with pytest.raises(ValueError):
            data.x_train[0] = 1.0


def test_registry_rejects_unknown_names_and_options() -> None:
    assert set(DATASETS) == {"seed-gaussian", "breast-cancer", "basic-motions",
                             "wearable-synthetic", "ncctg-lung"}
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="seed-gaussian"):
        load_dataset("seed-gaussian", 0, n_parties=3)


def test_seed_gaussian_shapes_sizes_and_parties(gaussian: Dataset) -> None:
    assert gaussian.x_train.shape == (2000, 2) and gaussian.x_test.shape == (1000, 2)
    assert gaussian.info.model == "logreg" and gaussian.info.classes == ("0", "1")
    assert gaussian.groups_train is not None
    np.testing.assert_array_equal(np.bincount(gaussian.groups_train), [1000, 1000])
    small = load_dataset("seed-gaussian", 3, n_per_party=10, n_test_per_party=4)
    assert small.x_train.shape == (20, 2) and small.x_test.shape == (8, 2)


def test_seed_gaussian_label_rules_contradict_between_parties(gaussian: Dataset) -> None:
    assert gaussian.groups_train is not None
    for x, y, groups in ((gaussian.x_train, gaussian.y_train, gaussian.groups_train),
                         (*gaussian.test_of(0), np.zeros(500)), (*gaussian.test_of(1),
                                                                 np.ones(500))):
        first, second = groups == 0, groups == 1
        np.testing.assert_array_equal(y[first], x[first, 0] > x[first, 1])
        np.testing.assert_array_equal(y[second], x[second, 0] < x[second, 1])
    centres = [gaussian.x_train[gaussian.groups_train == p].mean(axis=0) for p in (0, 1)]
    np.testing.assert_allclose(centres, [[1, 0.5], [-1, -0.5]], atol=0.1)
    np.testing.assert_allclose(np.cov(gaussian.x_train[:1000].T), np.eye(2), atol=0.15)


def test_seed_gaussian_is_determined_by_the_seed(gaussian: Dataset) -> None:
    assert same(gaussian, load_dataset("seed-gaussian", seed=3))
    assert not same(gaussian, load_dataset("seed-gaussian", seed=4))


def test_breast_cancer_stratified_split() -> None:
    data = load_dataset("breast-cancer", seed=1)
    assert data.x_train.shape == (426, 30) and data.x_test.shape == (143, 30)
    assert data.info.classes == ("malignant", "benign") and data.groups_train is None
    assert data.info.feature_names[0] == "mean radius"
    assert abs(data.y_train.mean() - data.y_test.mean()) < 0.01
    assert same(data, load_dataset("breast-cancer", seed=1))
    assert not same(data, load_dataset("breast-cancer", seed=2))


def test_basic_motions_reads_packaged_files_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("basic-motions tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    data = load_dataset("basic-motions", seed=0)
    assert data.x_train.shape == data.x_test.shape == (40, 6, 100)
    assert data.info.model == "cnn1d" and len(data.info.classes) == 4
    np.testing.assert_array_equal(np.bincount(data.y_train), [10, 10, 10, 10])
    assert data.groups_train is None  # no wearer id in the files
    assert same(data, load_dataset("basic-motions", seed=0))
    other = load_dataset("basic-motions", seed=1)
    assert not same(data, other)
    assert np.array_equal(np.sort(data.x_train, axis=0), np.sort(other.x_train, axis=0))


def test_wearable_windows_groups_and_seed() -> None:
    data = load_dataset("wearable-synthetic", seed=5, n_devices=6, minutes=600, window=20)
    assert data.x_train.shape == (6 * 22, 3, 20) and data.x_test.shape == (6 * 7, 3, 20)
    assert data.groups_test is not None and data.groups_train is not None
    np.testing.assert_array_equal(np.unique(data.groups_train), np.arange(6))
    assert same(data, load_dataset("wearable-synthetic", 5, n_devices=6, minutes=600,
                                   window=20))
    assert not same(data, load_dataset("wearable-synthetic", 6, n_devices=6, minutes=600,
                                       window=20))


def test_a_device_stream_does_not_depend_on_the_others() -> None:
    data = load_dataset("wearable-synthetic", seed=2, n_devices=4, test_fraction=0.5)
    stream = device_stream(2, 3)
    x, y = make_windows(stream.values[:720], stream.labels[:720], 30, 30)
    assert data.groups_train is not None
    np.testing.assert_array_equal(data.x_train[data.groups_train == 3], x)
    np.testing.assert_array_equal(data.y_train[data.groups_train == 3], y)


def test_wearable_anomalies_look_like_their_label() -> None:
    streams = [device_stream(0, d, episodes_per_day=8) for d in range(10)]
    hr = np.concatenate([s.values[:, 0] for s in streams])
    steps = np.concatenate([s.values[:, 1] for s in streams])
    labels = np.concatenate([s.labels for s in streams])
    assert (hr[labels == TACHYCARDIA] > 100).all() and (steps[labels == TACHYCARDIA] == 0).all()
    assert (hr[labels == BRADYCARDIA] < 50).all()
    assert (steps[labels == DROPOUT] == 0).all()
    assert (hr[labels == 0] > 35).all() and (hr[labels == 0] < 200).all()
    dropout = streams[0].values[streams[0].labels == DROPOUT, 0]
    assert len(np.unique(dropout)) <= 2 * 8  # flatline: one value per episode


def test_wearable_stream_round_trips_through_the_device_reader(tmp_path: Path) -> None:
    stream = device_stream(7, 42, minutes=300, episodes_per_day=20)
    path = tmp_path / "watch_42.csv"
    write_stream_csv(stream, path)
    assert path.read_text().startswith("timestamp,hr,steps,sleep,label\n2024-01-01T00:00,")
    local = load_data(path, window=30, stride=15)
    x, y = make_windows(stream.values, stream.labels, 30, 15)
    assert local.feature_names == ("hr", "steps", "sleep")
    np.testing.assert_array_equal(local.x, x)
    np.testing.assert_array_equal(local.y, y)
    assert len(np.unique(local.y)) > 1


def assert_partition(parts: Partition, n_samples: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n_samples  # disjoint and complete
    np.testing.assert_array_equal(np.sort(joined), np.arange(n_samples))
    assert all(len(part) > 0 for part in parts)


clients = st.integers(1, 12)
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), k=clients, seed=seeds)
def test_iid_deals_equal_shares(n: int, k: int, seed: int) -> None:
    if n < k:
        with pytest.raises(ConfigError):
            iid(n, k, np.random.default_rng(seed))
        return
    parts = iid(n, k, np.random.default_rng(seed))
    assert_partition(parts, n)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@settings(max_examples=60, deadline=None)
@given(n=st.integers(12, 300), k=clients, alpha=st.floats(0.01, 100), seed=seeds)
def test_quantity_skew_covers_every_sample(n: int, k: int, alpha: float, seed: int) -> None:
    parts = quantity_skew(n, k, alpha, np.random.default_rng(seed))
    assert len(parts) == k
    assert_partition(parts, n)


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 5), min_size=12, max_size=300), k=clients,
       alpha=st.floats(0.01, 100), seed=seeds)
def test_dirichlet_covers_every_sample(labels: list[int], k: int, alpha: float,
                                       seed: int) -> None:
    parts = dirichlet_label_skew(np.array(labels), k, alpha, np.random.default_rng(seed))
    assert len(parts) == k
    assert_partition(parts, len(labels))


def test_small_alpha_skews_labels_and_large_alpha_does_not() -> None:
    labels = np.repeat(np.arange(10), 100)

    def classes_per_client(alpha: float) -> float:
        parts = dirichlet_label_skew(labels, 10, alpha, np.random.default_rng(0))
        return float(np.mean([len(np.unique(labels[p])) for p in parts]))

    assert classes_per_client(0.05) < 5 and classes_per_client(100.0) == 10


@given(groups=st.lists(st.integers(-3, 50), min_size=1, max_size=200))
def test_natural_gives_one_client_per_group(groups: list[int]) -> None:
    array: npt.NDArray[np.int64] = np.array(groups)
    parts = natural(array)
    assert len(parts) == len(set(groups))
    assert_partition(parts, len(groups))
    assert [int(array[p][0]) for p in parts] == sorted(set(groups))
    assert all(len(np.unique(array[p])) == 1 for p in parts)


@pytest.mark.parametrize("call", [
    lambda rng: iid(5, 0, rng), lambda rng: quantity_skew(3, 4, 1.0, rng),
    lambda rng: quantity_skew(9, 4, 0.0, rng),
    lambda rng: dirichlet_label_skew(np.zeros(3, np.int64), 4, 1.0, rng),
    lambda rng: natural(np.zeros(0, np.int64)),
])
def test_impossible_partitions_are_config_errors(call: Any) -> None:
    with pytest.raises(ConfigError):
        call(np.random.default_rng(0))
