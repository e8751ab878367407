"""``fedge status`` against a real aggregator and clients on Mosquitto: a running round with
its online devices, then "finished"."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from client_kit import linear_data

from tools.cli import main
from tools.runtime.broker import MosquittoBroker
from tools.runtime.fleet import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def status(capsys: pytest.CaptureFixture[str], broker: MosquittoBroker, ns: str,
           *extra: str) -> str:
    assert main(["status", "--broker", broker.url, "--federation", ns, *extra]) == 0
    return capsys.readouterr().out


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _device(fleet: Fleet, common: list[str], tmp_path: Path, i: int) -> None:
    """A real client ``site-{i}`` with 60 samples of its own, until the run finishes."""
    x, y = linear_data(60, seed=i)
    np.savez(tmp_path / f"c{i}.npz", x=x, y=y)
    fleet.start(f"c{i}", "edge_client", [
        *common, "--client-id", f"site-{i}", "--data", str(tmp_path / f"c{i}.npz"),
        "--state-dir", str(tmp_path / f"s{i}")])


def test_status_shows_the_round_and_who_is_online_then_finished(
        broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_file: bytes,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(logreg_file)
    common = ["--broker", broker.url, "--federation", namespace]
    with Fleet(tmp_path / "logs") as fleet:
        agg = fleet.start("aggregator", "aggregator", [
            *common, "--model", str(model), "--state-dir", str(tmp_path / "agg"),
            "--rounds", "2", "--min-clients", "2", "--min-available", "3",
            "--round-timeout", "60", "--epochs", "1"])
        for i in range(2):  # two of the three devices the first round waits for
            _device(fleet, common, tmp_path, i)

        def two_online() -> dict[str, Any] | None:
            got = json.loads(status(capsys, broker, namespace, "--json", "--timeout", "2"))
            # the aggregator's own status lags presence (republished at most once a second)
            return got if (got["online"] == ["site-0", "site-1"] and got["status"]
                           and got["status"]["online"] == 2) else None

        waiting = until(two_online, 60, "two devices online")
        assert waiting["status"]["phase"] == "waiting" and waiting["finished"] is None
        assert waiting["run_id"] and waiting["weights_version"] == 0
        text = status(capsys, broker, namespace)
        assert "waiting for clients (2 online)" in text and "site-0 site-1" in text

        _device(fleet, common, tmp_path, 2)
        assert agg.proc.wait(timeout=120) == 0, agg.tail(30)
    done = json.loads(status(capsys, broker, namespace, "--json"))
    assert done["finished"] == "rounds" and done["round"] is None
    assert done["status"]["phase"] == "finished" and done["weights_version"] == 2
    assert done["status"]["last_round"]["round"] == 2.0
    assert "FINISHED (rounds)" in status(capsys, broker, namespace)


def test_status_of_a_federation_nobody_runs_says_so(
        broker: MosquittoBroker, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no manifest on the broker" in status(capsys, broker, namespace, "--timeout", "1")
