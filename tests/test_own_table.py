"""A hospital's own table, end to end: schema, statistics, training, evaluation.

Two sites with their own CSVs (other column orders, an extra column, missing cells, a
categorical column and an identifier) run the real client with the federation's schema
against a real aggregator process on Mosquitto; ``fedge stats`` reads their statistics and
``fedge evaluate`` scores the final model, which carries the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_client.model import read_metadata
from edge_client.schema import load_schema
from tools import cli
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
COLUMNS = {"site-a": ["record", "age", "sex", "chol", "outcome", "ward"],
           "site-b": ["outcome", "chol", "ward", "sex", "record", "age"]}


def _table(path: Path, columns: list[str], n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = [",".join(columns)]
    for i in range(n):
        age, chol = rng.normal(55, 10), rng.normal(200, 30)
        cells = {"record": str(10_000 * seed + i), "age": f"{age:.1f}",
                 "sex": "FM"[int(rng.integers(2))], "chol": "" if i % 7 == 0 else f"{chol:.0f}",
                 "outcome": "yes" if age + (chol - 200) / 3 > 55 else "no",
                 "ward": f"w{int(rng.integers(3))}"}
        lines.append(",".join(cells[c] for c in columns))
    path.write_text("\n".join(lines) + "\n")


def _export(tmp_path: Path, *, shared: bool = False) -> tuple[Path, Path]:
    """Both sites' tables, the schema inferred from site-a's (``shared``: with shared
    scaling) and a logreg exported with it: (schema path, model path)."""
    for i, (site, columns) in enumerate(COLUMNS.items()):
        _table(tmp_path / f"{site}.csv", columns, 150 + 50 * i, i)
    schema_path, model = tmp_path / "schema.toml", tmp_path / "model.tflite"
    assert cli.main(["schema", "infer", str(tmp_path / "site-a.csv"), "--label-column",
                     "outcome", "--out", str(schema_path)]) == 0
    if shared:
        text = schema_path.read_text()
        schema_path.write_text(text.replace('scaling = "per-site"', 'scaling = "shared"'))
        assert load_schema(schema_path).scaling == "shared"
    assert cli.main(["export", "--model", "logreg", "--schema", str(schema_path),
                     "--classes", "2", "--batch-size", "16", "--out", str(model)]) == 0
    return schema_path, model


def _federate(fleet: Fleet, common: list[str], tmp_path: Path, log_line: str) -> Path:
    """Runs the aggregator and both sites for 2 rounds; every site's log says ``log_line``.
    Returns the aggregator's state directory."""
    state = tmp_path / "agg"
    agg = fleet.start("aggregator", "aggregator", [
        *common, "--model", str(tmp_path / "model.tflite"), "--state-dir", str(state),
        "--rounds", "2", "--min-clients", "2", "--min-available", "2", "--round-timeout", "20",
        "--epochs", "2", "--lr", "0.1"])
    for site in COLUMNS:
        fleet.start(site, "edge_client", [
            *common, "--client-id", site, "--data", str(tmp_path / f"{site}.csv"),
            "--schema", str(tmp_path / "schema.toml"), "--state-dir", str(tmp_path / site),
            "--holdout", "0", "--max-rounds", "2", "--seed", "1"])
    assert agg.proc.wait(timeout=120) == 0, agg.tail(40)
    for child in fleet.children[1:]:
        assert child.proc.wait(timeout=30) == 0, child.tail(30)
        assert log_line in child.log_path.read_text()
    return state


def test_two_sites_train_on_their_own_tables_through_the_schema(
        broker: MosquittoBroker, namespace: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    schema_path, _ = _export(tmp_path)
    schema = load_schema(schema_path)
    assert "record" in schema.left_out  # the identifier is not an input
    common = ["--broker", broker.url, "--federation", namespace]
    with Fleet(tmp_path / "logs") as fleet:
        state = _federate(fleet, common, tmp_path, "--holdout 0 held out")
        capsys.readouterr()
        assert cli.main(["stats", *common, "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["aggregated", "aggregated"]
    assert rows[-1]["samples"] == 150 + 200  # --holdout 0: every row trained on
    assert stats["sites"] == ["site-a", "site-b"] and stats["rows"] == 350
    chol = next(c for c in stats["columns"] if c["name"] == "chol")
    assert chol["missing"] == len(range(0, 150, 7)) + len(range(0, 200, 7))
    final = state / "final" / "model.tflite"
    assert read_metadata(final.read_bytes()).schema == schema
    assert cli.main(["evaluate", "--model", str(final), "--client-state",
                     str(tmp_path / "site-b"), "--data", str(tmp_path / "site-b.csv")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_the_aggregator_publishes_the_federations_statistics_before_round_one(
        broker: MosquittoBroker, namespace: str, tmp_path: Path) -> None:
    """schema scaling = "shared": no fedge stats --out, no re-export; every site ends up
    standardising with the pooled mean/std of all sites' rows."""
    _export(tmp_path, shared=True)
    common = ["--broker", broker.url, "--federation", namespace]
    with Fleet(tmp_path / "logs") as fleet:
        state = _federate(fleet, common, tmp_path, "re-read onto its schema (shared scaling)")
    ages = np.concatenate([
        np.genfromtxt(tmp_path / f"{site}.csv", delimiter=",", names=True)["age"]
        for site in COLUMNS])
    shared = read_metadata((state / "statistics" / "model.tflite").read_bytes()).schema
    assert shared is not None and shared.shared_scaling and shared.scaling == "shared"
    age = next(f for f in shared.features if f.name == "age")
    assert age.mean == pytest.approx(float(ages.mean()), rel=1e-9)
    assert age.std == pytest.approx(float(ages.std()), rel=1e-9)
    rows = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [(r["outcome"], r["scaling"]) for r in rows] == [("aggregated", "shared")] * 2
    for site in COLUMNS:
        used = json.loads((tmp_path / site / "normalisation.json").read_text())
        assert used["mean"][used["features"].index("age")] == age.mean  # the shared one
    final = read_metadata((state / "final" / "model.tflite").read_bytes()).schema
    assert final == shared
