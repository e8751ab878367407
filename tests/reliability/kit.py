"""Tools of the fault suite: the aggregator as a real process, devices, and the invariants.

* :class:`AggregatorProcess` runs ``python -m aggregator`` (through
  :class:`tools.runtime.fleet.Fleet`) and reads what it writes: ``round.json``,
  ``history.jsonl``, checkpoints, its Prometheus metrics and its RSS.
* :func:`start_clients` runs real ``python -m edge_client`` devices on generated data.
* :class:`ScriptedDevice` speaks the wire protocol directly, for input no real client sends.
* :func:`check_federation` asserts what every fault must leave intact: the rounds completed,
  each accepted update counted exactly once, and the published weights equal to a
  reference computed from the accepted updates.

Waiting is done by polling files, metrics or MQTT messages with a timeout, never by sleeping
a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from client_kit import linear_data
from update_kit import fedavg, transfer_id

from aggregator.history import read_history
from aggregator.modelfile import ModelFile
from aggregator.store import AggregatorStore
from edge_client.protocol import Presence, Reply, Round, Topics, Update, Weights, is_clear
from edge_client.quantize import dequantize_update
from edge_client.transfer import split
from edge_client.transport import BrokerConfig, MqttTransport, Will
from tools.runtime.broker import MosquittoBroker, free_port
from tools.runtime.fleet import Child, Fleet

T = TypeVar("T")
CRASH_AT = Path(__file__).resolve().parent / "crash_at.py"
Arrays = dict[str, npt.NDArray[Any]]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll ``probe`` until it returns something other than None.

    Raises:
        AssertionError: nothing came within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return found


@dataclass
class Scenario:
    """One fault scenario's record, filled in by the test (see conftest.py)."""

    name: str
    injected: str
    expected: str
    test: str
    observed: list[str] = field(default_factory=list)

    def observe(self, text: str) -> None:
        """Add one observation (kept in order, joined with "; " in the record)."""
        self.observed.append(text)


