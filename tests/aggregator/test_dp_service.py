"""Client-level DP in the service (in-memory bus): the ε a history row reports is what
``dp-accounting`` computes from the row alone, the published weights are the clipped
mean plus exactly the noise the ledger recorded, and the run stops at its budget."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from service_kit import CLIENTS, MODEL, WEIGHTS, Federation

from aggregator import accounting
from aggregator.history import read_history
from aggregator.intake import received
from aggregator.ledger import LEDGER_FILE, PrivacyLedger, Spent
from aggregator.privacy import DpSettings, add_noise, clip_scale
from aggregator.service import AggregatorService
from aggregator.stages import Stage
from aggregator.store import AggregatorStore
from aggregator.validation import delta_norm
from edge_client.errors import ConfigError
from edge_client.protocol import PRIVACY_BUDGET, Manifest, Status, Update, Weights
from edge_client.quantize import dequantize_update

DP = {"dp_clip": 0.05, "dp_noise_multiplier": 1.2, "dp_delta": 1e-5}


def run_round(fed: Federation, service: Any) -> None:
    for client in fed.round().selected:
        fed.send(service, client)


def independent_epsilon(dp: dict[str, Any]) -> float:
    """ε from a history row's parameters alone, with dp-accounting, as a reader would."""
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        dp["sampling_rate"], dp_accounting.GaussianDpEvent(dp["noise_multiplier"])),
        dp["rounds_spent"])
    make = pld.PLDAccountant if dp["accountant"] == "pld" else rdp.RdpAccountant
    return float(make().compose(event).get_epsilon(dp["delta"]))


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_the_reported_epsilon_is_what_dp_accounting_computes_from_the_history_row(
        tmp_path: Path, accountant: str) -> None:
    fed = Federation(tmp_path, rounds=2, dp_accountant=accountant, **DP)
    service = fed.service()
    run_round(fed, service)
    run_round(fed, service)
    assert service.finished and service.finish_reason == "rounds"
    rows = read_history(tmp_path)
    assert [r["dp"]["rounds_spent"] for r in rows] == [1, 2]
    for row in rows:
        dp = row["dp"]
        assert (dp["clip"], dp["noise_multiplier"], dp["delta"], dp["accountant"],
                dp["sampling_rate"]) == (0.05, 1.2, 1e-5, accountant, 1.0)
        assert dp["epsilon"] == pytest.approx(independent_epsilon(dp), rel=1e-6)
    assert rows[1]["dp"]["epsilon"] > rows[0]["dp"]["epsilon"] > 0
    assert service.metrics.value("fedge_dp_epsilon") == rows[1]["dp"]["epsilon"]
    status = Status.decode(fed.broker.retained[fed.topics.status()])
    assert status.last_round["dp_epsilon"] == pytest.approx(rows[1]["dp"]["epsilon"])


def test_published_weights_are_the_clipped_uniform_mean_plus_the_ledgers_noise(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=1, **DP)
    service = fed.service()
    run_round(fed, service)
    store = AggregatorStore(tmp_path)
    deltas = []
    for _, payload in store.accepted(1):
        delta = received(Update.decode(payload), payload).delta
        scale = clip_scale(delta_norm(delta), 0.05)
        assert scale < 1.0  # every delta of the kit is longer than C: clipping matters
        deltas.append({k: v.astype(np.float64) * scale for k, v in delta.items()})
    mean = {k: sum(d[k] for d in deltas) / len(deltas) for k in WEIGHTS}
    ledger = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert [e["round"] for e in ledger["rounds"]] == [1]
    entry = ledger["rounds"][0]
    assert entry["expected_clients"] == len(CLIENTS)  # q = 1 of 3 online
    noised = add_noise(mean, len(deltas), Spent(**entry).noise())
    saved = store.checkpoint(1)
    assert saved is not None
    published = dequantize_update(Weights.decode(saved[0]).tensors)
    for name, base in WEIGHTS.items():
        np.testing.assert_allclose(published[name], base + noised[name], rtol=0, atol=1e-6)
        # the noise is really there: not the clipped mean alone
        assert np.abs(published[name] - (base + mean[name])).max() > 1e-3


def test_the_run_finishes_with_reason_privacy_budget_before_a_round_past_the_target(
        tmp_path: Path) -> None:
    two = accounting.epsilon([(1.0, 1.2)] * 2, 1e-5, "rdp")
    three = accounting.epsilon([(1.0, 1.2)] * 3, 1e-5, "rdp")
    target = (two + three) / 2  # two rounds fit, a third would not
    fed = Federation(tmp_path, rounds=5, dp_epsilon=target, **DP)
    service = fed.service()
    run_round(fed, service)
    run_round(fed, service)
    assert service.finished and service.finish_reason == PRIVACY_BUDGET
    assert service.state.round_id == 2
    manifest = Manifest.decode(fed.broker.retained[fed.topics.manifest()])
    assert manifest.finished == PRIVACY_BUDGET
    assert Status.decode(fed.broker.retained[fed.topics.status()]).finished == PRIVACY_BUDGET
    assert read_history(tmp_path)[-1]["dp"]["epsilon"] == pytest.approx(two) and two <= target
    assert (tmp_path / "final" / "weights.npz").exists()
    # a restart neither forgets the spent budget nor runs another round
    again = fed.service()
    assert again.finished and again.finish_reason == PRIVACY_BUDGET
    assert again.ledger is not None and len(again.ledger.entries) == 2
    assert Manifest.decode(fed.broker.retained[fed.topics.manifest()]).finished == PRIVACY_BUDGET


