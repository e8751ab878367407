"""The statistics phase's pure parts on the in-memory bus: which reports count, when it
stops, and that a restart reuses the model it made instead of collecting again."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
from membus import MemoryBroker

from aggregator.__main__ import _with_statistics
from aggregator.config import AggregatorConfig
from aggregator.modelfile import model_file_of
from aggregator.statistics import collect_reports, needs_statistics, shared_model
from edge_client.device import publish_stats, stats_report
from edge_client.model import read_metadata
from edge_client.protocol import Topics
from edge_client.schema import Feature, Schema

SCHEMA = Schema((Feature("age", low=20.0, high=90.0),
                 Feature("sex", kind="categorical", categories=("F", "M"))),
                "outcome", ("no", "yes"), scaling="shared")


def _site(path: Path, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    ages = [float(a) for a in rng.normal(50 + 8 * seed, 9, n)]
    path.write_text("age,sex,outcome\n" + "".join(
        f"{a!r},{'FM'[i % 2]},{'yes' if a > 52 else 'no'}\n" for i, a in enumerate(ages)))
    return ages


def test_the_phase_waits_for_enough_sites_of_the_schemas_layout(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), Topics("cardio")
    pooled: list[float] = []
    other = SCHEMA.with_features([SCHEMA.features[0], Feature(  # another layout: left out
        "sex", kind="categorical", categories=("F", "M", "X"))])
    for i, (who, schema) in enumerate([("s1", SCHEMA), ("s2", other), ("s3", SCHEMA)]):
        ages = _site(tmp_path / f"{who}.csv", 40 + 10 * i, i)
        report = stats_report(tmp_path / f"{who}.csv", schema, who, 10, 0.0)
        publish_stats(broker.connect(who), topics, report)
        pooled += ages if schema is SCHEMA else []
    reports = collect_reports(broker.connect("agg"), topics, SCHEMA, 2, threading.Event())
    assert sorted(reports) == ["s1", "s3"]
    assert needs_statistics(SCHEMA) and not needs_statistics(None)
    assert not needs_statistics(dataclasses.replace(SCHEMA, scaling="per-site"))
    stop = threading.Event()
    stop.set()  # fewer sites than wanted: only a stop ends the wait
    assert collect_reports(broker.connect("agg2"), topics, SCHEMA, 5, stop) == {}
    from models.export import export_trainable

    data = export_trainable("logreg", (3,), 2, 8, schema=SCHEMA.to_dict())
    shared = read_metadata(shared_model(data, SCHEMA, reports)).schema
    assert shared is not None and shared.shared_scaling and not needs_statistics(shared)
    assert shared.features[0].mean == pytest.approx(np.mean(pooled), rel=1e-9)


def test_a_restart_trains_the_model_the_phase_made(tmp_path: Path) -> None:
    from models.export import export_trainable

    data = export_trainable("logreg", (3,), 2, 8, schema=SCHEMA.to_dict())
    model = model_file_of(data, "model")
    shared = dataclasses.replace(SCHEMA, features=tuple(
        dataclasses.replace(f, mean=1.0, std=2.0) if f.kind == "numeric" else f
        for f in SCHEMA.features))
    from edge_client.model import with_schema

    kept = tmp_path / "state" / "statistics" / "model.tflite"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(with_schema(data, shared))
    # an unreachable broker: a second collection would fail to connect
    config = AggregatorConfig(model=Path("m.tflite"), state_dir=tmp_path / "state",
                              broker="mqtt://127.0.0.1:9", min_clients=2)
    again = _with_statistics(config, model, threading.Event())
    assert again.data == kept.read_bytes() and again.metadata.schema == shared