# -- the aggregator as a process ----------------------------------------------------------
@dataclass
class AggregatorProcess:
    """``python -m aggregator`` on a broker, restartable on the same state directory."""

    fleet: Fleet
    model: Path
    broker_url: str
    federation: str
    state_dir: Path
    flags: dict[str, object]
    metrics_port: int = field(default_factory=free_port)
    children: list[Child] = field(default_factory=list)

    def argv(self, **override: object) -> list[str]:
        """The process's flags (``override``: flag name → value, e.g. another metrics port)."""
        flags = {"broker": self.broker_url, "federation": self.federation, "model": self.model,
                 "state-dir": self.state_dir, "metrics-port": self.metrics_port, **self.flags,
                 **override}
        return [part for name, value in flags.items() for part in (f"--{name}", str(value))]

    def start(self, crash_after: tuple[str, int] | None = None) -> Child:
        """Start (or restart) the process; ``crash_after=(STAGE, ROUND)``: one that SIGKILLs
        itself when that stage of that round ends (tests/reliability/crash_at.py)."""
        name = f"aggregator-{len(self.children)}"
        if crash_after is None:
            child = self.fleet.start(name, "aggregator", self.argv())
        else:
            stage, round_id = crash_after
            child = self.fleet.run(name, [str(CRASH_AT), stage, str(round_id), *self.argv()])
        self.children.append(child)
        return child

    @property
    def child(self) -> Child:
        """The latest process."""
        return self.children[-1]

    @property
    def alive(self) -> bool:
        """Whether the latest process is still running."""
        return self.child.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        self.child.proc.send_signal(signal.SIGKILL)
        self.child.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        """The exit status of the latest process (asserts it ends within ``timeout``)."""
        try:
            return self.child.proc.wait(timeout)
        except Exception as e:
            raise AssertionError(f"the aggregator did not finish in {timeout}s:\n"
                                 f"{self.child.tail(40)}") from e

    def round_state(self) -> dict[str, Any] | None:
        """``round.json`` (written atomically by the aggregator), or None before the first."""
        try:
            loaded: dict[str, Any] = json.loads((self.state_dir / "round.json").read_text())
            return loaded
        except (OSError, ValueError):
            return None

    def wait_state(self, condition: Callable[[dict[str, Any]], bool], timeout: float,
                   what: str) -> dict[str, Any]:
        """Poll ``round.json`` until ``condition`` holds; fails early if the process died."""
        def probe() -> dict[str, Any] | None:
            assert self.alive, f"the aggregator died:\n{self.child.tail(40)}"
            state = self.round_state()
            return state if state is not None and condition(state) else None
        return wait_for(probe, timeout, what)

    def history(self) -> list[dict[str, Any]]:
        """``history.jsonl``."""
        return read_history(self.state_dir)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``name{labels}`` → value (``{}`` while the port is closed)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample, 0 when absent (a labelled counter appears on its first increment)."""
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return self.metrics().get(f"{name}{{{inner}}}" if inner else name, 0.0)

    def wait_metric(self, name: str, value: float, timeout: float = 20, **labels: str) -> None:
        """Poll the metrics endpoint until ``name{labels}`` reaches ``value``."""
        wait_for(lambda: True if self.metric(name, **labels) >= value else None, timeout,
                 f"{name}{labels} >= {value} (now {self.metric(name, **labels)})", 0.05)

    def rss(self) -> int:
        """Resident set size of the latest process, in bytes."""
        status = Path(f"/proc/{self.child.proc.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert found is not None, status
        return int(found[1]) * 1024

    def log(self) -> str:
        """The logs of every process started so far."""
        return "\n".join(c.log_path.read_text(errors="replace") for c in self.children)


AggregatorFactory = Callable[..., AggregatorProcess]


# -- real clients -------------------------------------------------------------------------
def start_client(fleet: Fleet, tmp: Path, broker_url: str, federation: str, client_id: str,
                 *, seed: int, rounds: int, samples: int = 80) -> Child:
    """A real ``python -m edge_client`` device with its own data file and state dir."""
    x, y = linear_data(samples, seed)
    data = tmp / f"{client_id}.npz"
    np.savez(data, x=x, y=y)
    return fleet.start(client_id, "edge_client", [
        "--broker", broker_url, "--federation", federation, "--client-id", client_id,
        "--data", str(data), "--state-dir", str(tmp / f"state-{client_id}"),
        "--max-rounds", str(rounds), "--seed", str(seed)])


def told_accepted(children: Iterable[Child]) -> set[tuple[int, str]]:
    """(round, client) of every update a real client logged as accepted by the aggregator."""
    found = set()
    for child in children:
        text = child.log_path.read_text(errors="replace")
        found |= {(int(r), child.name) for r in re.findall(r"round (\d+): update accepted", text)}
    return found


# -- scripted devices ---------------------------------------------------------------------
class ScriptedDevice:
    """A device that speaks the protocol by hand: presence, rounds, replies, raw chunks."""

    def __init__(self, url: str, topics: Topics, client_id: str, samples: int = 100, *,
                 online: bool = True) -> None:
        self.client_id, self.topics, self.samples = client_id, topics, samples
        offline = Presence(client_id, False, samples, "scripted", "1", "test", time.time())
        self.t = MqttTransport(BrokerConfig(
            url=url, client_id=f"scripted-{client_id}-{uuid.uuid4().hex[:6]}", durable=False,
            will=Will(topics.presence(client_id), offline.encode()))).start(wait=10)
        self.t.subscribe(topics.round())
        self.t.subscribe(topics.reply(client_id))
        self.rounds: dict[int, Round] = {}
        self.announcements: list[tuple[float, Round]] = []  # (received at, round), in order
        self.replies: list[Reply] = []
        if online:
            presence = Presence(client_id, True, samples, "scripted", "1", "test", time.time())
            self.t.publish(topics.presence(client_id), presence.encode(), retain=True)
            self.t.on_connect_hooks.append(  # like a real client, after every reconnect
                lambda: self.t.publish(topics.presence(client_id), presence.encode(),
                                       retain=True, timeout=None))

    def pump(self, timeout: float) -> None:
        """Take one message (round or reply) if one comes within ``timeout``."""
        message = self.t.get(timeout)
        if message is None or is_clear(message.payload):
            return
        if message.topic == self.topics.round():
            r = Round.decode(message.payload)
            self.rounds[r.round_id] = r
            self.announcements.append((time.time(), r))
        else:
            self.replies.append(Reply.decode(message.payload))

    def _until(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while (found := probe()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.client_id}: timed out after {timeout}s "
                                     f"waiting for {what}")
            self.pump(min(left, 0.5))
        return found

    def wait_round(self, round_id: int, timeout: float = 20) -> Round:
        """The announcement of ``round_id``."""
        return self._until(lambda: self.rounds.get(round_id), timeout, f"round {round_id}")

    def wait_reply(self, nonce: bytes, timeout: float = 20) -> Reply:
        """The next reply carrying ``nonce`` (removed from :attr:`replies`)."""
        def probe() -> Reply | None:
            for i, reply in enumerate(self.replies):
                if reply.nonce == nonce:
                    return self.replies.pop(i)
            return None
        return self._until(probe, timeout, f"a reply to nonce {nonce.hex()[:12]}")

    def wait_any_reply(self, timeout: float = 20) -> Reply:
        """The next reply, whatever its nonce."""
        return self._until(lambda: self.replies.pop(0) if self.replies else None, timeout,
                           "a reply")

    def publish(self, payloads: Sequence[bytes], topic_client: str | None = None, *,
                topic: str | None = None) -> None:
        """Publish raw payloads on ``update/{topic_client or self}`` (or ``topic``), QoS 1."""
        target = topic or self.topics.update(topic_client or self.client_id)
        for payload in payloads:
            self.t.publish(target, payload)

    def send(self, update: Update, topic_client: str | None = None,
             max_payload: int = 4096) -> str:
        """Publish ``update`` in order under a fresh transfer id; returns the id."""
        tid = transfer_id(update)
        self.publish(split(update.encode(), tid, max_payload=max_payload), topic_client)
        return tid

    def close(self) -> None:
        """Disconnect (gracefully: no Last Will)."""
        self.t.stop()






# -- the invariants -----------------------------------------------------------------------


def _weights(store: AggregatorStore, version: int) -> Arrays:
    saved = store.checkpoint(version)
    assert saved is not None, f"checkpoint v{version} is missing"
    return dequantize_update(Weights.decode(saved[0]).tensors)


def check_federation(state_dir: Path, model: ModelFile, rounds: int, *,
                     accepted: Iterable[tuple[int, str]] = (),
                     outcomes: Sequence[str] | None = None) -> str:
    """Assert the state directory shows a complete, exactly-once federation run.

    * ``rounds`` history lines, rounds 1..N, outcomes as ``outcomes`` (default all
      ``aggregated``), each round's participants unique and equal to the updates stored
      for it, each stored update naming its round and client, samples adding up;
    * every (round, client) in ``accepted`` (what clients were told) is a participant;
    * checkpoint v0 is the model's initial weights and every later version is the
      previous one plus the weighted mean of that round's stored updates.

    Returns:
        A one-line summary for the scenario record.
    """
    store = AggregatorStore(state_dir)
    history = store.history()
    assert [h["round"] for h in history] == list(range(1, rounds + 1)), history
    expected = list(outcomes or ["aggregated"] * rounds)
    assert [h["outcome"] for h in history] == expected, history
    base = _weights(store, 0)
    for name, value in model.initial_weights.items():
        np.testing.assert_array_equal(base[name], value)
    worst, version = 0.0, 0
    for h in history:
        rid, participants = h["round"], h["participants"]
        assert len(participants) == len(set(participants)), f"round {rid} counted twice: {h}"
        stored = [Update.decode(payload) for _, payload in store.accepted(rid)]
        assert sorted(u.client_id for u in stored) == sorted(participants), (rid, h)
        assert all(u.round_id == rid for u in stored), rid
        assert len({u.nonce for u in stored}) == len(stored), rid
        assert h["samples"] == sum(u.num_samples for u in stored), (rid, h)
        if h["outcome"] != "aggregated":
            assert h["version"] == version, h
            continue
        version += 1
        assert h["version"] == version, h
        reference, got = fedavg(base, stored), _weights(store, version)
        for name, value in reference.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)
            worst = max(worst, float(np.max(np.abs(got[name] - value))))
        base = got
    missing = {(r, c) for r, c in accepted
               if c not in next((h["participants"] for h in history if h["round"] == r), [])}
    assert not missing, f"told accepted but not counted: {sorted(missing)}"
    counts = [len(h["participants"]) for h in history]
    kinds = "/".join(sorted(set(expected)))
    return (f"{len(history)} round{'s' if len(history) != 1 else ''} {kinds}"
            f", participants per round {counts} (unique, = stored updates), "
            f"weights v{version} = FedAvg of stored updates (max |diff| {worst:.1e})")


def broker_pid(broker: MosquittoBroker) -> int:
    """The process id of a running test broker (tools.runtime.broker keeps it private)."""
    proc = broker._proc
    assert proc is not None, "the broker is not running"
    return proc.pid


def kill_process(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid`` if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
