"""The device's record-level privacy: DP-SGD rounds charged to its own ledger before they
train, ε equal to an independent dp-accounting computation, and a round past the budget
declined (real Mosquitto, real client processes)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from client_kit import ScriptedAggregator, linear_data
from dp_accounting import rdp as dp_rdp
from import_block import TENSORFLOW, blocked_env

from aggregator.intake import received
from aggregator.validation import check_declined
from edge_client.errors import ConfigError
from edge_client.model import TrainableModel
from edge_client.privacy import (
    LEDGER_FILE,
    Declined,
    DpSgdSettings,
    PrivacyLedger,
    Spend,
    describe,
)
from edge_client.protocol import Topics, Update
from edge_client.transport import BrokerConfig, MqttTransport
from tools.runtime.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]
#: dp_accounting's default orders without the fractional ones (the device's, edge_client.rdp)
INTEGER_ORDERS = [*range(2, 64), 128, 256, 512, 1024]
SAMPLES, HOLDOUT, EPOCHS, Z = 50, 0.2, 2, 1.0


def independent_epsilon(rounds: list[tuple[float, float, int]], delta: float) -> float:
    """ε of DP-SGD rounds (q, z, steps) by dp_accounting's RDP accountant."""
    event = dp_accounting.ComposedDpEvent([dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
        for q, z, steps in rounds])
    return float(dp_rdp.RdpAccountant(INTEGER_ORDERS).compose(event).get_epsilon(delta))


@pytest.fixture(scope="module")
def logreg_dp_file() -> bytes:
    """The client kit's logistic regression (4 features, batch 8) with train_dp."""
    from models.export import export_trainable

    return export_trainable("logreg", (4,), 2, 8, optimizer="sgd", seed=1, dp_sgd=True)


