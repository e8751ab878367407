"""Fixtures of the fault suite, and the recorder of each scenario's outcome.

A fault test is marked ``@pytest.mark.fault(name=..., injected=..., expected=...)`` and
asks for the :func:`scenario` fixture; it adds what it observed with
:meth:`Scenario.observe`. When the test ends, its record (name, what was injected,
expected, observed, pass/fail, duration) is merged by name into the JSON file named by
``FEDGE_RELIABILITY_RESULTS`` (default ``tests/reliability/.results.json``), from which
``fedge reliability-report`` renders docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from reliability.kit import AggregatorFactory, AggregatorProcess, Scenario, ScriptedDevice

from aggregator.modelfile import ModelFile, load_model_file
from edge_client.protocol import Topics
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

RESULTS_ENV = "FEDGE_RELIABILITY_RESULTS"
DEFAULT_RESULTS = Path(__file__).resolve().parent / ".results.json"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name, injected, expected): a fault scenario recorded for "
        "docs/reliability.md")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report


def results_path() -> Path:
    """Where scenario records are merged."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def _environment() -> dict[str, str]:
    try:
        shown = subprocess.run([MosquittoBroker().binary, "-h"], capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
        mosquitto = shown[0] if shown else "unknown"
    except Exception:  # the record must be written even without a broker
        mosquitto = "unknown"
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": str(os.cpu_count()), "broker": mosquitto}


def _write(record: dict[str, Any]) -> None:
    path = results_path()
    try:
        results = json.loads(path.read_text())
        scenarios = [s for s in results["scenarios"] if s["name"] != record["name"]]
        known = [s["name"] for s in results["scenarios"]]
        at = known.index(record["name"]) if record["name"] in known else len(scenarios)
    except (OSError, ValueError, KeyError, TypeError):
        scenarios, at = [], 0
    scenarios.insert(at, record)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps({"environment": _environment(), "scenarios": scenarios},
                              indent=2) + "\n")
    os.replace(tmp, path)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """The record of the running fault test (see the module docstring)."""
    marker = request.node.get_closest_marker("fault")
    assert marker is not None, "a test using `scenario` needs @pytest.mark.fault(...)"
    s = Scenario(test=request.node.nodeid, **marker.kwargs)
    started = time.monotonic()
    yield s
    reports = request.node.stash.get(_REPORTS, {})
    failed = [r for r in reports.values() if r.failed]
    known = any(getattr(r, "wasxfail", None) for r in reports.values())  # an xfail: reported
    failure = ""
    if failed:
        crash = getattr(failed[0].longrepr, "reprcrash", None)
        failure = (crash.message if crash is not None else str(failed[0].longrepr))[:400]
    outcome = "fail" if failed else "known bug" if known else "pass"
    _write({"name": s.name, "test": s.test, "injected": s.injected, "expected": s.expected,
            "observed": "; ".join(s.observed), "outcome": outcome,
            "failure": failure, "duration_s": round(time.monotonic() - started, 1),
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


# -- the federation under test --------------------------------------------------------------
@pytest.fixture(scope="session")
def model_path(logreg_file: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trainable logistic regression (4 features, batch 8) as a file."""
    path = tmp_path_factory.mktemp("fault-model") / "logreg.tflite"
    path.write_bytes(logreg_file)
    return path


@pytest.fixture(scope="session")
def model_file(model_path: Path) -> ModelFile:
    """The model as the aggregator reads it (spec and initial weights)."""
    return load_model_file(model_path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Processes of one test, all stopped at its end."""
    with Fleet(tmp_path / "logs") as f:
        yield f


@pytest.fixture
def aggregator(fleet: Fleet, durable_broker: MosquittoBroker, namespace: str, tmp_path: Path,
               model_path: Path) -> AggregatorFactory:
    """Start ``python -m aggregator`` on the test's broker with flags (``min_clients=3``);
    ``crash_after=(STAGE, ROUND)``: one that SIGKILLs itself then
    (:meth:`AggregatorProcess.start`)."""
    def start(crash_after: tuple[str, int] | None = None, **flags: object) -> AggregatorProcess:
        process = AggregatorProcess(
            fleet, model_path, durable_broker.url, namespace, tmp_path / "aggregator",
            {name.replace("_", "-"): value for name, value in flags.items()})
        process.start(crash_after)
        return process
    return start


@pytest.fixture
def topics(namespace: str) -> Topics:
    """The test's topic tree (its federation is the test's namespace)."""
    return Topics(namespace)


@pytest.fixture
def devices(durable_broker: MosquittoBroker, topics: Topics
            ) -> Iterator[Callable[..., ScriptedDevice]]:
    """Make scripted devices on the test's broker; all disconnected at the end."""
    made: list[ScriptedDevice] = []

    def make(client_id: str, samples: int = 100, *, online: bool = True) -> ScriptedDevice:
        device = ScriptedDevice(durable_broker.url, topics, client_id, samples, online=online)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()
