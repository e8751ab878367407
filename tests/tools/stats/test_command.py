"""``fedge stats`` end to end: devices publish their table statistics over the provisioned
TLS broker, and the command adds them up (and writes the shared-scaling schema)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_security import provisioned

from edge_client.config import ClientConfig
from edge_client.device import prepare_data, publish_stats, stats_report
from edge_client.schema import Feature, Schema, load_schema, schema_toml
from tools import cli

pytestmark = pytest.mark.broker

SCHEMA = Schema((Feature("age", low=20.0, high=90.0, indicator=True),
                 Feature("sex", kind="categorical", categories=("F", "M"))),
                "outcome", ("no", "yes"))


def _site(path: Path, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    ages = [float(v) for v in rng.normal(50 + 10 * seed, 9, n)]
    path.write_text("sex,age,outcome\n" + "".join(
        f"{'FM'[i % 2]},{a!r},{'yes' if a > 55 else 'no'}\n" for i, a in enumerate(ages)))
    return ages


def test_fedge_stats_adds_the_devices_reports_over_provisioned_tls(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pooled: list[float] = []
    with provisioned("dev-1,dev-2,dev-3") as fed:
        for i, (who, n) in enumerate([("dev-1", 40), ("dev-2", 25), ("dev-3", 9)]):
            ages = _site(tmp_path / f"{who}.csv", n, i)
            report = stats_report(tmp_path / f"{who}.csv", SCHEMA, who, 10, 1_750_000_000.0)
            if n >= 10:
                pooled += ages
            else:
                assert report.features == () and set(report.suppressed) == {
                    "age", "sex", "outcome"}
            transport = fed.transport(who)
            try:
                publish_stats(transport, fed.topics, report)
            finally:
                transport.stop()
        tls = fed.tls("aggregator")
        base = ["stats", "--broker", fed.broker.url, "--federation", fed.topics.federation,
                "--ca", str(tls["ca"]), "--cert", str(tls["cert"]), "--key", str(tls["key"])]
        assert cli.main([*base, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        schema_path = tmp_path / "schema.toml"
        schema_path.write_text(schema_toml(SCHEMA))
        shared_path = tmp_path / "shared.toml"
        assert cli.main([*base, "--schema", str(schema_path), "--out", str(shared_path)]) == 0
        table = capsys.readouterr().out
    assert doc["sites"] == ["dev-1", "dev-2", "dev-3"] and doc["rows"] == 74
    age = next(c for c in doc["columns"] if c["name"] == "age")
    assert age["sites"] == 2 and age["count"] == len(pooled)  # dev-3 is below --min-count
    assert age["mean"] == pytest.approx(np.mean(pooled), rel=1e-9)
    assert age["std"] == pytest.approx(np.std(pooled), rel=1e-9)
    assert all(b is None or b == 0 or b >= 10 for b in age["bins"])
    assert None in age["bins"]  # some bins hold 1-9 people: suppressed
    assert "age" in table and "<10" in table and "3 site(s), 74 rows" in table
    shared = load_schema(shared_path)
    assert shared.shared_scaling
    assert shared.features[0].mean == pytest.approx(np.mean(pooled), rel=1e-9)
    assert shared.features[0].fill == shared.features[0].mean
    per_class = [sum(a <= 55 for a in pooled), sum(a > 55 for a in pooled)]
    assert shared.class_counts == (tuple(per_class) if min(per_class) >= 10 else ())
    # a device given the shared schema standardises with the federation's statistics
    data, stats = prepare_data(ClientConfig(data=tmp_path / "dev-1.csv", schema=shared_path))
    assert stats is not None and stats.mean[0] == shared.features[0].mean
    assert stats.mean[1:] == (0.0, 0.0, 0.0) and stats.std[1:] == (1.0, 1.0, 1.0)
    assert data.feature_names == ("age", "age_missing", "sex=F", "sex=M")


def test_the_aggregators_statistics_phase_reads_the_reports_over_provisioned_tls(
        tmp_path: Path) -> None:
    """The phase's own connection is allowed to read stats/+ on the provisioned broker (its
    ACL) and makes the model with the devices' pooled statistics."""
    import dataclasses
    import threading

    from aggregator.__main__ import _with_statistics
    from aggregator.config import AggregatorConfig
    from aggregator.modelfile import model_file_of
    from models.export import export_trainable

    schema = dataclasses.replace(SCHEMA, scaling="shared")
    pooled: list[float] = []
    with provisioned("dev-1,dev-2") as fed:
        for i, who in enumerate(("dev-1", "dev-2")):
            pooled += _site(tmp_path / f"{who}.csv", 30 + 10 * i, i)
            transport = fed.transport(who)
            try:
                publish_stats(transport, fed.topics, stats_report(
                    tmp_path / f"{who}.csv", schema, who, 10, 1_750_000_000.0))
            finally:
                transport.stop()
        tls = fed.tls("aggregator")
        config = AggregatorConfig(model=Path("m.tflite"), state_dir=tmp_path / "state",
                                  broker=fed.broker.url, federation=fed.topics.federation,
                                  min_clients=2, **tls)
        model = model_file_of(export_trainable("logreg", (4,), 2, 8,
                                               schema=schema.to_dict()), "model")
        stop = threading.Event()
        timer = threading.Timer(60, stop.set)  # never reading them ends the wait, and fails
        timer.start()
        try:
            made = _with_statistics(config, model, stop)
        finally:
            timer.cancel()
    shared = made.metadata.schema
    assert shared is not None and shared.shared_scaling
    assert shared.features[0].mean == pytest.approx(np.mean(pooled), rel=1e-9)
    assert (tmp_path / "state" / "statistics" / "model.tflite").read_bytes() == made.data
