"""The service shell on the in-memory bus: presence handling and deadlines with a fake clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from service_kit import WEIGHTS, Federation

from aggregator.store import AggregatorStore
from edge_client.protocol import Presence, Weights
from edge_client.quantize import dequantize_update


def test_bad_presence_and_stray_topics_are_counted_not_fatal(tmp_path: Path) -> None:
    fed = Federation(tmp_path, min_clients=1, rounds=1)
    service = fed.service()
    device = fed.devices["a"]
    device.publish(fed.topics.presence("a"), b"\x00not cbor", retain=True)
    device.publish(fed.topics.presence("b"), Presence(
        "a", True, 1, "mem", "1", "test", fed.now).encode(), retain=True)
    fed.pump(service)
    assert service.metrics.value("fedge_invalid_messages_total", {"kind": "presence"}) == 2
    reply = fed.send(service, "a")
    assert reply is not None and reply.accepted


def test_deadline_passes_with_the_fake_clock(tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=1, min_clients=2, min_available=3)
    service = fed.service()
    fed.send(service, "a")
    fed.send(service, "b")
    fed.pump(service)
    assert not service.finished  # c was selected too and has until the deadline
    fed.now += 10.0
    fed.pump(service)
    assert service.finished and service.model.version == 1
    (line,) = AggregatorStore(tmp_path).history()
    assert line["participants"] == ["a", "b"] and line["duration_s"] == 10.0
    rng = [np.random.default_rng([1, i]) for i in range(2)]
    deltas = [{k: rng[i].normal(0, 0.1, v.shape) for k, v in WEIGHTS.items()} for i in range(2)]
    published = dequantize_update(Weights.decode(service.model.payload).tensors)
    for name, base in WEIGHTS.items():
        mean = sum(d[name].astype(np.float32).astype(np.float64) for d in deltas) / 2
        np.testing.assert_allclose(published[name], base + mean, rtol=1e-6, atol=1e-7)


def test_the_history_line_states_the_scaling_of_the_models_schema(tmp_path: Path) -> None:
    import dataclasses

    from service_kit import MODEL

    from edge_client.schema import Feature, Schema

    def line_of(schema: Schema | None, folder: Path) -> dict[str, object]:
        model = dataclasses.replace(MODEL, metadata=dataclasses.replace(MODEL.metadata,
                                                                        schema=schema))
        fed = Federation(folder, model=model, min_clients=1, rounds=1)
        service = fed.service()
        fed.send(service, "a")
        fed.pump(service)
        (line,) = AggregatorStore(folder).history()
        return line

    own = Schema(tuple(Feature(f"v{i}") for i in range(4)), "y", ("a", "b", "c"))
    shared = own.with_features([dataclasses.replace(f, mean=1.0, std=2.0)
                                for f in own.features])
    assert line_of(own, tmp_path / "own")["scaling"] == "per-site"
    assert line_of(shared, tmp_path / "shared")["scaling"] == "shared"
    assert "scaling" not in line_of(None, tmp_path / "none")  # no schema: the devices decide
