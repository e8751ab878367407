"""Tests of edge_client/encode.py: a site's CSV read onto the federation's schema."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_client.config import ClientConfig
from edge_client.data import load_table_csv
from edge_client.device import prepare_data
from edge_client.encode import load_schema_csv
from edge_client.errors import ConfigError, DataError
from edge_client.model import TrainableModel
from edge_client.schema import Feature, Schema, load_schema, schema_toml
from edge_client.training import LocalSplit

SCHEMA = Schema(
    features=(Feature("bmi", missing="mean", fill=25.0, indicator=True),
              Feature("sex", kind="categorical", categories=("F", "M"))),
    label="outcome", classes=("no", "yes"))


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bmi = "" if i % 7 == 3 else f"{rng.normal(26, 4):.2f}"
        sex = ["F", "M", "NA", "X"][i % 4 if i % 9 == 0 else i % 2]  # some missing, unseen
        rows.append({"id": f"p{i}", "bmi": bmi, "sex": sex, "notes": f"visit {i}",
                     "outcome": "yes" if (bmi and float(bmi) > 26) else "no"})
    return rows


def _write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    path.write_text(",".join(columns) + "\n" + "".join(
        ",".join(row[c] for c in columns) + "\n" for row in rows))
    return path


def test_shuffled_and_extra_columns_give_bit_identical_updates(tmp_path: Path,
                                                                logreg_file: bytes) -> None:
    rows = _rows(120, 0)
    schema_path = tmp_path / "schema.toml"
    schema_path.write_text(schema_toml(SCHEMA))
    a = _write(tmp_path / "a.csv", rows, ["id", "bmi", "sex", "notes", "outcome"])
    b = _write(tmp_path / "b.csv", rows, ["outcome", "notes", "sex", "id", "bmi"])
    weights = []
    for path in (a, b):
        data, stats = prepare_data(ClientConfig(data=path, schema=schema_path))
        assert data.feature_names == ("bmi", "bmi_missing", "sex=F", "sex=M")
        assert stats is not None and np.isfinite(data.x).all()
        split = LocalSplit.of(data.x, data.y, seed=0, holdout=0.2)
        model = TrainableModel(logreg_file)
        losses = model.fit(split.x_train, split.y_train, epochs=2,
                           rng=np.random.default_rng(0))
        assert np.isfinite(losses).all()
        weights.append(model.get_weights())
    for name in weights[0]:
        assert weights[0][name].tobytes() == weights[1][name].tobytes(), name


def test_missing_cells_are_imputed_and_categories_one_hot(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    path = tmp_path / "site.csv"
    path.write_text("sex,extra,bmi,outcome\nF,1,30,yes\nM,2,,no\nX,3,20.5,no\n?,4,NA,yes\n")
    with caplog.at_level(logging.WARNING):
        encoded = load_schema_csv(path, SCHEMA)
    np.testing.assert_array_equal(encoded.data.x, [[30, 0, 1, 0], [25, 1, 0, 1],
                                                   [20.5, 0, 0, 0], [25, 1, 0, 0]])
    np.testing.assert_array_equal(encoded.data.y, [1, 0, 0, 1])
    assert encoded.unseen == {"sex": 1} and encoded.missing == {"bmi": 2, "sex": 1}
    assert "sex" in caplog.text and "category the schema does not list" in caplog.text


def test_a_numeric_table_reads_bit_identically_to_the_plain_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{v!r},{w!r},{i % 2}\n" for i, (v, w)
                                            in enumerate(rng.normal(size=(300, 2)) * 1e3)))
    schema = Schema((Feature("a"), Feature("b")), "label", ("0", "1"))
    plain = load_table_csv(path)
    encoded = load_schema_csv(path, schema).data
    assert encoded.x.tobytes() == plain.x.tobytes()
    assert encoded.y.tobytes() == plain.y.tobytes()


@pytest.mark.parametrize(("text", "fragments"), [
    ("bmi,outcome\n1,yes\n", ['no column "sex"', "schema needs"]),
    ("bmi,sex,outcome\n1,F,maybe\n", ["line 2", 'column "outcome"', "'maybe'"]),
    ("bmi,sex,outcome\nx,F,yes\n", ["line 2", 'column "bmi"', "not a number"]),
    ("bmi,sex,outcome\ninf,F,yes\n", ["line 2", 'column "bmi"', "finite"]),
    ("bmi,sex,outcome\n1,F,\n", ["line 2", "missing label"]),
])
def test_bad_cells_and_absent_columns_are_named(tmp_path: Path, text: str,
                                                fragments: list[str]) -> None:
    path = tmp_path / "ward.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        load_schema_csv(path, SCHEMA)
    for fragment in ["ward.csv", *fragments]:
        assert fragment in str(caught.value)


def test_missing_error_policy_refuses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("bmi,sex,outcome\n1,F,yes\n,M,no\n")
    strict = SCHEMA.with_features([Feature("bmi", missing="error"), SCHEMA.features[1]])
    with pytest.raises(DataError, match='line 3, column "bmi": missing value'):
        load_schema_csv(path, strict)


def test_schema_toml_round_trips_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(schema_toml(SCHEMA))
    assert load_schema(path) == SCHEMA
    path.write_text(schema_toml(SCHEMA).replace('kind = "categorical"', 'kind = "words"'))
    with pytest.raises(ConfigError, match=r'schema\.toml: feature "sex": kind'):
        load_schema(path)


def test_schema_and_column_flags_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(schema_toml(SCHEMA))
    with pytest.raises(ConfigError, match="--label-column"):
        prepare_data(ClientConfig(data=tmp_path / "x.csv", schema=path, label_column="y"))


def test_one_hot_and_indicator_inputs_are_not_standardised(tmp_path: Path) -> None:
    # one site has only F: standardising sex=F by its own std (floored to 1e-6) would turn
    # an M row at evaluation into -1e6; one-hot and indicator inputs stay 0/1
    path = tmp_path / "f-only.csv"
    path.write_text("bmi,sex,outcome\n20,F,no\n,F,yes\n30,F,no\n")
    schema_path = tmp_path / "schema.toml"
    schema_path.write_text(schema_toml(SCHEMA))
    data, stats = prepare_data(ClientConfig(data=path, schema=schema_path))
    assert stats is not None
    assert stats.mean[1:] == (0.0, 0.0, 0.0) and stats.std[1:] == (1.0, 1.0, 1.0)
    assert stats.mean[0] == pytest.approx((20 + 25 + 30) / 3)  # local: no shared statistics
    np.testing.assert_array_equal(data.x[:, 1:], [[0, 1, 0], [1, 1, 0], [0, 1, 0]])
    shared = SCHEMA.with_features([Feature("bmi", fill=25.0, indicator=True, mean=24.0,
                                           std=4.0), SCHEMA.features[1]])
    schema_path.write_text(schema_toml(shared))
    data, stats = prepare_data(ClientConfig(data=path, schema=schema_path))
    assert stats is not None and (stats.mean[0], stats.std[0]) == (24.0, 4.0)
    np.testing.assert_allclose(data.x[:, 0], [-1.0, 0.25, 1.5])