def test_a_round_spent_again_after_a_crash_costs_nothing_and_replays_its_noise(
        tmp_path: Path) -> None:
    settings = DpSettings(clip=1.0, sampling_rate=0.5, delta=1e-5, noise_multiplier=1.0)
    ledger = PrivacyLedger(tmp_path, settings, 1.0)
    first = ledger.spend(4, population=10, participants=["a", "b"])
    reopened = PrivacyLedger(tmp_path, settings, 1.0)  # as a restarted process would
    assert reopened.spend(4, population=10, participants=["a", "b"]) == first
    assert len(reopened.entries) == 1 and reopened.epsilon == ledger.epsilon
    assert reopened.sampling_seed == ledger.sampling_seed
    assert first.expected_clients == 5.0
    reopened.spend(5, population=10, participants=["a"])
    assert reopened.epsilon == pytest.approx(accounting.epsilon([(0.5, 1.0)] * 2, 1e-5, "rdp"))


class Crash(BaseException):
    """Stands for SIGKILL (BaseException: nothing in the service catches it)."""


class CrashAfterAggregate:
    """A stage hook raising :class:`Crash` when the aggregate stage (delta, spend, noise)
    ends: what tests/reliability/crash_at.py does to the real process with SIGKILL."""

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        yield
        if stage is Stage.AGGREGATE:
            raise Crash(stage.name)

    def round_opened(self, round_id: int) -> None:
        """Nothing to do."""

    def round_closed(self, round_id: int) -> None:
        """Nothing to do."""


def test_a_round_spent_before_a_crash_closes_at_start_before_any_update_can_join(
        tmp_path: Path) -> None:
    """Else a redelivered late update could join the restored round and a second, different
    noised version of it (with the same noise) would be published after the first."""
    fed = Federation(tmp_path, rounds=2, min_clients=2, min_available=3, **DP)
    service = fed.service()
    fed.send(service, "a")
    fed.send(service, "b")  # c was selected too but stays silent: the round waits

    service.stages = CrashAfterAggregate()
    fed.now += 11.0  # past the deadline: the round closes, is spent and noised, then "killed"
    with pytest.raises(Crash):
        fed.pump(service)
    ledger = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert [(e["round"], e["participants"]) for e in ledger["rounds"]] == [(1, ["a", "b"])]
    assert AggregatorStore(tmp_path).checkpoint(1) is None
    restarted = AggregatorService(fed.config, fed.broker.connect("aggregator"), MODEL,
                                  clock=lambda: fed.now)
    assert restarted.state.round_id == 1 and restarted.state.phase.value == "collecting"
    restarted.start()  # no message handled yet
    assert restarted.model.version == 1 and AggregatorStore(tmp_path).checkpoint(1) is not None
    assert restarted.ledger is not None and len(restarted.ledger.entries) == 1
    assert read_history(tmp_path)[0]["participants"] == ["a", "b"]


def test_adaptive_clipping_moves_c_between_rounds_and_epsilon_still_charges_z(
        tmp_path: Path) -> None:
    fed = Federation(tmp_path, rounds=3, dp_adaptive_clip=True, dp_clip_count_noise=2.0, **DP)
    service = fed.service()
    for _ in range(3):
        run_round(fed, service)
    entries = [Spent(**e) for e in json.loads((tmp_path / LEDGER_FILE).read_text())["rounds"]]
    assert entries[0].clip == 0.05
    assert [e.clip for e in entries[1:]] == [e.next_clip for e in entries[:-1]]
    assert entries[0].next_clip != entries[0].clip
    assert all(e.sum_noise_multiplier == pytest.approx((1.2 ** -2 - 4.0 ** -2) ** -0.5)
               for e in entries)
    row = read_history(tmp_path)[-1]["dp"]
    assert row["clip"] == entries[-1].clip and row["adaptive_clip"]["quantile"] == 0.5
    assert row["epsilon"] == pytest.approx(independent_epsilon(row), rel=1e-6)
    for e in entries:  # C moves by the noised share released (3 clients: a noisy share)
        assert e.next_clip == pytest.approx(e.clip * np.exp(-0.2 * (e.unclipped_share - 0.5)))


def test_a_dp_run_cannot_go_on_without_dp_nor_dp_start_on_rounds_published_without(
        tmp_path: Path) -> None:
    dp_run = Federation(tmp_path / "dp", rounds=1, **DP)
    run_round(dp_run, dp_run.service())
    plain = Federation(tmp_path / "dp", rounds=2)
    with pytest.raises(ConfigError, match="holds a differentially private run"):
        plain.service()
    plain_run = Federation(tmp_path / "plain", rounds=1)
    run_round(plain_run, plain_run.service())
    late = Federation(tmp_path / "plain", rounds=2, **DP)
    with pytest.raises(ConfigError, match="already aggregated 1 rounds without differential"):
        late.service()
