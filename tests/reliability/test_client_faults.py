"""Client faults: a device killed in the middle of its upload, 30 % of the devices silent.

``python -m aggregator`` and real ``python -m edge_client`` devices on a Mosquitto with
persistence. The killed device is ``partial_upload.py`` (a real process that publishes
part of a valid update and SIGKILLs itself: a real client's tiny update leaves no window
to kill it in).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability.kit import (
    AggregatorFactory,
    Scenario,
    check_federation,
    kill_process,
    start_client,
    told_accepted,
    wait_for,
)

from aggregator.modelfile import ModelFile
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Child, Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
TRAINING = {"epochs": 1, "lr": 0.1, "codec": "int8"}


@pytest.mark.fault(
    name="client kill -9 mid-upload",
    injected="a selected device publishes 2 of the chunks of its round-1 update and is "
             "killed with SIGKILL (Last Will: offline); it reboots before round 2 as a "
             "real client; --transfer-timeout 2, round timeout 3 s, 3 other real clients",
    expected="round 1 closes at its deadline with the other 3; the partial transfer "
             "expires; round 2 waits for 4 online devices and counts the rebooted one")
def test_client_kill_9_mid_upload(aggregator: AggregatorFactory,
                                  durable_broker: MosquittoBroker, fleet: Fleet,
                                  namespace: str, tmp_path: Path, model_path: Path,
                                  model_file: ModelFile, scenario: Scenario) -> None:
    timeout = 3.0
    agg = aggregator(rounds=2, min_clients=3, min_available=4, round_timeout=timeout,
                     transfer_timeout=2, **TRAINING)
    marker = tmp_path / "partial.json"
    with open(tmp_path / "partial.log", "wb") as out:
        dying = subprocess.Popen(
            [sys.executable, str(HERE / "partial_upload.py"), durable_broker.url, namespace,
             "wearable", str(model_path), "2", str(marker)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        clients = [start_client(fleet, tmp_path, durable_broker.url, namespace, f"clinic-{i}",
                                seed=i, rounds=2) for i in range(3)]
        assert dying.wait(60) == -signal.SIGKILL, (tmp_path / "partial.log").read_text()
    finally:
        kill_process(dying.pid)
    sent = json.loads(marker.read_text())
    scenario.observe(f"killed after {sent['sent']} of {sent['count']} chunks")
    agg.wait_state(lambda s: s["phase"] == "waiting" and s["round_id"] == 1, 30,
                   "round 1 to close and round 2 to wait for a 4th device")
    (first,) = agg.history()
    assert "wearable" in first["selected"] and "wearable" not in first["participants"]
    assert timeout <= first["duration_s"] < timeout + 1.5, first
    scenario.observe(f"round 1 closed at its deadline ({first['duration_s']:.2f} s) with "
                     f"{len(first['participants'])} of {len(first['selected'])}")
    rebooted = start_client(fleet, tmp_path, durable_broker.url, namespace, "wearable",
                            seed=9, rounds=1)
    assert agg.wait_exit(60) == 0, agg.child.tail(40)
    for child in [*clients, rebooted]:
        assert child.proc.wait(30) == 0, child.tail(30)
    expired = f"transfer {sent['transfer_id']} from wearable expired with 2 of {sent['count']}"
    assert expired in agg.log(), agg.log()[-3000:]
    scenario.observe("partial transfer expired; the rebooted device counted in round 2")
    assert "wearable" in agg.history()[1]["participants"]
    scenario.observe(check_federation(agg.state_dir, model_file, 2,
                                      accepted=told_accepted([*clients, rebooted])))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="30 % client dropout with deadline + quorum",
    injected="10 real clients, 3 of them frozen (SIGSTOP: connection open, no Last Will) "
             "after announcing themselves; --min-clients 7, round timeout 2.5 s, 2 rounds",
    expected="each round selects all 10, closes at its deadline with the 7 live updates "
             "(quorum met, no extension) and aggregates")
def test_thirty_percent_dropout(aggregator: AggregatorFactory, durable_broker: MosquittoBroker,
                                fleet: Fleet, namespace: str, tmp_path: Path,
                                model_file: ModelFile, scenario: Scenario) -> None:
    timeout = 2.5
    agg = aggregator(rounds=2, min_clients=7, min_available=10, round_timeout=timeout,
                     **TRAINING)
    silent = [start_client(fleet, tmp_path, durable_broker.url, namespace, f"silent-{i}",
                           seed=10 + i, rounds=2) for i in range(3)]
    try:
        names = {c.name for c in silent}
        assert len(names) == 3
        # round.json does not record presence changes (they are not worth an fsync): ask
        # the aggregator's metrics who is online
        agg.wait_metric("fedge_clients_online", 3, timeout=30)
        for child in silent:
            child.proc.send_signal(signal.SIGSTOP)
        live = [start_client(fleet, tmp_path, durable_broker.url, namespace, f"clinic-{i}",
                             seed=i, rounds=2) for i in range(7)]
        assert agg.wait_exit(60) == 0, agg.child.tail(40)
        for child in live:
            assert child.proc.wait(30) == 0, child.tail(30)
    finally:
        for child in silent:
            kill_process(child.proc.pid)
    history = agg.history()
    for h in history:
        assert len(h["selected"]) == 10 and h["participants"] == sorted(c.name for c in live)
        assert timeout <= h["duration_s"] < timeout + 1.5, h
    assert "deadline extended" not in agg.log()
    scenario.observe("rounds closed at " + ", ".join(f"{h['duration_s']:.2f} s"
                                                     for h in history)
                     + " with 7 of 10, no extension")
    scenario.observe(check_federation(agg.state_dir, model_file, 2,
                                      accepted=told_accepted(live)))
    scenario.observe("aggregator exit 0")


@pytest.mark.slow
@pytest.mark.fault(
    name="two clients on one state directory",
    injected="a second real `python -m edge_client` with the same flags (same --state-dir) "
             "while the first waits for a round; then SIGKILL to the first and the same "
             "command again, its lock file left behind; then an aggregator (1 round)",
    expected="the second exits 2 at once: '--state-dir DIR is in use by another "
             "fedge-client (pid N)' (two would send and delete the same outbox entries); "
             "the restart after kill -9 takes the lock, trains the round and exits 0")
def test_a_second_client_on_a_state_directory_is_refused(
        aggregator: AggregatorFactory, durable_broker: MosquittoBroker, fleet: Fleet,
        namespace: str, tmp_path: Path, model_file: ModelFile, scenario: Scenario) -> None:
    first = start_client(fleet, tmp_path, durable_broker.url, namespace, "ward-1", seed=1,
                         rounds=1)
    args = [str(a) for a in first.proc.args][3:]  # python -m edge_client ARGS
    lock = tmp_path / "state-ward-1" / "lock"

    def running(child: Child) -> bool | None:  # it logs its data once it holds the state dir
        assert child.proc.poll() is None, child.tail(20)
        return True if "local samples" in child.log_path.read_text(errors="replace") else None
    wait_for(lambda: running(first), 30, "the first client to start")
    second = fleet.start("ward-1-twice", "edge_client", args)
    try:
        code = second.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the second client runs:\n{second.tail(20)}") from None
    refusal = (f"--state-dir {tmp_path / 'state-ward-1'} is in use by another fedge-client "
               f"(pid {first.proc.pid})")
    assert code == 2 and refusal in second.tail(5), second.tail(20)
    scenario.observe(f"the second exited {code}: {refusal}")
    kill_process(first.proc.pid)
    first.proc.wait(10)
    assert lock.read_text() == f"{first.proc.pid}\n"  # left behind by the killed client
    rebooted = fleet.start("ward-1-rebooted", "edge_client", args)
    wait_for(lambda: running(rebooted), 30, "the restarted client to start")
    assert lock.read_text() == f"{rebooted.proc.pid}\n"
    agg = aggregator(rounds=1, min_clients=1, round_timeout=20, **TRAINING)
    assert rebooted.proc.wait(60) == 0, rebooted.tail(30)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    assert "round 1: update accepted" in rebooted.log_path.read_text()
    scenario.observe("killed, restarted over the stale lock file: " + check_federation(
        agg.state_dir, model_file, 1, accepted=[(1, "ward-1")]))
    scenario.observe("client and aggregator exit 0")
