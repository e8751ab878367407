"""The edge client's participation loop: in memory (pure logic) and against real Mosquitto."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from client_kit import ScriptedAggregator, linear_data
from import_block import blocked_env
from membus import MemoryBroker
from model_kit import truncated

from edge_client.client import ClientSettings, EdgeClient
from edge_client.errors import ModelError
from edge_client.model import TrainableModel
from edge_client.probe import probe_model
from edge_client.protocol import Chunk, Topics
from edge_client.signing import SigningKey, TrustedKeys
from edge_client.state import StateDir
from edge_client.training import LocalSplit, train_round
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]


def _expected_delta(model_file: bytes, agg: ScriptedAggregator, split: LocalSplit,
                    seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """The delta a client must send: the same training, redone here."""
    model = TrainableModel(model_file)
    model.set_weights(agg.weights)
    from edge_client.protocol import Hyperparameters, Round

    r = Round(federation=agg.topics.federation, round_id=1, weights_version=0,
              model_sha256=agg.sha, deadline=4e9,
              hyperparameters=Hyperparameters(epochs=2, batch_size=8, learning_rate=0.1),
              codec="fp32", fraction=1.0)
    out = train_round(model, split, r, client_id="x", residual={},
                      rng=np.random.default_rng(seed))
    return ScriptedAggregator.delta(out.update)


def _memory_client(bus: MemoryBroker, tmp: Path, model_file: bytes, x: Any, y: Any,
                   ) -> tuple[EdgeClient, LocalSplit]:
    split = LocalSplit.of(x, y, seed=0)
    settings = ClientSettings(client_id="dev1", topics=Topics("ward"), once=True)
    client = EdgeClient(settings, bus.connect("dev1"), StateDir(tmp / "state"), split,
                        lambda blob: TrainableModel(blob), rng=np.random.default_rng(7))
    return client, split


def _run_in_thread(client: EdgeClient) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(client.run(threading.Event(), poll=0.05)))
    t.start()
    return t, codes


def test_one_round_in_memory_sends_the_expected_delta_and_no_sample(
    tmp_path: Path, logreg_file: bytes, make_aggregator: Any
) -> None:
    bus = MemoryBroker()
    init = TrainableModel(logreg_file).get_weights()
    agg = make_aggregator(transport=bus.connect("agg"), topics=Topics("ward"),
                          model=logreg_file, weights=init)
    agg.transport.subscribe(agg.topics.update_filter())
    agg.publish_all()
    x, y = linear_data(60, seed=3)
    client, split = _memory_client(bus, tmp_path, logreg_file, x, y)
    thread, codes = _run_in_thread(client)
    (update,) = agg.collect(1, timeout=30)
    thread.join(timeout=30)
    assert codes == [0]
    assert update.num_samples == len(split.x_train) == 48
    assert update.base_version == 0 and update.round_id == 1
    expected = _expected_delta(logreg_file, agg, split, seed=7)
    got = agg.delta(update)
    assert set(got) == set(expected)
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name])
    assert any(np.abs(v).max() > 0 for v in got.values())
    # privacy: no published payload carries the bytes of any local sample row
    sent = [p for who, _, p, _ in bus.published if who == "dev1"]
    assert sent
    for row in x:
        for encoding in (row.astype("<f4").tobytes(), row.astype("<f8").tobytes()):
            assert not any(encoding in p for p in sent)


def test_model_that_does_not_fit_the_data_is_a_clear_error(
    tmp_path: Path, logreg_file: bytes, make_aggregator: Any
) -> None:
    bus = MemoryBroker()
    agg = make_aggregator(transport=bus.connect("agg"), topics=Topics("ward"),
                          model=logreg_file, weights=TrainableModel(logreg_file).get_weights())
    agg.publish_all()
    x, y = linear_data(40, seed=1)
    client, _ = _memory_client(bus, tmp_path, logreg_file, x[:, :3], y)  # 3 features, not 4
    with pytest.raises(ModelError, match=r"does not fit the local data.*shape \(N, 4\)"):
        client.run(threading.Event(), poll=0.05)


def test_refused_models_are_set_aside_remembered_and_never_fetched_again(
    tmp_path: Path, logreg_file: bytes, make_aggregator: Any
) -> None:
    """A stored model failing the checks is moved aside; a refused one a manifest names is
    not downloaded after a restart; the client keeps waiting and trains on a good one."""
    bad = truncated(logreg_file)
    state = StateDir(tmp_path / "state")
    state.write("model.tflite", bad)
    bus = MemoryBroker()
    weights = TrainableModel(logreg_file).get_weights()
    agg = make_aggregator(transport=bus.connect("agg"), topics=Topics("ward"), model=bad,
                          weights=weights)
    agg.publish_all()
    x, y = linear_data(40, seed=1)

    def client() -> EdgeClient:
        return EdgeClient(ClientSettings(client_id="dev1", topics=Topics("ward"), once=True),
                          bus.connect("dev1"), StateDir(tmp_path / "state"),
                          LocalSplit.of(x, y, seed=0), TrainableModel,
                          rng=np.random.default_rng(0), probe=probe_model)

    first = client()
    assert first.model is None and state.read("model.tflite") is None
    assert state.read("model.tflite.refused") == bad
    assert list(state.refused_models()) == [agg.sha]
    second = client()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: second.run(stop, poll=0.05))
    thread.start()
    try:
        good = make_aggregator(transport=agg.transport, topics=Topics("ward"),
                               model=logreg_file, weights=weights)
        good.transport.subscribe(good.topics.update_filter())
        filters: list[str] = second.t.filters  # type: ignore[attr-defined]
        while not [f for f in filters if "/weights/" in f]:  # subscribed after the model's
            thread.join(0.01)  # (the retained manifest naming the refused model was read)
        assert not [f for f in filters if "/model/" in f], filters  # not downloaded again
        good.publish_all(round_id=2)
        (update,) = good.collect(1, timeout=30)
        thread.join(30)
    finally:
        stop.set()
    assert update.model_sha256 == good.sha and state.read("model.tflite") == logreg_file


def _client_cmd(broker: MosquittoBroker, ns: str, data: Path, state: Path,
                *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge_client", "--broker", broker.url, "--federation", ns,
            "--client-id", "dev1", "--data", str(data), "--state-dir", str(state),
            "--once", "--seed", "0", "--no-normalise", *extra]


def _aggregator_on(broker: MosquittoBroker, ns: str, model: bytes, make_aggregator: Any
                   ) -> tuple[MqttTransport, ScriptedAggregator]:
    """A scripted aggregator that has published everything (retained) and listens for updates."""
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{ns}-agg",
                                   manual_ack=True)).start(wait=10)
    agg = make_aggregator(transport=t, topics=Topics(ns), model=model,
                          weights=TrainableModel(model).get_weights())
    t.subscribe(agg.topics.update_filter())
    agg.publish_all()
    return t, agg


def _local_file(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = linear_data(50, seed=5)
    np.savez(path, x=x, y=y)
    return x, y


def _junk_chunks(topics: Topics, count: int, *, sha256: str | None = None,
                 transfer_id: str = "junk") -> list[tuple[str, bytes]]:
    """Incomplete transfers on the weights topics (2 chunks declared, 1 sent each)."""
    return [(topics.weights_chunk(0, i), Chunk(
        transfer_id=f"{transfer_id}-{i}" if transfer_id == "junk" else transfer_id, index=0,
        count=2, total_size=64, sha256=sha256 or hashlib.sha256(b"%d" % i).hexdigest(),
        data=b"x" * 32).encode()) for i in range(count)]


@pytest.mark.broker
@pytest.mark.parametrize("junk", ["unnamed hashes", "the manifest's hash"])
def test_junk_chunks_cannot_keep_a_verifying_client_from_its_weights(
    broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes,
    make_aggregator: Any, junk: str,
) -> None:
    """Issue 14 finding 5: ten junk chunks on the weights topics filled a verifying client's
    4 reassembly slots ("sender aggregator already has 4 transfers in progress") and it never
    got the weights. Junk under the manifest's own weights hash, but another transfer id or
    a first chunk that lies about the size, cannot block them either."""
    key = SigningKey.generate()
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-agg",
                                   manual_ack=True)).start(wait=10)
    agg = make_aggregator(transport=t, topics=Topics(namespace), model=logreg_file,
                          weights=TrainableModel(logreg_file).get_weights(), signing_key=key)
    t.subscribe(agg.topics.update_filter())
    agg.publish_model()
    agg.publish_manifest_and_round()
    x, y = linear_data(40, seed=3)
    settings = ClientSettings(client_id="dev1", topics=agg.topics, once=True,
                              verify=TrustedKeys.of(key.private.public_key()).verify)
    client = EdgeClient(settings, MqttTransport(BrokerConfig(
        url=broker.url, client_id=f"{namespace}-dev1")).start(wait=10),
        StateDir(tmp_path / "dev"), LocalSplit.of(x, y, seed=0), TrainableModel,
        rng=np.random.default_rng(0))
    thread, codes = _run_in_thread(client)
    try:
        end = time.monotonic() + 30
        while client.model is None or agg.topics.weights_filter(0) not in client._subscribed:
            assert time.monotonic() < end, "the client did not load the model"
            time.sleep(0.05)
        digest = hashlib.sha256(agg.weights_payload).hexdigest()
        chunks = (_junk_chunks(agg.topics, 10) if junk == "unnamed hashes" else
                  _junk_chunks(agg.topics, 5, sha256=digest)
                  + _junk_chunks(agg.topics, 1, sha256=digest, transfer_id="weights-0"))
        for topic, payload in chunks:
            t.publish(topic, payload)
        time.sleep(0.5)  # the junk is in before the real chunks
        agg.publish_weights()
        updates = agg.collect(1, timeout=30)
        thread.join(30)
    finally:
        client.t.stop()  # type: ignore[attr-defined]
        t.stop()
    assert len(updates) == 1, "the junk kept the client from the weights"
    assert codes == [0]


@pytest.mark.broker
def test_a_busy_reply_keeps_the_update_and_the_client_sends_it_again_in_the_round(
    broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes,
    make_aggregator: Any,
) -> None:
    """Issue 14 finding 7: a refusal because the aggregator's intake was full is temporary
    ('busy'); the client used to take it as final, drop its update and exit 1."""
    t, agg = _aggregator_on(broker, namespace, logreg_file, make_aggregator)
    agg.refusals = ["busy: too many transfers in progress (4096); temporary, re-send"] * 2
    _local_file(tmp_path / "local.npz")
    proc = subprocess.Popen(
        _client_cmd(broker, namespace, tmp_path / "local.npz", tmp_path / "st"),
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        updates = agg.collect(1, timeout=40)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        t.stop()
    assert len(updates) == 1 and agg.completions == 3, "the update was not sent again"
    first, second = agg.refused_at
    assert second - first < 15, "re-sent only after resend_after, not backed off from 1 s"
    assert proc.stderr is not None and "aggregator busy" in proc.stderr.read()


@pytest.mark.broker
@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_late_joining_client_without_tensorflow_takes_part_over_mqtt(
    broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes,
    make_aggregator: Any, version: str,
) -> None:
    """The client starts after everything was published (retained) and has no TensorFlow."""
    t, agg = _aggregator_on(broker, namespace, logreg_file, make_aggregator)
    x, y = _local_file(tmp_path / "local.npz")
    proc = subprocess.Popen(
        _client_cmd(broker, namespace, tmp_path / "local.npz", tmp_path / "st",
                    "--mqtt-version", version),
        env=blocked_env(tmp_path), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        (update,) = agg.collect(1, timeout=60)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        t.stop()
    # exit 0 with `import tensorflow` blocked: the client never needed it
    expected = _expected_delta(logreg_file, agg, LocalSplit.of(x, y, seed=0), seed=0)
    for name, value in agg.delta(update).items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)
    assert (tmp_path / "st" / "client_id").exists() is False  # an explicit id is not stored
    assert (tmp_path / "st" / "model.tflite").read_bytes() == logreg_file


@pytest.mark.broker
def test_broker_restart_while_uploading_delivers_the_update_exactly_once(
    durable_broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes,
    make_aggregator: Any,
) -> None:
    t, agg = _aggregator_on(durable_broker, namespace, logreg_file, make_aggregator)
    _local_file(tmp_path / "local.npz")
    # tiny chunks: the update takes several messages, so the restart lands mid-upload
    proc = subprocess.Popen(
        _client_cmd(durable_broker, namespace, tmp_path / "local.npz", tmp_path / "st",
                    "--max-payload", "260"),
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    restarted: list[bool] = []

    def restart_once() -> None:
        if not restarted:
            restarted.append(True)
            durable_broker.restart()

    try:
        updates = agg.collect(1, timeout=90, on_chunk=restart_once)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        t.stop()
    assert restarted and len(updates) == 1
    assert agg.chunks_seen > 1, "the update was not chunked; the test proves nothing"
    assert agg.completions == 1, f"update reassembled {agg.completions} times"
    log = proc.stderr.read() if proc.stderr else ""
    assert code == 0, log
    assert "disconnected from" in log, "the client never saw the broker go away"


def test_model_weights_residual_and_id_survive_a_restart(
    tmp_path: Path, logreg_file: bytes, make_aggregator: Any
) -> None:
    """After a restart the client has its model, global weights and residual without a download."""
    bus = MemoryBroker()
    agg = make_aggregator(transport=bus.connect("agg"), topics=Topics("ward"),
                          model=logreg_file, weights=TrainableModel(logreg_file).get_weights(),
                          codec="int8")
    agg.transport.subscribe(agg.topics.update_filter())
    agg.publish_all()
    x, y = linear_data(60, seed=3)
    client, _ = _memory_client(bus, tmp_path, logreg_file, x, y)
    thread, codes = _run_in_thread(client)
    agg.collect(1, timeout=30)
    thread.join(timeout=30)
    assert codes == [0]
    state = StateDir(tmp_path / "state")
    residual = state.read("residual.bin")
    assert residual is not None  # int8 error feedback kept for the next round
    generated = state.client_id(None)
    assert state.client_id(None) == generated  # an id made once is kept

    again = EdgeClient(ClientSettings(client_id="dev1", topics=Topics("ward")),
                       MemoryBroker().connect("dev1"), state, LocalSplit.of(x, y, seed=0),
                       lambda blob: TrainableModel(blob), rng=np.random.default_rng(0))
    assert again.model is not None and again.model_sha == agg.sha  # no broker needed
    assert again.version == 0
    assert again.state.read("residual.bin") == residual
