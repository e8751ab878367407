"""Transfer learning: a Keras model's frozen layers stay fixed on the device and never travel.

A Keras model with a frozen base (Dense + BatchNormalization, ``trainable=False``) and a
trainable head is exported; a real client trains one round against an in-memory broker.
The update's wire bytes carry only the head's tensors (and none of the frozen weights'
bytes), the aggregator's spec of the file lists only them, and its validation refuses an
update that names a frozen tensor.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
from client_kit import linear_data
from keras import layers
from membus import MemoryBroker

from aggregator.modelfile import load_model_file
from aggregator.reasons import Reason
from aggregator.validation import ReceivedUpdate, UpdateLimits, check_content
from edge_client.client import ClientSettings, EdgeClient
from edge_client.model import TrainableModel
from edge_client.protocol import Topics
from edge_client.state import StateDir
from edge_client.training import LocalSplit
from models.export import export_model
from models.keras_import import convert

HEAD = ["dense1_bias", "dense1_kernel"]


def _transfer_model() -> Any:
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((4,)), layers.Dense(6, activation="relu", name="base"),
        layers.BatchNormalization(name="base_bn"), layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    model.get_layer("base").trainable = False
    model.get_layer("base_bn").trainable = False
    return model


def test_frozen_weights_never_reach_the_wire_and_the_aggregator_checks_only_the_rest(
    tmp_path: Path, make_aggregator: Any
) -> None:
    imported = convert(_transfer_model(), loss="binary_crossentropy")
    blob = export_model(imported.spec, 8, imported.weights, imported.constants)
    path = tmp_path / "transfer.tflite"
    path.write_bytes(blob)
    spec = load_model_file(path).spec
    assert sorted(t.name for t in spec) == HEAD

    bus = MemoryBroker()
    agg = make_aggregator(transport=bus.connect("agg"), topics=Topics("ward"), model=blob,
                          weights=TrainableModel(blob).get_weights())
    agg.transport.subscribe(agg.topics.update_filter())
    agg.publish_all()
    x, y = linear_data(60, seed=3)
    client = EdgeClient(ClientSettings(client_id="dev1", topics=Topics("ward"), once=True),
                        bus.connect("dev1"), StateDir(tmp_path / "state"),
                        LocalSplit.of(x, y, seed=0), TrainableModel,
                        rng=np.random.default_rng(7))
    thread = threading.Thread(target=client.run, args=(threading.Event(),),
                              kwargs={"poll": 0.05})
    thread.start()
    (update,) = agg.collect(1, timeout=30)
    thread.join(timeout=30)
    delta = agg.delta(update)
    assert sorted(delta) == HEAD
    assert any(np.abs(v).max() > 0 for v in delta.values())
    sent = b"".join(p for who, _, p, _ in bus.published if who == "dev1")
    for name, value in imported.constants.items():
        assert value.astype("<f4").tobytes() not in sent, f"{name} travelled"

    def received(tensors: dict[str, Any]) -> ReceivedUpdate:
        return ReceivedUpdate("ward", 1, "dev1", 0, agg.sha, "n", 48, tensors, {}, 0)

    limits = UpdateLimits(max_norm=1e6, max_num_samples=10_000)
    assert check_content(received(delta), spec, limits) is None
    smuggled = {**delta, "dense0_kernel": np.zeros((4, 6), np.float32)}
    rejection = check_content(received(smuggled), spec, limits)
    assert rejection is not None and rejection.reason == Reason.NAME
    assert "unexpected ['dense0_kernel']" in rejection.message
