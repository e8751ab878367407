"""Model-file faults: truncated and hostile ``.tflite`` files (issue 14, finding 2).

Real processes: ``python -m edge_client`` on a Mosquitto with persistence, fed by a scripted
aggregator (unsigned manifests, as a device without ``--verify-key`` accepts them), and
``python -m aggregator --model FILE``. Before the fix a cut flatbuffer segfaulted both
(exit 139, on every restart of the device), so these tests watch exit codes and signals.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from client_kit import ScriptedAggregator
from model_kit import claiming_batch, crashing, truncated
from reliability.kit import Scenario, start_client, wait_for

from aggregator.modelfile import ModelFile
from edge_client.model_file import archive_start
from edge_client.protocol import Topics
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Child, Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
HUGE_BATCH = 67_108_864


def wait_log(child: Child, text: str, timeout: float = 60) -> str:
    """The first log line of ``child`` holding ``text``; fails at once if the child died."""
    def probe() -> str | None:
        for line in child.log_path.read_text(errors="replace").splitlines():
            if text in line:
                return line
        code = child.proc.poll()
        assert code is None, (f"{child.name} exited with {code} "
                              f"({_signal_name(code)}) before logging {text!r}:\n"
                              f"{child.tail(30)}")
        return None
    return wait_for(probe, timeout, f"{child.name} to log {text!r}", 0.05)


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return "no signal"


def refused(state: Path) -> list[str]:
    """The SHA-256s a device's state dir remembers as refused."""
    path = state / "models.refused"
    if not path.exists():
        return []
    return [entry["sha256"] for entry in json.loads(path.read_text())]


@pytest.mark.fault(
    name="a truncated or hostile model file reaching a device",
    injected="a real device whose state dir holds a model file with its flatbuffer cut in "
             "half (metadata intact); a scripted aggregator then serves, under unsigned "
             "manifests, the same file cut at 70 %, a well-formed file that segfaults "
             "tflite_runtime (one tensor shape changed, found by fuzzing), and one whose "
             "metadata claim batch size 67,108,864; the device is stopped and started "
             "again; then the good model is published",
    expected="the device never dies of a signal: each file is refused with its reason (the "
             "crash in a probe child process, named by its signal), the stored one moved "
             "aside (model.tflite.refused), the refused SHA-256s kept in the state dir and "
             "never loaded again after the restart; the device then trains on the good "
             "model (update accepted, exit 0)")
def test_a_hostile_model_file_never_takes_a_device_down(
        durable_broker: MosquittoBroker, fleet: Fleet, namespace: str, topics: Topics,
        tmp_path: Path, logreg_file: bytes, model_file: ModelFile, scenario: Scenario) -> None:
    state = tmp_path / "state-ward-1"
    state.mkdir()
    (state / "model.tflite").write_bytes(truncated(logreg_file, 0.5))
    t = MqttTransport(BrokerConfig(url=durable_broker.url, client_id=f"{namespace}-agg",
                                   manual_ack=True)).start(wait=10)
    try:
        t.subscribe(topics.update_filter())
        weights = model_file.initial_weights

        def publish(model: bytes, round_id: int) -> ScriptedAggregator:
            agg = ScriptedAggregator(t, topics, model, weights)
            agg.publish_all(round_id=round_id)
            return agg

        cut = publish(truncated(logreg_file, 0.7), 1)
        device = start_client(fleet, tmp_path, durable_broker.url, namespace, "ward-1",
                              seed=1, rounds=1)
        stored = hashlib.sha256(truncated(logreg_file, 0.5)).hexdigest()
        line = wait_log(device, f"refusing model {stored[:12]}")
        wait_log(device, "moved the stored model aside")
        assert (state / "model.tflite.refused").exists()
        assert not (state / "model.tflite").exists()
        scenario.observe("stored cut file refused and moved to model.tflite.refused ("
                         + line.split("refusing ", 1)[-1][:120] + ")")
        line = wait_log(device, f"refusing model {cut.sha[:12]}")
        scenario.observe(f"served cut file refused ({line.split('refusing ', 1)[-1][:140]})")
        crash = publish(crashing(logreg_file), 2)
        line = wait_log(device, f"refusing model {crash.sha[:12]}")
        assert "crashed the TFLite runtime (SIGSEGV, signal 11)" in line, line
        scenario.observe("segfaulting file: " + line.split("refusing ", 1)[-1][:140])
        huge = publish(claiming_batch(logreg_file, HUGE_BATCH), 3)
        line = wait_log(device, f"refusing model {huge.sha[:12]}")
        assert "batch size 67,108,864" in line and "65,536" in line, line
        scenario.observe("batch-size file refused by the metadata bounds: "
                         + line.split("refusing ", 1)[-1][:160])
        assert device.proc.poll() is None, device.tail(30)
        assert not (state / "model.tflite").exists()
        assert {cut.sha, crash.sha, huge.sha} <= set(refused(state))
        fleet.stop(device)
        assert device.proc.returncode == 0, device.tail(30)
        scenario.observe(f"first device process alive throughout, exit "
                         f"{device.proc.returncode} on SIGTERM; {len(refused(state))} "
                         "SHA-256s in models.refused")

        again = start_client(fleet, tmp_path, durable_broker.url, namespace, "ward-1",
                             seed=1, rounds=1)
        wait_log(again, f"model {huge.sha[:12]}…, which was refused earlier")
        good = publish(logreg_file, 4)
        (update,) = good.collect(1, timeout=60)
        assert again.proc.wait(30) == 0, again.tail(30)
        restarted = again.log_path.read_text()
        assert "refusing model" not in restarted, restarted  # nothing refused was re-checked
        probed = [line for line in restarted.splitlines() if "probing model" in line]
        assert len(probed) == 1 and good.sha[:12] in probed[0], probed
        assert (state / "model.tflite").read_bytes() == logreg_file
        scenario.observe("after the restart: the refused model named by the retained "
                         "manifest was neither downloaded nor probed again")
        scenario.observe(f"the good model then trained: round {update.round_id} update "
                         "accepted, device exit 0")
    finally:
        t.stop()


