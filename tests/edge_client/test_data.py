"""Tests of edge_client/data.py: adapters, windowing, normalisation and error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client.data import (
    load_data,
    load_inputs,
    load_npz,
    load_series_csv,
    load_table_csv,
    make_windows,
)
from edge_client.errors import ConfigError, DataError
from edge_client.normalise import NormStats, compute_norm_stats, normalise

SERIES = """timestamp,acc_x,hr,session,label
t0,0,60,a,0
t1,1,61,a,0
t2,2,62,a,1
t3,3,63,a,1
t4,4,64,a,1
t5,5,65,b,2
t6,6,66,b,2
t7,7,67,b,0
"""


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_table_csv_uses_all_other_columns_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "age,label,bmi\n40,1,22.5\n55,0,31\n")
    data = load_table_csv(path)
    assert data.feature_names == ("age", "bmi")
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.x, np.array([[40, 22.5], [55, 31]]))
    np.testing.assert_array_equal(data.y, [1, 0])
    assert data.y.dtype == np.int64
    assert data.source == str(path) and len(data) == 2


def test_table_csv_picks_features_by_name_and_label_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c,outcome\n1,2,3,0\n4,5,6,2\n\n")  # trailing blank line
    data = load_data(path, label_column="outcome", features=["c", "a"])
    assert data.feature_names == ("c", "a")
    np.testing.assert_array_equal(data.x, [[3, 1], [6, 4]])
    np.testing.assert_array_equal(data.y, [0, 2])


def test_regression_task_accepts_float_targets(tmp_path: Path) -> None:
    path = write(tmp_path, "x,label\n1,0.25\n2,-3.5\n")
    data = load_data(path, task="regression")
    assert data.y.dtype == np.float32
    np.testing.assert_array_equal(data.y, [0.25, -3.5])


def test_npz_round_trip_with_and_without_names(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    np.savez(tmp_path / "named.npz", x=x, y=[0, 1, 1], feature_names=np.array(["acc", "hr"]))
    np.savez(tmp_path / "plain.npz", x=x[:, :, 0], y=[2, 0, 1])
    named = load_data(tmp_path / "named.npz")
    assert named.x.shape == (3, 2, 2) and named.x.dtype == np.float32
    assert named.feature_names == ("acc", "hr")
    plain = load_npz(tmp_path / "plain.npz")
    assert plain.feature_names == ("x0", "x1")
    np.testing.assert_array_equal(plain.y, [2, 0, 1])


def test_series_windows_match_a_hand_cut_series(tmp_path: Path) -> None:
    data = load_series_csv(write(tmp_path, SERIES), window=3, stride=2,
                           features=["acc_x", "hr"])
    # starts 0, 2, 4: channels x time, majority label of each window
    np.testing.assert_array_equal(data.x[0], [[0, 1, 2], [60, 61, 62]])
    np.testing.assert_array_equal(data.x[1], [[2, 3, 4], [62, 63, 64]])
    np.testing.assert_array_equal(data.x[2], [[4, 5, 6], [64, 65, 66]])
    np.testing.assert_array_equal(data.y, [0, 1, 2])
    assert data.x.shape == (3, 2, 3) and data.feature_names == ("acc_x", "hr")


def test_windows_never_span_two_sessions(tmp_path: Path) -> None:
    data = load_data(write(tmp_path, SERIES), window=2, stride=1, group_column="session")
    # timestamp and session are not channels; session a gives 4 windows, session b gives 2
    assert data.feature_names == ("acc_x", "hr")
    np.testing.assert_array_equal(data.x[:, 0, 0], [0, 1, 2, 3, 5, 6])
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1, 2, 0])  # [2, 0] ties to 0


def test_stride_defaults_to_window_and_short_sessions_are_skipped(tmp_path: Path) -> None:
    data = load_data(write(tmp_path, SERIES), window=4, group_column="session")
    np.testing.assert_array_equal(data.x[:, 0, 0], [0])  # session b has only 3 rows


def test_regression_windows_take_the_mean_target() -> None:
    series = np.arange(8, dtype=np.float64).reshape(4, 2)
    x, y = make_windows(series, np.array([1, 2, 3, 5], np.float32), window=2, stride=2)
    np.testing.assert_array_equal(y, [1.5, 4.0])
    np.testing.assert_array_equal(x[1], [[4, 6], [5, 7]])


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 40), channels=st.integers(1, 4), window=st.integers(1, 10),
       stride=st.integers(1, 10))
def test_make_windows_slices_the_series(length: int, channels: int, window: int,
                                        stride: int) -> None:
    series = np.arange(length * channels, dtype=np.float64).reshape(length, channels)
    labels = np.zeros(length, dtype=np.int64)
    x, y = make_windows(series, labels, window, stride)
    expected = (length - window) // stride + 1 if length >= window else 0
    assert x.shape == (expected, channels, window) and y.shape == (expected,)
    for i in range(expected):
        np.testing.assert_array_equal(x[i], series[i * stride: i * stride + window].T)


BAD_CSV = [
    ("x,label\n", {}, ["no data rows"]),
    ("x,hr\n1,2\n", {}, ["line 1", 'column "label"']),
    ("x,label\n1,0\nabc,1\n", {}, ["line 3", 'column "x"', "not a number"]),
    ("x,label\n1,0\n2,1,7\n", {}, ["line 3", "3 cells"]),
    ("x,label\n1,0\nnan,1\n", {}, ["line 3", 'column "x"', "finite"]),
    ("x,label\n1,0\n,1\n", {}, ["line 3", 'column "x"', "empty cell"]),
    ("x,label\n1,0\n2,-1\n", {}, ["line 3", 'column "label"', "integer"]),
    ("x,label\n1,0.5\n", {}, ["line 2", 'column "label"', "integer"]),
    ("x,label\n1,0\n", {"features": ["hr"]}, ["line 1", 'column "hr"']),
    ("x,x\n1,0\n", {}, ["line 1", "distinct"]),
    ("x,label\n1,0\n2,0\n", {"window": 3}, ["window of 3 rows", "2 rows"]),
    ("x,s,label\n1,,0\n", {"window": 1, "group_column": "s"}, ["line 2", 'column "s"']),
]


@pytest.mark.parametrize(("text", "options", "fragments"), BAD_CSV)
def test_bad_csv_errors_name_file_line_and_column(tmp_path: Path, text: str,
                                                  options: dict[str, Any],
                                                  fragments: list[str]) -> None:
    path = write(tmp_path, text, "clinic_7.csv")
    with pytest.raises(DataError) as caught:
        load_data(path, **options)
    message = str(caught.value)
    assert "clinic_7.csv" in message
    for fragment in fragments:
        assert fragment in message


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.csv: no such file"):
        load_data(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"empty\.npz: empty file"):
        load_data(write(tmp_path, "", "empty.npz"))


def bad_npz(path: Path, case: str) -> None:
    arrays: dict[str, Any] = {
        "missing y": {"x": np.zeros((2, 2))},
        "lengths": {"x": np.zeros((3, 2)), "y": np.zeros(2)},
        "dims": {"x": np.zeros(3), "y": np.zeros(3)},
        "objects": {"x": np.array([[1], ["a"]], dtype=object), "y": np.zeros(2)},
        "nan": {"x": np.array([[1.0], [np.nan]]), "y": np.zeros(2)},
        "label": {"x": np.zeros((2, 1)), "y": np.array([0, 1.5])},
    }[case]
    np.savez(path, **arrays)


@pytest.mark.parametrize(("case", "fragment"), [
    ("missing y", "no array ['y']"), ("lengths", "'x' has 3 samples, 'y' has 2"),
    ("dims", "must be 2-D"), ("objects", "unreadable array"), ("nan", "index (1, 0)"),
    ("label", "array 'y' index 1"),
])
def test_bad_npz_errors_name_file_and_array(tmp_path: Path, case: str, fragment: str) -> None:
    path = tmp_path / "ward.npz"
    bad_npz(path, case)
    with pytest.raises(DataError) as caught:
        load_data(path)
    assert "ward.npz" in str(caught.value) and fragment in str(caught.value)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    write(tmp_path, "not a zip", "junk.npz")
    with pytest.raises(DataError, match=r"junk\.npz"):
        load_data(tmp_path / "junk.npz")
    with (tmp_path / "single.npz").open("wb") as out:
        np.save(out, np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        load_data(tmp_path / "single.npz")


def test_dispatcher_rejects_options_that_do_not_apply(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 1)), y=[0])
    csv_path = write(tmp_path, "x,label\n1,0\n")
    with pytest.raises(ConfigError):
        load_data(tmp_path / "d.npz", window=4)
    with pytest.raises(ConfigError):
        load_data(csv_path, stride=2)
    with pytest.raises(DataError, match=r"unknown data format '\.parquet'"):
        load_data(write(tmp_path, "x", "d.parquet"))


def test_inputs_are_read_without_labels_as_training_reads_them(tmp_path: Path) -> None:
    labelled = write(tmp_path, "age,label,bmi\n40,1,22.5\n55,0,31\n")
    x, names = load_inputs(labelled)
    np.testing.assert_array_equal(x, load_data(labelled).x)
    assert names == ("age", "bmi") and x.dtype == np.float32
    bare = write(tmp_path, "age,bmi\n40,22.5\n", "bare.csv")
    assert load_inputs(bare)[1] == ("age", "bmi")
    assert load_inputs(bare, label_column="outcome")[1] == ("age", "bmi")  # absent: fine
    assert load_inputs(labelled, features=["bmi"])[1] == ("bmi",)
    series = write(tmp_path, SERIES, "series.csv")
    windows, channels = load_inputs(series, window=2, group_column="session")
    expected = load_data(series, window=2, group_column="session")
    np.testing.assert_array_equal(windows, expected.x)
    assert channels == expected.feature_names == ("acc_x", "hr")
    np.savez(tmp_path / "x.npz", x=np.ones((3, 2)))
    assert load_inputs(tmp_path / "x.npz")[1] == ("x0", "x1")


def test_inputs_errors_name_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "y.npz", y=np.ones(3))
    with pytest.raises(DataError, match=r"y\.npz: no array \['x'\]"):
        load_inputs(tmp_path / "y.npz")
    with pytest.raises(DataError, match='line 3, column "bmi": not a number'):
        load_inputs(write(tmp_path, "age,bmi\n1,2\n3,x\n"))
    with pytest.raises(ConfigError, match="apply to CSV only"):
        load_inputs(tmp_path / "y.npz", window=3)


def test_norm_stats_per_feature_and_per_channel() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal([5.0, -2.0], [3.0, 0.5], size=(500, 2))
    stats = compute_norm_stats(table)
    scaled = normalise(table, stats)
    assert scaled.dtype == np.float32 and stats.count == 500
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-5)
    windows = np.stack([np.full((4, 10), 7.0), rng.normal(size=(4, 10))], axis=1)
    channel_stats = compute_norm_stats(windows)
    assert channel_stats.std[0] == pytest.approx(1e-6)  # floored: constant channel
    assert np.isfinite(normalise(windows, channel_stats)).all()


def test_norm_stats_json_round_trip_holds_no_rows() -> None:
    stats = compute_norm_stats(np.arange(20, dtype=np.float64).reshape(10, 2))
    text = stats.to_json()
    assert set(json.loads(text)) == {"format", "mean", "std", "count", "features"}
    assert NormStats.from_json(text) == stats


def test_norm_stats_keep_the_feature_names_and_read_files_without_them() -> None:
    stats = compute_norm_stats(np.ones((4, 2)), features=("hr", "steps"))
    assert NormStats.from_json(stats.to_json()).features == ("hr", "steps")
    old = '{"format": "fedge-norm-stats/1", "mean": [0, 1], "std": [1, 2], "count": 3}'
    assert NormStats.from_json(old) == NormStats((0.0, 1.0), (1.0, 2.0), 3)
    with pytest.raises(DataError, match="1 feature names for 2 features"):
        compute_norm_stats(np.ones((4, 2)), features=("hr",))


@pytest.mark.parametrize("text", [
    "{", "[]", '{"format": "other", "mean": [0], "std": [1], "count": 1}',
    '{"format": "fedge-norm-stats/1", "mean": [0, 1], "std": [1], "count": 1}',
    '{"format": "fedge-norm-stats/1", "mean": [0], "std": [0], "count": 1}',
    '{"format": "fedge-norm-stats/1", "mean": [NaN], "std": [1], "count": 1}',
    '{"format": "fedge-norm-stats/1", "mean": [0], "std": [1], "count": 1, "features": [3]}',
    '{"format": "fedge-norm-stats/1", "mean": [0], "std": [1], "count": 1, "features": 5}',
    '{"format": "fedge-norm-stats/1", "mean": [0], "std": [1], "count": 1, '
    '"features": ["a", "b"]}',
])
def test_norm_stats_from_bad_json_is_a_data_error(text: str) -> None:
    with pytest.raises(DataError, match=r"stats\.json"):
        NormStats.from_json(text, source="stats.json")


def test_normalise_rejects_a_width_mismatch() -> None:
    stats = compute_norm_stats(np.ones((3, 2)))
    with pytest.raises(DataError, match="2 features"):
        normalise(np.ones((3, 3)), stats)
