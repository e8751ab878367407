"""Client-level DP maths: clipping, noise, Poisson sampling, calibration, flag checks."""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from aggregator import accounting
from aggregator.__main__ import build_parser
from aggregator.config import build_config
from aggregator.privacy import (
    DpSettings,
    Noise,
    add_noise,
    dp_plan,
    expected_clients,
    next_clip,
    sum_noise_multiplier,
)
from aggregator.schedule import poisson_sample
from edge_client.errors import ConfigError


def test_the_dp_plan_clips_every_delta_to_c_and_weighs_every_update_one() -> None:
    plan = dp_plan(1.0, {"a": 0.5, "b": 4.0, "c": 0.0})
    assert plan.weights == {"a": 1, "b": 1, "c": 1}
    assert plan.scales == {"a": 1.0, "b": 0.25, "c": 1.0}
    assert plan.report()["clipped"] == {"b": {"norm": 4.0, "scale": 0.25}}


def test_noise_has_std_z_c_over_the_fixed_denominator_and_replays_from_its_seed() -> None:
    mean = {"w": np.full(200_000, 0.1)}
    noise = Noise(seed=12345, noise_multiplier=2.0, clip=0.5, expected_clients=4.0)
    out = add_noise(mean, 3, noise)
    # sum of 3 updates (0.3) over the fixed denominator 4, plus N(0, (2*0.5/4)^2)
    assert abs(out["w"].mean() - 0.3 / 4) < 0.005
    assert abs(out["w"].std() - 2.0 * 0.5 / 4) < 0.005
    again = add_noise(mean, 3, noise)
    assert np.array_equal(out["w"], again["w"])
    other = add_noise(mean, 3, Noise(12346, 2.0, 0.5, 4.0))
    assert not np.array_equal(out["w"], other["w"])
    assert expected_clients(0.1, 25) == 2.5 and expected_clients(0.01, 5) == 1.0


def test_poisson_sampling_picks_each_client_with_probability_q() -> None:
    online = frozenset(f"d{i:04d}" for i in range(2000))
    sizes = [len(poisson_sample(7, r, online, 0.1)) for r in range(1, 21)]
    assert all(140 <= n <= 260 for n in sizes), sizes  # binomial(2000, 0.1): sd 13.4
    assert len(set(sizes)) > 1  # not a fixed-size sample
    assert poisson_sample(7, 3, online, 0.1) == poisson_sample(7, 3, online, 0.1)
    assert poisson_sample(7, 3, online, 0.1) != poisson_sample(8, 3, online, 0.1)
    assert poisson_sample(7, 3, online, 1.0) == tuple(sorted(online))


def test_epsilon_is_what_dp_accounting_computes_independently() -> None:
    rounds = [(0.5, 1.0)] * 5
    for name, make in (("rdp", rdp.RdpAccountant), ("pld", dp_accounting.pld.PLDAccountant)):
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(1.0)), 5)
        assert accounting.epsilon(rounds, 1e-5, name) == pytest.approx(
            make().compose(event).get_epsilon(1e-5), rel=1e-9)
    assert accounting.epsilon([], 1e-5, "rdp") == 0.0


def test_the_noise_multiplier_for_a_target_is_the_smallest_that_keeps_within_it() -> None:
    z = accounting.noise_multiplier(3.0, 1e-5, 0.5, 10)
    assert accounting.epsilon([(0.5, z)] * 10, 1e-5, "rdp") <= 3.0
    assert accounting.epsilon([(0.5, z * 0.99)] * 10, 1e-5, "rdp") > 3.0
    assert accounting.epsilon([(0.5, z)] * 10, 1e-5, "pld") <= 3.0  # RDP bounds PLD


def _config(tmp_path: Path, *flags: str) -> object:
    argv = ["--model", str(tmp_path / "m.tflite"), *flags]
    return build_config(build_parser().parse_args(argv), {})