def test_the_ledger_charges_a_round_once_survives_a_restart_and_declines_past_the_budget(
        tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    settings = DpSgdSettings(budget=3.0, delta=1e-5, noise_multiplier=1.0)
    plan = {"samples": 40, "capacity": 8, "epochs": 2}
    first = PrivacyLedger(path, 1e-5).charge(settings, run_id="r", round_id=1, **plan)
    assert isinstance(first, Spend)
    # L = 2 for a file batch of 8 (a Poisson(2) sample exceeds 8 in 0.02 % of the steps)
    assert (first.sampling_rate, first.steps, first.expected_batch) == (0.05, 40, 2)
    assert first.epsilon == pytest.approx(independent_epsilon([(0.05, 1.0, 40)], 1e-5),
                                          abs=1e-9)
    again = PrivacyLedger(path, 1e-5)  # a restart reads what was written before training
    assert again.charge(settings, run_id="r", round_id=1, **plan) == first
    assert len(again.spends) == 1, "a round trained again after a crash was charged twice"
    rounds, declined = 1, None
    while declined is None:
        charged = again.charge(settings, run_id="r", round_id=rounds + 1, **plan)
        if isinstance(charged, Declined):
            declined = charged
        else:
            rounds += 1
    assert declined.spent <= 3.0 < declined.after
    assert declined.after == pytest.approx(
        independent_epsilon([(0.05, 1.0, 40 * (rounds + 1))], 1e-5), abs=1e-9)
    assert len(PrivacyLedger(path, 1e-5).spends) == rounds, "a declined round was charged"
    assert f"{declined.spent:.4f}" in describe(path, None)


def test_an_unreadable_ledger_is_never_reset_and_bad_settings_are_refused(
        tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="never reset"):
        PrivacyLedger(tmp_path / LEDGER_FILE, 1e-5)
    with pytest.raises(ConfigError, match="dp-delta"):
        DpSgdSettings(budget=1.0, delta=2.0, noise_multiplier=1.0)


def test_dp_sgd_training_with_no_noise_and_a_wide_clip_learns(logreg_dp_file: bytes) -> None:
    """fit_dp really trains (Poisson batches through train_dp): the loss falls."""
    model = TrainableModel(logreg_dp_file)
    x, y = linear_data(200, seed=2)
    before = model.evaluate(x, y)[0]
    fit = model.fit_dp(x, y, steps=200, sampling_rate=4 / 200, clip=100.0,
                       noise_multiplier=0.0, expected_batch=4, lr=0.5,
                       rng=np.random.default_rng(0))
    assert model.evaluate(x, y)[0] < 0.7 * before
    assert fit.clipped == 0 and fit.examples > 0 and fit.truncated < 20


def _client(broker: MosquittoBroker, ns: str, data: Path, state: Path, budget: float,
            ) -> subprocess.Popen[str]:
    """A real fedge-client process that can import neither TensorFlow, scipy nor
    dp_accounting: a device has none of them (the edge extra)."""
    blocked = blocked_env(data.parent, (*TENSORFLOW, "scipy", "dp_accounting"))
    return subprocess.Popen(
        [sys.executable, "-m", "edge_client", "--broker", broker.url, "--federation", ns,
         "--client-id", "dev1", "--data", str(data), "--state-dir", str(state), "--once",
         "--seed", "0", "--no-normalise", "--dp-budget", str(budget), "--dp-delta", "1e-5",
         "--dp-noise-multiplier", str(Z)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env=blocked)


def _aggregator_judgement(update: Update) -> str | None:
    """The real aggregator's verdict on a declined update (its reply text)."""
    rejection = check_declined(received(update, update.encode()))
    return None if rejection is None else rejection.reply_text()


@pytest.mark.broker
@pytest.mark.slow
def test_a_device_reports_its_epsilon_then_declines_the_round_past_its_budget(
        broker: MosquittoBroker, namespace: str, tmp_path: Path, logreg_dp_file: bytes,
        make_aggregator: Any) -> None:
    x, y = linear_data(SAMPLES, seed=5)
    np.savez(tmp_path / "local.npz", x=x, y=y)
    train = SAMPLES - int(SAMPLES * HOLDOUT)
    q, steps = 2 / train, EPOCHS * math.ceil(train / 2)  # L = 2 for the file's batch of 8
    one, two = (independent_epsilon([(q, Z, steps * k)], 1e-5) for k in (1, 2))
    budget = (one + two) / 2  # room for one round, not for two
    t = MqttTransport(BrokerConfig(url=broker.url, client_id=f"{namespace}-agg",
                                   manual_ack=True)).start(wait=10)
    agg: ScriptedAggregator = make_aggregator(
        transport=t, topics=Topics(namespace), model=logreg_dp_file,
        weights=TrainableModel(logreg_dp_file).get_weights(), judge=_aggregator_judgement)
    t.subscribe(agg.topics.update_filter())
    state = tmp_path / "st"
    try:
        agg.publish_all(round_id=1, epochs=EPOCHS)
        proc = _client(broker, namespace, tmp_path / "local.npz", state, budget)
        (trained,) = agg.collect(1, timeout=60)
        assert proc.wait(timeout=30) == 0
        agg.publish_manifest_and_round(round_id=2, epochs=EPOCHS)
        proc = _client(broker, namespace, tmp_path / "local.npz", state, budget)
        (declined,) = agg.collect(1, timeout=60, refused=True)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        t.stop()
    log = proc.stderr.read() if proc.stderr else ""
    # round 1: trained with DP-SGD, its ε reported and in the ledger, as dp-accounting says
    assert trained.round_id == 1 and trained.tensors
    assert "train_loss" not in trained.metrics, "a loss on the records left un-noised"
    assert trained.metrics["dp_epsilon"] == pytest.approx(one, abs=1e-9)
    ledger = json.loads((state / LEDGER_FILE).read_text())["rounds"]
    assert [(r["round_id"], r["steps"]) for r in ledger] == [(1, steps)]
    assert ledger[0]["epsilon"] == pytest.approx(one, abs=1e-9)
    # round 2 (another process: the ledger survived): declined, not trained, told why
    assert declined.declined and declined.round_id == 2 and not declined.tensors
    assert declined.metrics["dp_epsilon_next"] == pytest.approx(two, abs=1e-9)
    assert code == 1, log  # --once ended without an accepted update
    assert "round 2: declined, not trained: privacy budget" in log
    assert "update not counted: declined: client dev1 declined round 2: privacy budget" in log
    assert len(json.loads((state / LEDGER_FILE).read_text())["rounds"]) == 1
    shown = subprocess.run([sys.executable, "-m", "edge_client", "--privacy", "--state-dir",
                            str(state)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"epsilon spent: {one:.4f} at delta 1e-05" in shown.stdout


def test_the_dp_flags_need_a_budget_and_a_budget_needs_delta_and_noise() -> None:
    from edge_client.config import ClientConfig
    from edge_client.device import dp_settings

    assert dp_settings(ClientConfig()) is None
    with pytest.raises(ConfigError, match="--dp-delta without --dp-budget"):
        dp_settings(ClientConfig(dp_delta=1e-5))
    with pytest.raises(ConfigError, match="--dp-budget needs --dp-delta"):
        dp_settings(ClientConfig(dp_budget=3.0, dp_delta=1e-5))
    settings = dp_settings(ClientConfig(dp_budget=3.0, dp_delta=1e-5, dp_noise_multiplier=1.1,
                                        dp_batch=8))
    assert settings == DpSgdSettings(3.0, 1e-5, 1.1, 1.0, 8)
