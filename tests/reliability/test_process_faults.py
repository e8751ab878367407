"""Infrastructure faults: the broker restarts, the aggregator is killed with SIGKILL.

Real processes throughout: ``python -m aggregator`` and three ``python -m edge_client``
devices on a Mosquitto with persistence. After the fault the federation must finish
every round, count each update a client was told was accepted exactly once, and publish
the weights FedAvg gives for the stored updates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability.kit import (
    AggregatorFactory,
    AggregatorProcess,
    Scenario,
    ScriptedDevice,
    broker_pid,
    check_federation,
    start_client,
    told_accepted,
    wait_for,
)
from update_kit import make_update

from aggregator.modelfile import ModelFile
from tools.runtime.broker import MosquittoBroker, free_port
from tools.runtime.fleet import Child, Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
TRAINING = {"epochs": 1, "lr": 0.1, "codec": "int8"}


def real_clients(fleet: Fleet, tmp_path: Path, broker: MosquittoBroker, namespace: str,
                 rounds: int, n: int = 3) -> list[Child]:
    return [start_client(fleet, tmp_path, broker.url, namespace, f"clinic-{i}", seed=i,
                         rounds=rounds, samples=60 + 20 * i) for i in range(n)]


def all_exit_0(children: list[Child], timeout: float = 10) -> None:
    """Every client exits 0: by itself after its --max-rounds, or, when a fault made it miss
    a round of a federation that has now finished, when it is asked to stop (SIGTERM)."""
    for child in children:
        try:
            code = child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            child.proc.terminate()
            code = child.proc.wait(timeout)
        assert code == 0, child.tail(30)
        assert "Traceback" not in child.tail(400), child.tail(60)


@pytest.mark.fault(
    name="broker restart mid-round",
    injected="Mosquitto (persistence on) stopped and started again on the same port as "
             "soon as round 2 of 3 is announced; 3 real clients",
    expected="aggregator and clients reconnect to their durable sessions; all 3 rounds "
             "aggregate; every update a client was told accepted is counted once")
def test_broker_restart_mid_round(aggregator: AggregatorFactory, durable_broker: MosquittoBroker,
                                  fleet: Fleet, namespace: str, tmp_path: Path,
                                  model_file: ModelFile, scenario: Scenario) -> None:
    agg = aggregator(rounds=3, min_clients=2, min_available=3, round_timeout=4, **TRAINING)
    clients = real_clients(fleet, tmp_path, durable_broker, namespace, rounds=3)
    state = agg.wait_state(lambda s: s["round_id"] >= 2 and s["phase"] == "collecting", 60,
                           "round 2 to open")
    durable_broker.restart()
    scenario.observe(f"broker restarted in round {state['round_id']} with "
                     f"{len(state['accepted'])} of {len(state['selected'])} accepted")
    assert agg.wait_exit(60) == 0, agg.child.tail(40)
    all_exit_0(clients)
    log = agg.log()
    assert "disconnected from" in log and log.count("session present: True") >= 1, log[-3000:]
    scenario.observe("aggregator reconnected (session present); clients exit 0")
    scenario.observe(check_federation(agg.state_dir, model_file, 3,
                                      accepted=told_accepted(clients)))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="aggregator kill -9 mid-round, then restart",
    injected="SIGKILL to the aggregator as soon as round 2 of 3 has accepted an update "
             "(a 4th selected device never answers, so the round stays open), then the "
             "same command again on the same state directory; 3 real clients",
    expected="the restart restores round 2 with its stored updates; an update in flight "
             "is redelivered by the broker and counted once; all 3 rounds aggregate")
def test_aggregator_kill_9_mid_round(aggregator: AggregatorFactory,
                                     durable_broker: MosquittoBroker, fleet: Fleet,
                                     namespace: str, tmp_path: Path, model_file: ModelFile,
                                     devices: Callable[..., ScriptedDevice],
                                     scenario: Scenario) -> None:
    devices("ghost")  # online, selected, never answers: every round lasts until its deadline
    agg = aggregator(rounds=3, min_clients=3, min_available=4, round_timeout=2.5, **TRAINING)
    clients = real_clients(fleet, tmp_path, durable_broker, namespace, rounds=3)
    state = agg.wait_state(
        lambda s: s["round_id"] == 2 and s["phase"] == "collecting" and bool(s["accepted"]),
        60, "round 2 to accept an update")
    agg.kill9()
    scenario.observe(f"killed in round 2 with {len(state['accepted'])} of "
                     f"{len(state['selected'])} accepted")
    agg.start()
    assert agg.wait_exit(60) == 0, agg.child.tail(40)
    all_exit_0(clients)
    assert "restored round=2" in agg.child.log_path.read_text()
    history = agg.history()
    assert all(h["participants"] == [c.name for c in clients] for h in history), history
    assert set(state["accepted"]) <= set(history[1]["participants"])
    scenario.observe("restart restored round 2; ghost never counted; clients exit 0")
    scenario.observe(check_federation(agg.state_dir, model_file, 3,
                                      accepted=told_accepted(clients)))
    scenario.observe("restarted aggregator exit 0")



@pytest.mark.fault(
    name="broker outage longer than a round",
    injected="Mosquitto stopped while round 2 of 3 waits for its deadline (3 updates in, a "
             "4th selected device silent), started again once that deadline and one more "
             "round timeout have passed; 3 real clients",
    expected="the aggregator closes round 2 at its deadline from the updates it holds while "
             "the broker is down, publishes once it is back, and completes 3 rounds")
def test_broker_outage_longer_than_a_round(aggregator: AggregatorFactory,
                                           durable_broker: MosquittoBroker, fleet: Fleet,
                                           namespace: str, tmp_path: Path,
                                           model_file: ModelFile,
                                           devices: Callable[..., ScriptedDevice],
                                           scenario: Scenario) -> None:
    devices("ghost")  # online, selected, never answers: round 2 lasts until its deadline
    timeout = 2.0
    agg = aggregator(rounds=3, min_clients=3, min_available=4, round_timeout=timeout,
                     **TRAINING)
    clients = real_clients(fleet, tmp_path, durable_broker, namespace, rounds=3)
    state = agg.wait_state(lambda s: s["round_id"] == 2 and len(s["accepted"]) == 3, 60,
                           "round 2 to hold 3 updates")
    durable_broker.stop()
    stopped = time.time()
    until = state["deadline"] + timeout
    wait_for(lambda: True if time.time() > until else None, 30, "the outage to outlast round 2")
    durable_broker.start()
    scenario.observe(f"broker down {time.time() - stopped:.1f} s across round 2's deadline")
    assert agg.wait_exit(60) == 0, agg.child.tail(40)
    all_exit_0(clients)
    second = agg.history()[1]
    assert second["closed_at"] < until, second  # closed while the broker was down
    assert "queueing the rest of this batch for after the reconnect" in agg.log()
    scenario.observe("round 2 closed at its deadline during the outage, its weights "
                     "published after the reconnect; clients exit 0")
    scenario.observe(check_federation(agg.state_dir, model_file, 3,
                                      accepted=told_accepted(clients)))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="broker hangs across a round's deadline",
    injected="Mosquitto frozen with SIGSTOP (connections open, nothing answered) while "
             "round 2 of 3 waits for its deadline, resumed 3 s after it (round timeout "
             "2 s); 3 real clients and a silent 4th device",
    expected="round 3 is announced with a deadline a full round timeout after clients "
             "receive it")
def test_broker_hangs_across_a_deadline(aggregator: AggregatorFactory,
                                        durable_broker: MosquittoBroker, fleet: Fleet,
                                        namespace: str, tmp_path: Path,
                                        model_file: ModelFile,
                                        devices: Callable[..., ScriptedDevice],
                                        scenario: Scenario) -> None:
    ghost = devices("ghost")
    timeout = 2.0
    agg = aggregator(rounds=3, min_clients=3, min_available=4, round_timeout=timeout,
                     **TRAINING)
    clients = real_clients(fleet, tmp_path, durable_broker, namespace, rounds=3)
    state = agg.wait_state(lambda s: s["round_id"] == 2 and len(s["accepted"]) == 3, 60,
                           "round 2 to hold 3 updates")
    pid = broker_pid(durable_broker)
    os.kill(pid, signal.SIGSTOP)
    try:
        until = state["deadline"] + 3.0
        wait_for(lambda: True if time.time() > until else None, 30, "3 s past the deadline")
    finally:
        os.kill(pid, signal.SIGCONT)
    end = time.monotonic() + 60
    while agg.alive and time.monotonic() < end:
        ghost.pump(0.05)  # takes each announcement as it arrives, to time it
    assert agg.wait_exit(1) == 0, agg.child.tail(40)
    all_exit_0(clients)
    scenario.observe(check_federation(agg.state_dir, model_file, 3,
                                      accepted=told_accepted(clients)))
    received_at, third = next((t, r) for t, r in ghost.announcements if r.round_id == 3)
    left = third.deadline - received_at
    scenario.observe(f"round 3 reached devices {-left:.1f} s after its deadline"
                     if left < 0 else f"round 3 reached devices {left:.1f} s before its "
                     "deadline")
    assert left > 0.9 * timeout, f"round 3 arrived with {left:.2f} s left of {timeout} s"


@pytest.mark.slow
@pytest.mark.fault(
    name="two aggregators on one state directory",
    injected="a second `python -m aggregator` with the same flags (but its own metrics port) "
             "while the first runs round 1 of 2; later SIGKILL to the first in round 2 and "
             "the same command again, its lock file left behind; 3 scripted devices",
    expected="the second exits 2 at once: '--state-dir DIR is in use by another "
             "fedge-aggregator (pid N)'; the restart after kill -9 is not blocked by the "
             "stale lock file; both rounds recorded once; exit 0")
def test_a_second_aggregator_on_a_state_directory_is_refused(
        aggregator: AggregatorFactory, devices: Callable[..., ScriptedDevice],
        model_file: ModelFile, scenario: Scenario) -> None:
    """Two used to record every round twice and both exit 0 (issue 14.8)."""
    samples = {"dev-a": 120, "dev-b": 30, "dev-c": 350}
    devs = [devices(name, n) for name, n in samples.items()]
    agg = aggregator(rounds=2, min_clients=3, round_timeout=30, codec="int8")
    first = agg.child
    devs[0].wait_round(1)
    rival = agg.fleet.start("rival-aggregator", "aggregator",
                            agg.argv(**{"metrics-port": free_port()}))
    try:
        code = rival.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the second aggregator runs:\n{rival.tail(20)}") from None
    refusal = f"--state-dir {agg.state_dir} is in use by another fedge-aggregator " \
              f"(pid {first.proc.pid})"
    assert code == 2 and refusal in rival.tail(5), rival.tail(20)
    scenario.observe(f"the second exited {code}: {refusal}")

    def answer(round_id: int) -> None:
        for d in devs:
            u = make_update(d.wait_round(round_id), d.client_id, samples[d.client_id],
                            model_file)
            d.send(u)
            assert d.wait_reply(u.nonce, timeout=40).accepted
    answer(1)
    agg.wait_state(lambda s: s["round_id"] == 2 and s["phase"] == "collecting", 30,
                   "round 2 to open")
    agg.kill9()
    assert (agg.state_dir / "lock").read_text() == f"{first.proc.pid}\n"
    agg.start()
    answer(2)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    assert agg.alive is False and "in use" not in agg.child.tail(200)
    scenario.observe("killed in round 2, restarted over the stale lock file; " + check_federation(
        agg.state_dir, model_file, 2, accepted=[(r, d.client_id) for r in (1, 2) for d in devs]))
    scenario.observe("aggregator exit 0")


@pytest.mark.fault(
    name="aggregator kill -9 right after announcing a round",
    injected="SIGKILL to the aggregator the moment the broker acknowledged round 2's "
             "announcement (a stage hook in the process); the 3 scripted devices answer "
             "round 2 while it is down; then the same command again",
    expected="the restart goes on with the round the devices were told (same id, selection "
             "and deadline): their updates, queued by the broker, are accepted and both "
             "rounds aggregate")
def test_aggregator_kill_9_right_after_announcing_a_round(
        durable_broker: MosquittoBroker, namespace: str, model_path: Path,
        devices: Callable[..., ScriptedDevice], model_file: ModelFile, fleet: Fleet,
        tmp_path: Path, scenario: Scenario) -> None:
    """Issue 14, finding 10: round.json was written after the round's publish, so the
    restart had round 1 as the latest, refused the devices' round-2 updates as
    'wrong_round' and announced another round 2 (another deadline)."""
    samples = {"dev-a": 120, "dev-b": 30, "dev-c": 350}
    devs = [devices(name, n) for name, n in samples.items()]
    agg = AggregatorProcess(fleet, model_path, durable_broker.url, namespace,
                            tmp_path / "aggregator", {"rounds": 2, "min-clients": 3,
                                                      "round-timeout": 30, "codec": "int8"})
    crashing = agg.start(crash_after=("ANNOUNCE", 2))
    for d in devs:
        u = make_update(d.wait_round(1, timeout=40), d.client_id, samples[d.client_id],
                        model_file)
        d.send(u)
        assert d.wait_reply(u.nonce).accepted
    assert crashing.proc.wait(60) == -signal.SIGKILL, agg.child.tail(30)
    told = {d.client_id: d.wait_round(2) for d in devs}
    scenario.observe(f"killed after round 2's announcement (deadline in "
                     f"{told['dev-a'].deadline - time.time():.0f} s)")
    sent = {}
    for d in devs:
        sent[d.client_id] = make_update(told[d.client_id], d.client_id, samples[d.client_id],
                                        model_file)
        d.send(sent[d.client_id])  # the aggregator is down: the broker queues them
    agg.start()
    for d in devs:
        reply = d.wait_reply(sent[d.client_id].nonce, timeout=40)
        assert reply.accepted, (d.client_id, reply.reason)
    assert agg.wait_exit(40) == 0, agg.child.tail(40)
    for d in devs:
        again = [r for _, r in d.announcements if r.round_id == 2]
        assert {(r.deadline, r.selected) for r in again} == {
            (told[d.client_id].deadline, told[d.client_id].selected)}, again
    scenario.observe("the restart went on with round 2 as announced (same deadline and "
                     "selection); the 3 updates sent while it was down were accepted")
    scenario.observe(check_federation(agg.state_dir, model_file, 2, accepted=[
        (r, c) for r in (1, 2) for c in samples]))
    scenario.observe("restarted aggregator exit 0")