@pytest.mark.parametrize(("flags", "message"), [
    (["--dp-noise-multiplier", "1"], "--dp-noise-multiplier need --dp-clip"),
    (["--dp-clip", "1", "--dp-noise-multiplier", "1"], "--dp-clip needs --dp-delta"),
    (["--dp-clip", "1", "--dp-delta", "1e-5"], "needs --dp-noise-multiplier Z or --dp-epsilon"),
    (["--dp-clip", "0", "--dp-delta", "1e-5", "--dp-epsilon", "1"], "--dp-clip: expected"),
    (["--dp-clip", "1", "--dp-delta", "1e-5", "--dp-epsilon", "1", "--clients-per-round",
      "3"], "--clients-per-round does not apply"),
    (["--dp-clip", "1", "--dp-delta", "1e-5", "--dp-epsilon", "1", "--strategy", "median"],
     "--strategy median does not work with --dp-clip"),
    (["--dp-clip", "1", "--dp-delta", "1e-5", "--dp-epsilon", "1", "--fraction", "0.5",
      "--dp-sampling-rate", "0.2"], "differ: give one"),
    (["--dp-clip", "1", "--dp-delta", "1e-5", "--dp-epsilon", "1", "--dp-accountant", "x"],
     "invalid choice"),
])
def test_bad_dp_flag_combinations_are_refused_naming_the_flags(
        tmp_path: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((ConfigError, SystemExit)) as caught:
        _config(tmp_path, *flags)
    said = str(caught.value) if caught.type is ConfigError else capsys.readouterr().err
    assert message in said


def test_the_sampling_rate_defaults_to_the_fraction_then_to_one(tmp_path: Path) -> None:
    dp = ["--dp-clip", "1", "--dp-delta", "1e-5", "--dp-noise-multiplier", "1"]
    with_fraction = build_config(build_parser().parse_args(
        ["--model", "m", *dp, "--fraction", "0.25"]), {})
    assert with_fraction.dp_settings().sampling_rate == 0.25  # type: ignore[union-attr]
    rounds = with_fraction.rounds_config("0" * 64, sampling_seed=99)
    assert (rounds.sampling_rate, rounds.fraction, rounds.seed) == (0.25, None, 99)
    plain = build_config(build_parser().parse_args(["--model", "m", *dp]), {})
    assert plain.dp_settings().sampling_rate == 1.0  # type: ignore[union-attr]
    assert build_config(build_parser().parse_args(["--model", "m"]), {}).dp_settings() is None


def test_adaptive_clipping_pays_for_its_count_within_z() -> None:
    z_sum = sum_noise_multiplier(1.0, 1.0)
    assert z_sum == pytest.approx(1 / 0.75 ** 0.5)
    assert z_sum ** -2 + (2 * 1.0) ** -2 == pytest.approx(1.0 ** -2)  # one mechanism of Z
    with pytest.raises(ConfigError, match=r"--dp-clip-count-noise 0\.5 must exceed half"):
        sum_noise_multiplier(1.0, 0.5)
    plain = DpSettings(clip=1.0, sampling_rate=1.0, delta=1e-5, noise_multiplier=1.0)
    assert plain.sum_noise(1.0) == 1.0


def test_adaptive_clipping_moves_c_to_the_target_quantile_of_the_norms() -> None:
    settings = DpSettings(clip=50.0, sampling_rate=1.0, delta=1e-5, noise_multiplier=1.0,
                          adaptive=True, clip_quantile=0.5, count_noise=1.0)
    norms = np.linspace(0.1, 10.0, 200)  # median 5.05
    clip = 50.0
    for r in range(300):
        unclipped = int((norms <= clip).sum())
        share, clip = next_clip(clip, unclipped, len(norms), settings, 1.0, len(norms), r)
    assert 4.0 < clip < 6.2, clip
    share, lower = next_clip(5.0, 200, 200, settings, 1.0, 200.0, 1)
    assert share > 0.95 and lower < 5.0  # nothing clipped: C shrinks
    share, higher = next_clip(5.0, 0, 200, settings, 1.0, 200.0, 1)
    assert share < 0.05 and higher > 5.0  # everything clipped: C grows
