"""Tests of ``fedge schema infer/show`` and ``fedge export --schema``: a hospital CSV to a
trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_client.config import ClientConfig
from edge_client.device import check_model_schema, keep_norm_stats, prepare_data
from edge_client.errors import ConfigError, ModelError
from edge_client.model import TrainableModel, read_metadata
from edge_client.schema import Feature, load_schema
from edge_client.state import StateDir
from tools import cli


def _hospital_csv(path: Path, n: int = 80, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["patient_id,age,sex,notes,chol,outcome"]
    for i in range(n):
        chol = "" if i % 6 == 0 else f"{rng.normal(200, 30):.1f}"
        age = int(rng.integers(30, 80))
        notes = f"seen by dr {rng.integers(1000)} on day {i}"
        lines.append(f"{1000 + i},{age},{'FM'[i % 2]},{notes},{chol},"
                     f"{'yes' if age > 55 else 'no'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_infer_proposes_kinds_and_names_what_it_leaves_out(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    data = _hospital_csv(tmp_path / "ward.csv")
    out = tmp_path / "schema.toml"
    assert cli.main(["schema", "infer", str(data), "--label-column", "outcome",
                     "--out", str(out)]) == 0
    schema = load_schema(out)
    assert [f.name for f in schema.features] == ["age", "sex", "chol"]
    assert schema.features[1] == Feature("sex", kind="categorical", categories=("F", "M"))
    chol = schema.features[2]
    assert chol.indicator and chol.missing == "mean" and 150 < chol.fill < 250
    assert schema.classes == ("no", "yes")
    assert set(schema.left_out) == {"patient_id", "notes"}
    assert "identifier" in schema.left_out["patient_id"]
    shown = capsys.readouterr().out
    assert "left out: notes" in shown and "left out: patient_id" in shown
    assert cli.main(["schema", "infer", str(data), "--label-column", "outcome",
                     "--out", str(out)]) == 2  # exists: refused without --force
    assert "--force" in capsys.readouterr().err


def test_export_takes_the_width_from_the_schema_and_the_devices_train(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _hospital_csv(tmp_path / "ward.csv")
    schema_path = tmp_path / "schema.toml"
    cli.main(["schema", "infer", str(data), "--label-column", "outcome", "--out",
              str(schema_path)])
    model_path = tmp_path / "mlp.tflite"
    assert cli.main(["export", "--model", "logreg", "--schema", str(schema_path),
                     "--classes", "2", "--batch-size", "8", "--out", str(model_path)]) == 0
    assert "schema: 3 columns -> 5 model inputs" in capsys.readouterr().out
    blob = model_path.read_bytes()
    meta = read_metadata(blob)
    assert meta.schema == load_schema(schema_path) and meta.input_shape == (5,)
    extracted = tmp_path / "from-model.toml"
    assert cli.main(["schema", "show", str(model_path), "--out", str(extracted)]) == 0
    assert "chol" in capsys.readouterr().out
    assert load_schema(extracted) == meta.schema
    # another site: columns in another order, an extra column, its own missing cells
    other = tmp_path / "other.csv"
    rows = [line.split(",") for line in _hospital_csv(tmp_path / "o.csv", 60, 1)
            .read_text().splitlines()]
    other.write_text("".join(",".join([r[5], r[4], "x", r[2], r[1]]) + "\n" for r in rows))
    train, stats = prepare_data(ClientConfig(data=other, schema=schema_path))
    from_model, _ = prepare_data(ClientConfig(data=other, schema=model_path))  # the same
    assert from_model.x.tobytes() == train.x.tobytes()
    model = TrainableModel(blob)
    check_model_schema(meta.schema, load_schema(schema_path))
    losses = model.fit(train.x, train.y, epochs=3, rng=np.random.default_rng(0))
    assert np.isfinite(losses).all() and stats is not None
    # evaluate and predict read the file onto the model's schema, scaled as the device did
    state = StateDir(tmp_path / "site-state")
    keep_norm_stats(state, stats)
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(model_path), "--client-state",
                     str(state.root), "--data", str(other)]) == 0
    assert "60" in capsys.readouterr().out
    out = tmp_path / "predictions.csv"
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("\n".join(",".join(r[1:5]) for r in rows) + "\n")  # no outcome
    assert cli.main(["predict", "--model", str(model_path), "--client-state",
                     str(state.root), "--data", str(unlabelled), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 61


def test_export_refuses_a_schema_with_other_classes_or_a_shape(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    schema_path = tmp_path / "schema.toml"
    cli.main(["schema", "infer", str(_hospital_csv(tmp_path / "w.csv")), "--label-column",
              "outcome", "--out", str(schema_path)])
    base = ["export", "--model", "logreg", "--schema", str(schema_path), "--batch-size", "8",
            "--out", str(tmp_path / "m.tflite")]
    assert cli.main([*base, "--classes", "3"]) == 2
    assert "--classes 3: the schema's label 'outcome' has 2 classes" in capsys.readouterr().err
    assert cli.main([*base, "--classes", "2", "--input-shape", "5"]) == 2
    assert "leave out --input-shape" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


def test_a_model_whose_schema_differs_from_the_devices_is_refused(tmp_path: Path) -> None:
    schema_path = tmp_path / "schema.toml"
    cli.main(["schema", "infer", str(_hospital_csv(tmp_path / "w.csv")), "--label-column",
              "outcome", "--out", str(schema_path)])
    schema = load_schema(schema_path)
    narrower = schema.with_features(schema.features[:2])
    with pytest.raises(ModelError, match="give every device the federation's schema"):
        check_model_schema(schema, narrower)


def test_infer_rules_for_free_text_empty_columns_and_regression(tmp_path: Path) -> None:
    from tools.schema.infer import infer_schema

    path = tmp_path / "t.csv"
    rows = [f"{i % 7},{['good day', 'bad night', 'ok'][i % 3]} {i % 10},,{i * 0.5},"
            f"{'abcdefghijkl'[i % 12]}" for i in range(60)]
    path.write_text("visits,comment,blank,target,grade\n" + "\n".join(rows) + "\n")
    schema = infer_schema(path, "target", regression=True, max_categories=10)
    assert [f.name for f in schema.features] == ["visits"]  # repeated integers: numeric
    assert schema.classes == ()
    assert schema.left_out["comment"] == "free text: 30 distinct values"
    assert schema.left_out["blank"] == "empty: no values"
    assert schema.left_out["grade"].startswith("free text: 12")  # over --max-categories
    with pytest.raises(ConfigError, match="more than 1000 values"):
        infer_schema(_many_labels(tmp_path / "m.csv"), "y")


def _many_labels(path: Path) -> Path:
    path.write_text("x,y\n" + "".join(f"{i % 3},{i}.5\n" for i in range(1001)))
    return path


def test_show_states_the_scaling_asked_for_and_the_class_counts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from edge_client.schema import Schema, schema_toml

    base = Schema((Feature("age", low=0.0, high=100.0),), "outcome", ("no", "yes"))
    expected = [(base, "scaling per site"),
                (dataclasses.replace(base, scaling="shared", class_counts=(90, 10)),
                 "scaling shared (the aggregator collects the statistics before round 1)"),
                (base.with_features([dataclasses.replace(base.features[0], mean=5.0,
                                                         std=1.0)]),
                 "scaling shared (federated statistics)")]
    for i, (schema, line) in enumerate(expected):
        path = tmp_path / f"s{i}.toml"
        path.write_text(schema_toml(schema))
        assert cli.main(["schema", "show", str(path)]) == 0
        out = capsys.readouterr().out
        assert line in out
        assert ("class counts: no 90, yes 10" in out) == bool(schema.class_counts)
