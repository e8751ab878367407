"""Rényi-DP accounting of the Poisson-sampled Gaussian mechanism, with ``math`` alone.

The device's DP-SGD steps are sampled Gaussian mechanisms: each local example is in a
step's batch with probability q, the clipped sum gets Gaussian noise of multiplier z.
For an integer order α the RDP of one step is (Mironov, Talwar and Zhang 2019, the
binomial expansion; ``compute_rdp`` of tensorflow_privacy and ``dp_accounting``)::

    RDP(α) = log A_α / (α − 1),
    A_α = Σ_{i=0..α} C(α, i) (1 − q)^(α−i) q^i exp((i² − i) / (2 z²))

(α / (2 z²) when q = 1). RDP adds up over steps; ε(δ) is the minimum over the orders of
the conversion of Canonne, Kamath and Steinke 2020 (Proposition 12), as ``dp_accounting``
does. The edge device needs neither scipy nor ``dp-accounting``; a test checks this module
against ``dp_accounting.rdp.RdpAccountant`` on the same orders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: integer orders (those of dp_accounting's default list that are integers)
ORDERS: tuple[int, ...] = (*range(2, 64), 128, 256, 512, 1024)


def _log_add(a: float, b: float) -> float:
    low, high = min(a, b), max(a, b)
    if low == -math.inf:
        return high
    return math.log1p(math.exp(low - high)) + high


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def step_rdp(q: float, z: float, alpha: int) -> float:
    """RDP at integer order ``alpha`` of one step: sampling rate ``q``, noise multiplier ``z``."""
    if not 0.0 <= q <= 1.0 or z < 0 or alpha < 2:
        raise ValueError(f"need 0 <= q <= 1, z >= 0, integer alpha >= 2; got {q=}, {z=}, "
                         f"{alpha=}")
    if q == 0.0:
        return 0.0
    if z == 0.0:
        return math.inf
    if q == 1.0:
        return alpha / (2 * z * z)
    log_a, log_q, log_1mq = -math.inf, math.log(q), math.log1p(-q)
    for i in range(alpha + 1):
        term = _log_comb(alpha, i) + i * log_q + (alpha - i) * log_1mq
        log_a = _log_add(log_a, term + (i * i - i) / (2 * z * z))
    return log_a / (alpha - 1)


def rdp(steps: Sequence[tuple[float, float, int]],
        orders: Sequence[int] = ORDERS) -> list[float]:
    """The RDP per order of ``steps`` given as (q, z, number of steps) groups."""
    return [sum(n * step_rdp(q, z, a) for q, z, n in steps) for a in orders]


def epsilon(steps: Sequence[tuple[float, float, int]], delta: float,
            orders: Sequence[int] = ORDERS) -> float:
    """ε at ``delta`` after ``steps`` ((q, z, count) groups); 0 before any step."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    best = math.inf
    for a, r in zip(orders, rdp(steps, orders), strict=True):
        if r < 0 or delta * delta + math.expm1(-r) > 0:
            return 0.0  # as dp_accounting: the KL bound already gives ε = 0
        best = min(best, r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return max(0.0, best)
