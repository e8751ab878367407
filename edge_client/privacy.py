"""The device's record-level privacy: its DP-SGD settings, its plan for a round and its
ledger (``STATE/privacy.json``).

A device that trains with ``train_dp`` (``fedge-client --dp-budget E --dp-delta D
--dp-noise-multiplier Z``) spends privacy *of its own records* every round it trains:
``steps`` DP-SGD steps, each a Poisson sample of its training examples at rate
q = L / n (L the expected batch, n the local training examples) with noise multiplier Z.
The ledger lists every round trained (its run, round, q, Z, steps, clip) and ε after it,
by the RDP accountant of :mod:`edge_client.rdp`; it is written (atomically, fsync) before
the round is trained, so a crash never forgets a spend, and a round already in it is not
charged again when it is trained again after a restart (its first result never left the
device: an update leaves only once it is in the outbox, written after training).
Before each round the device checks that ε after it stays ≤ E; if not, it declines.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_client import rdp
from edge_client.errors import ConfigError
from edge_client.files import atomic_write

LEDGER_FILE = "privacy.json"
FORMAT = "fedge-device-privacy/1"
#: the default expected batch keeps a step's Poisson sample within the file's fixed batch
#: but for this share of steps (cut down at random then: a small departure from the
#: accountant's Poisson sampling, counted in the update's ``dp_truncated_steps``)
MAX_OVERFLOW = 1e-3


def overflow(expected: int, capacity: int) -> float:
    """P(Poisson(expected) > capacity): the share of steps whose sample is cut down."""
    term = total = math.exp(-expected)
    for k in range(1, capacity + 1):
        term *= expected / k
        total += term
    return max(0.0, 1.0 - total)


def default_batch(capacity: int) -> int:
    """The largest expected batch L ≤ capacity / 2 whose overflow is ≤ MAX_OVERFLOW (≥ 1):
    16 for the usual batch of 32, 2 for a batch of 8."""
    return max([1] + [b for b in range(1, capacity // 2 + 1)
                      if overflow(b, capacity) <= MAX_OVERFLOW])


@dataclass(frozen=True)
class DpSgdSettings:
    """Record-level DP-SGD of one device (``fedge-client --dp-*``)."""

    budget: float  # ε this device may spend over every round it ever trains
    delta: float
    noise_multiplier: float
    clip: float = 1.0  # per-example L2 clip norm
    expected_batch: int | None = None  # L; None: default_batch(the file's fixed batch)

    def __post_init__(self) -> None:
        if not (self.budget > 0 and 0 < self.delta < 1 and self.noise_multiplier > 0
                and self.clip > 0 and (self.expected_batch is None or self.expected_batch > 0)):
            raise ConfigError(f"DP-SGD needs --dp-budget > 0, 0 < --dp-delta < 1, "
                              f"--dp-noise-multiplier > 0, --dp-clip > 0, --dp-batch >= 1; "
                              f"got {self}")


@dataclass(frozen=True)
class Spend:
    """One trained round in the ledger."""

    run_id: str
    round_id: int
    sampling_rate: float
    noise_multiplier: float
    steps: int
    clip: float
    expected_batch: int
    epsilon: float  # ε of the whole ledger after this round, at ``delta``
    delta: float
    at: float

    @property
    def key(self) -> tuple[str, int]:
        return self.run_id, self.round_id


def plan(settings: DpSgdSettings, *, samples: int, capacity: int, epochs: int,
         run_id: str, round_id: int) -> Spend:
    """The spend of training one round: L = the expected batch (``--dp-batch``, else
    :func:`default_batch`; ≤ the file's fixed batch ``capacity`` and ≤ ``samples``),
    q = L / samples, ``epochs`` × ⌈samples / L⌉ steps (each example is expected in
    ``epochs`` batches, as in plain training). ``epsilon``
    is left 0: :meth:`PrivacyLedger.after` fills it in."""
    if samples < 1:
        raise ConfigError("DP-SGD needs at least one local training example")
    wanted = settings.expected_batch or default_batch(capacity)
    if wanted > capacity:
        raise ConfigError(f"--dp-batch {wanted} exceeds the model file's batch {capacity}")
    batch = min(wanted, samples)
    return Spend(run_id, round_id, batch / samples, settings.noise_multiplier,
                 epochs * math.ceil(samples / batch), settings.clip, batch, 0.0,
                 settings.delta, time.time())


@dataclass(frozen=True)
class Declined:
    """A round the device does not train: it would take ε above the budget."""

    spent: float  # ε before the round
    after: float  # ε had it trained the round
    budget: float
    delta: float

    @property
    def message(self) -> str:
        return (f"privacy budget: training this round would take this device's epsilon from "
                f"{self.spent:.4g} to {self.after:.4g}, over its budget {self.budget:g} "
                f"(delta {self.delta:g})")


class PrivacyLedger:
    """``STATE/privacy.json``: the rounds this device trained with DP-SGD (module docstring)."""

    def __init__(self, path: Path, delta: float) -> None:
        """Reads the ledger at ``path`` (an absent file is an empty ledger).

        Raises:
            ConfigError: the file is unreadable or not a ledger; it is never reset, since
                forgetting it would forget the spent budget.
        """
        self.path, self.delta = path, delta
        self.spends: list[Spend] = read_spends(path)

    def epsilon(self, extra: Spend | None = None) -> float:
        """ε at the ledger's delta over every spend (and ``extra``)."""
        spends = [*self.spends, *([] if extra is None else [extra])]
        return rdp.epsilon([(s.sampling_rate, s.noise_multiplier, s.steps) for s in spends],
                           self.delta)

    def find(self, run_id: str, round_id: int) -> Spend | None:
        """The spend of that round, if it was charged already."""
        return next((s for s in self.spends if s.key == (run_id, round_id)), None)

    def after(self, spend: Spend) -> Spend:
        """``spend`` with ``epsilon`` = the ledger's ε once it is added."""
        return Spend(**{**asdict(spend), "epsilon": self.epsilon(spend), "delta": self.delta})

    def charge(self, settings: DpSgdSettings, *, samples: int, capacity: int, epochs: int,
               run_id: str, round_id: int) -> Spend | Declined:
        """The spend of training this round, recorded before it trains; the recorded one if
        the round was charged already (trained again after a restart: its first result
        never left the device); :class:`Declined` when it would exceed the budget."""
        charged = self.find(run_id, round_id)
        if charged is not None:
            return charged
        spend = self.after(plan(settings, samples=samples, capacity=capacity, epochs=epochs,
                                run_id=run_id, round_id=round_id))
        if spend.epsilon > settings.budget:
            return Declined(self.epsilon(), spend.epsilon, settings.budget, self.delta)
        self.record(spend)
        return spend

    def record(self, spend: Spend) -> None:
        """Adds ``spend`` and writes the file (atomically, fsync) before anything trains."""
        self.spends.append(spend)
        doc = {"format": FORMAT, "delta": self.delta, "rounds": [asdict(s) for s in self.spends]}
        atomic_write(self.path, json.dumps(doc, indent=1).encode())


def read_spends(path: Path) -> list[Spend]:
    """The spends in the ledger file at ``path`` ([] when absent).

    Raises:
        ConfigError: unreadable, or not a device privacy ledger.
    """
    if not path.exists():
        return []
    try:
        doc: Any = json.loads(path.read_bytes())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT!r}")
        return [Spend(**entry) for entry in doc["rounds"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"{path}: not a readable privacy ledger ({e}); it is never reset "
                          "on its own: deleting it forgets the privacy this device spent"
                          ) from None


def describe(path: Path, delta: float | None) -> str:
    """The ledger as text, for ``fedge-client --privacy``; ε recomputed at ``delta``
    (None: the ledger's own)."""
    spends = read_spends(path)
    if not spends:
        return f"{path}: no round trained with DP-SGD yet (ε = 0)\n"
    stored = json.loads(path.read_bytes())["delta"]
    ledger_delta = stored if delta is None else delta
    lines = [f"{path}: {len(spends)} round(s) trained with DP-SGD, accountant rdp, "
             f"δ = {ledger_delta:g}",
             f"{'run':<18}{'round':>6}{'q':>10}{'z':>8}{'steps':>7}{'clip':>7}{'epsilon':>10}"]
    for s in spends:
        lines.append(f"{s.run_id or '-':<18}{s.round_id:>6}{s.sampling_rate:>10.4g}"
                     f"{s.noise_multiplier:>8.4g}{s.steps:>7}{s.clip:>7.3g}{s.epsilon:>10.4f}")
    total = rdp.epsilon([(s.sampling_rate, s.noise_multiplier, s.steps) for s in spends],
                        ledger_delta)
    lines.append(f"epsilon spent: {total:.4f} at delta {ledger_delta:g}")
    return "\n".join(lines) + "\n"