def _aggregator(model: Path, broker: MosquittoBroker, tmp_path: Path
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--model", str(model), "--broker", broker.url,
         "--federation", "hostile", "--state-dir", str(tmp_path / "agg-state")],
        capture_output=True, text=True, timeout=120)


@pytest.mark.fault(
    name="fedge-aggregator --model on a truncated or hostile file",
    injected="`python -m aggregator --model FILE` with FILE: the logreg file with its "
             "flatbuffer cut in half (metadata intact); a well-formed file that segfaults "
             "tflite_runtime; a real 22 KB export with batch size 67,108,864; the same "
             "metadata on the batch-8 flatbuffer; a flatbuffer whose identifier is not TFL3",
    expected="exit 2 with one line 'fedge-aggregator: error: --model FILE: …' saying what "
             "is wrong; no signal, no traceback, nothing written to its state dir")
def test_the_aggregator_refuses_a_hostile_model_file(
        durable_broker: MosquittoBroker, tmp_path: Path, logreg_file: bytes,
        scenario: Scenario) -> None:
    from models.export import export_trainable

    flat = bytearray(logreg_file)
    flat[4:8] = b"XXXX"
    assert archive_start(bytes(flat)) == archive_start(logreg_file)
    files = {
        "cut": (truncated(logreg_file, 0.5), "outside the flatbuffer"),
        "segfaulting": (crashing(logreg_file), "crashed the TFLite runtime (SIGSEGV"),
        "exported with batch 67,108,864": (
            export_trainable("logreg", (4,), 2, HUGE_BATCH, optimizer="sgd", seed=1),
            "batch size 67,108,864"),
        "claiming batch 67,108,864": (claiming_batch(logreg_file, HUGE_BATCH),
                                      "batch size 67,108,864"),
        "not TFL3": (bytes(flat), "TFL3"),
    }
    for what, (data, reason) in files.items():
        path = tmp_path / f"{what.replace(' ', '-')}.tflite"
        path.write_bytes(data)
        done = _aggregator(path, durable_broker, tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (what, done.returncode, _signal_name(done.returncode),
                                      done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (what, done.stderr)
        assert lines[-1].startswith(f"fedge-aggregator: error: --model {path}: "), lines
        assert reason in lines[-1], (what, lines[-1])
        scenario.observe(f"{what} ({len(data):,} B): exit 2, "
                         f"{lines[-1].split(': ', 3)[-1][:150]!r}")
    assert not list((tmp_path / "agg-state").glob("**/*.bin"))
