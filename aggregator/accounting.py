"""Privacy accounting with Google's ``dp-accounting`` (the only module that imports it).

A DP round is a Poisson-subsampled Gaussian mechanism: each online client is in the
round's sample with probability q, and the clipped sum gets noise of multiplier Z. The
run is the composition of its noised rounds::

    ComposedDpEvent([PoissonSampledDpEvent(q_i, GaussianDpEvent(z_i)), ...])

(``SelfComposedDpEvent`` when every round has the same q and Z), and ε(δ) comes from the
RDP accountant (Rényi DP, Mironov 2017; conservative) or the PLD accountant (privacy loss
distributions, tighter). Anyone can recompute a run's ε from its history lines with the
same few lines of ``dp_accounting``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dp_accounting
from dp_accounting import pld, rdp

from edge_client.errors import ConfigError

#: the RDP accountant logs a warning for every order it cannot compute at large q
_ABSL = logging.getLogger("absl")


def event(rounds: Sequence[tuple[float, float]]) -> dp_accounting.DpEvent:
    """The DP event of noised rounds given as (sampling rate q, noise multiplier Z)."""
    if rounds and all(r == rounds[0] for r in rounds):
        q, z = rounds[0]
        return dp_accounting.SelfComposedDpEvent(_round_event(q, z), len(rounds))
    return dp_accounting.ComposedDpEvent([_round_event(q, z) for q, z in rounds])


def epsilon(rounds: Sequence[tuple[float, float]], delta: float, accountant: str) -> float:
    """ε at ``delta`` after ``rounds`` (0 before the first)."""
    if not rounds:
        return 0.0
    with _quiet():
        return float(_accountant(accountant).compose(event(rounds)).get_epsilon(delta))


def noise_multiplier(target_epsilon: float, delta: float, sampling_rate: float,
                     rounds: int) -> float:
    """The smallest Z (within 1e-4) for which ``rounds`` rounds at ``sampling_rate`` stay
    within ``target_epsilon`` at ``delta`` by the RDP accountant
    (``dp_accounting.calibrate_dp_mechanism``). RDP on purpose: calibrating with PLD took
    minutes here, and RDP's ε bounds PLD's from above, so the Z also keeps a PLD-accounted
    run within the target (with a little more noise than PLD alone would need).

    Raises:
        ConfigError: no Z up to 1000 reaches the target.
    """
    def make(z: float) -> dp_accounting.DpEvent:
        return event([(sampling_rate, z)] * rounds)
    with _quiet():
        try:
            return float(dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant, make, target_epsilon, delta,
                dp_accounting.ExplicitBracketInterval(1e-2, 1e3), tol=1e-4))
        except ValueError as e:
            raise ConfigError(f"--dp-epsilon {target_epsilon}: no noise multiplier reaches it "
                              f"in {rounds} rounds at q={sampling_rate}, δ={delta} ({e})"
                              ) from None


def _round_event(q: float, z: float) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(z)
    return gaussian if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian)


def _accountant(name: str) -> dp_accounting.PrivacyAccountant:
    return pld.PLDAccountant() if name == "pld" else rdp.RdpAccountant()


@contextmanager
def _quiet() -> Iterator[None]:
    level = _ABSL.level
    _ABSL.setLevel(logging.ERROR)
    try:
        yield
    finally:
        _ABSL.setLevel(level)
