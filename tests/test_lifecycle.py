"""A federation's whole life with real processes on a real Mosquitto: re-runs on the same
broker and device ids, a finish every device sees, extending and warm-starting a run.

Each test reproduces a failure seen by users (issue 13): re-runs that stalled, a phantom
round left by the previous run, clients that never exited, presence queued from an
earlier run, a finished run that could not be extended.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from client_kit import linear_data

from edge_client.model import TrainableModel
from edge_client.protocol import Manifest, Presence, Topics, Weights
from edge_client.quantize import dequantize_update
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Child, Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
CLIENTS = ("site-a", "site-b", "site-c")


class Federation:
    """Aggregator and client processes of one test, on one broker and topic namespace."""

    def __init__(self, fleet: Fleet, broker: MosquittoBroker, namespace: str,
                 tmp: Path) -> None:
        self.fleet, self.broker, self.ns, self.tmp = fleet, broker, namespace, tmp
        self.common = ["--broker", broker.url, "--federation", namespace]
        for i, _ in enumerate(CLIENTS):
            x, y = linear_data(80 + 10 * i, seed=i)
            np.savez(tmp / f"data-{i}.npz", x=x, y=y)

    def aggregator(self, name: str, model: Path, state: Path, *extra: str,
                   rounds: int = 2) -> Child:
        return self.fleet.start(name, "aggregator", [
            *self.common, "--model", str(model), "--state-dir", str(state),
            "--rounds", str(rounds), "--min-clients", "3", "--round-timeout", "20",
            "--epochs", "1", "--codec", "int8", *extra])

    def client(self, name: str, i: int, state: Path, *extra: str) -> Child:
        return self.fleet.start(name, "edge_client", [
            *self.common, "--client-id", CLIENTS[i], "--data",
            str(self.tmp / f"data-{i}.npz"), "--state-dir", str(state), "--seed", str(i),
            *extra])

    def watcher(self) -> MqttTransport:
        """A plain MQTT client that reads the retained state."""
        t = MqttTransport(BrokerConfig(url=self.broker.url,
                                       client_id=f"watch-{time.monotonic_ns()}")).start(wait=10)
        t.subscribe(Topics(self.ns).manifest())
        return t


@pytest.fixture
def federation(broker: MosquittoBroker, namespace: str, tmp_path: Path
               ) -> Iterator[Federation]:
    with Fleet(tmp_path / "logs") as fleet:
        yield Federation(fleet, broker, namespace, tmp_path)


def wait_exit(child: Child, timeout: float) -> int:
    try:
        return child.proc.wait(timeout=timeout)
    except Exception:
        pytest.fail(f"{child.name} did not exit within {timeout} s:\n{child.tail(40)}")


def history(state: Path) -> list[dict[str, object]]:
    path = state / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)  # polling files another process writes; not a synchronisation sleep
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def checkpoint(state: Path, version: int) -> dict[str, np.ndarray]:
    blob = (state / "checkpoints" / f"v{version:08d}.bin").read_bytes()
    return dequantize_update(Weights.decode(blob).tensors)


def manifest_of(watch: MqttTransport, timeout: float, accept: Callable[[Manifest], bool]
                ) -> Manifest:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = watch.get(timeout=0.5)
        if msg is not None and msg.payload:
            m = Manifest.decode(msg.payload)
            if accept(m):
                return m
    pytest.fail("no matching manifest was published")


def running_manifest(fed: Federation, old: Manifest | None = None) -> Manifest:
    """Waits until the broker holds a manifest of a running run (other than ``old``'s):
    devices started before it would see the previous run's finished manifest and stop."""
    watch = fed.watcher()
    try:
        return manifest_of(watch, 60, lambda m: not m.finished and (
            old is None or m.run_id != old.run_id))
    finally:
        watch.stop()


def last_manifest(fed: Federation) -> Manifest:
    watch = fed.watcher()
    try:
        return manifest_of(watch, 10, lambda m: True)
    finally:
        watch.stop()


def first_run(fed: Federation, model: Path, state: Path, *client_extra: str,
              clients_state: str = "c1") -> list[Child]:
    """Run one federation of two rounds to its end; returns the (still running?) clients."""
    agg = fed.aggregator("agg-1", model, state)
    clients = [fed.client(f"{clients_state}-{i}", i, fed.tmp / f"{clients_state}-{i}",
                          *client_extra) for i in range(len(CLIENTS))]
    assert wait_exit(agg, 120) == 0, agg.tail(40)
    assert [r["outcome"] for r in history(state)] == ["aggregated", "aggregated"]
    return clients


def other_model(logreg_file: bytes, tmp: Path) -> Path:
    from models.export import export_trainable

    path = tmp / "model-2.tflite"
    path.write_bytes(export_trainable("logreg", (4,), 2, 8, optimizer="sgd", seed=2))
    assert path.read_bytes() != logreg_file
    return path


@pytest.mark.parametrize("model_changes", [False, True], ids=["same-model", "new-model"])
def test_a_re_run_with_the_same_device_ids_and_their_old_sessions_does_not_stall(
        federation: Federation, logreg_file: bytes, model_changes: bool) -> None:
    fed = federation
    model = fed.tmp / "model.tflite"
    model.write_bytes(logreg_file)
    clients = first_run(fed, model, fed.tmp / "run-1")
    for c in clients:  # the devices are killed; their broker sessions live on
        if c.proc.poll() is None:
            os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
    watch = fed.watcher()
    second = other_model(logreg_file, fed.tmp) if model_changes else model
    old = manifest_of(watch, 10, lambda m: True)
    agg = fed.aggregator("agg-2", second, fed.tmp / "run-2")
    manifest_of(watch, 60, lambda m: m != old)  # the new run is on the broker
    watch.stop()
    for i in range(len(CLIENTS)):
        fed.client(f"c2-{i}", i, fed.tmp / f"c2-{i}")
    assert wait_exit(agg, 120) == 0, agg.tail(40)
    assert [r["outcome"] for r in history(fed.tmp / "run-2")] == ["aggregated", "aggregated"]


def test_a_new_run_right_after_the_last_is_not_fooled_by_the_old_round(
        federation: Federation, logreg_file: bytes) -> None:
    fed = federation
    model = fed.tmp / "model.tflite"
    model.write_bytes(logreg_file)
    for c in first_run(fed, model, fed.tmp / "run-1", "--max-rounds", "99"):
        wait_exit(c, 30)
    old = last_manifest(fed)
    assert old.finished == "rounds"
    # inside the old round's deadline, the same devices with the same state dirs come back
    agg = fed.aggregator("agg-2", model, fed.tmp / "run-2")
    running_manifest(fed, old)
    for i in range(len(CLIENTS)):
        fed.client(f"c1-{i}-again", i, fed.tmp / f"c1-{i}")
    assert wait_exit(agg, 120) == 0, agg.tail(40)
    rows = history(fed.tmp / "run-2")
    assert [r["outcome"] for r in rows] == ["aggregated", "aggregated"]
    assert all(sorted(r["participants"]) == list(CLIENTS) for r in rows)  # type: ignore


def test_every_client_sees_the_finish_exits_0_and_holds_the_final_model(
        federation: Federation, logreg_file: bytes) -> None:
    fed = federation
    model = fed.tmp / "model.tflite"
    model.write_bytes(logreg_file)
    clients = first_run(fed, model, fed.tmp / "run-1", "--max-rounds", "99")
    for c in clients:
        assert wait_exit(c, 10) == 0, c.tail(30)
        final = Weights.decode((fed.tmp / c.name / "final" / "weights.bin").read_bytes())
        assert final.version == 2
        got = dequantize_update(final.tensors)
        for name, arr in checkpoint(fed.tmp / "run-1", 2).items():
            np.testing.assert_array_equal(got[name], arr)
    final_model = TrainableModel(fed.tmp / "run-1" / "final" / "model.tflite")
    for name, arr in checkpoint(fed.tmp / "run-1", 2).items():  # deployable as it is
        np.testing.assert_array_equal(final_model.get_weights()[name], arr)


def test_presence_queued_from_an_earlier_run_is_not_taken_for_a_device_online(
        federation: Federation, logreg_file: bytes) -> None:
    fed = federation
    model = fed.tmp / "model.tflite"
    model.write_bytes(logreg_file)
    for c in first_run(fed, model, fed.tmp / "run-1", "--max-rounds", "2"):
        wait_exit(c, 60)
    # a device that came and went while no aggregator ran: its retained presence is cleared,
    # but its "online" waits in the aggregator's old session
    ghost = MqttTransport(BrokerConfig(url=fed.broker.url, client_id="ghost")).start(wait=10)
    topic = Topics(fed.ns).presence("ghost")
    ghost.publish(topic, Presence("ghost", True, 500, "none", "0", "0", time.time()).encode(),
                  retain=True)
    ghost.publish(topic, b"", retain=True)
    ghost.stop()
    state = fed.tmp / "run-2"
    old = last_manifest(fed)
    agg = fed.aggregator("agg-2", model, state, "--min-clients", "1", "--min-available", "3",
                         rounds=1)
    running_manifest(fed, old)
    for i in range(len(CLIENTS)):
        fed.client(f"c2-{i}", i, fed.tmp / f"c2-{i}", "--max-rounds", "1")
    assert wait_exit(agg, 120) == 0, agg.tail(40)
    (row,) = history(state)
    assert "ghost" not in row["selected"]  # type: ignore[operator]


def test_a_finished_run_extends_with_more_rounds_and_warm_starts_a_new_one(
        federation: Federation, logreg_file: bytes) -> None:
    fed = federation
    model = fed.tmp / "model.tflite"
    model.write_bytes(logreg_file)
    state = fed.tmp / "run-1"
    for c in first_run(fed, model, state):
        assert wait_exit(c, 30) == 0, c.tail(20)  # every device saw the finish
    again = fed.aggregator("agg-same", model, state, rounds=2)
    assert wait_exit(again, 60) == 0
    assert "already finished 2 rounds" in again.tail(20)
    more = fed.aggregator("agg-more", model, state, rounds=4)
    running_manifest(fed)
    for i in range(len(CLIENTS)):
        fed.client(f"c2-{i}", i, fed.tmp / f"c2-{i}")
    assert wait_exit(more, 120) == 0, more.tail(40)
    rows = history(state)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert len({r["run"] for r in rows}) == 1  # the same run, extended
    final = state / "final" / "weights.npz"
    warm = fed.tmp / "run-2"
    old = last_manifest(fed)
    agg = fed.aggregator("agg-warm", model, warm, "--initial-weights", str(final), rounds=1)
    running_manifest(fed, old)
    for i in range(len(CLIENTS)):
        fed.client(f"c3-{i}", i, fed.tmp / f"c3-{i}")
    assert wait_exit(agg, 120) == 0, agg.tail(40)
    with np.load(final) as z:
        for name, arr in checkpoint(warm, 0).items():
            np.testing.assert_array_equal(arr, z[name])
    assert history(warm)[0]["run"] != rows[0]["run"]
