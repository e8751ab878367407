"""The aggregator's privacy ledger: ``STATE/privacy.json``, the budget a run has spent.

One entry per noised round, written (atomically, fsync) **before** the round's noise is
drawn and so before its version can be published. The entry holds everything the noise
depends on (its 128-bit seed, Z, C, the fixed denominator), so a round aggregated again
after a crash (``kill -9`` between noising and publishing) finds its entry, spends
nothing more and draws the same noise: the same bytes are published, once counted.

The ledger also keeps the run's secret sampling seed: with DP on, the Poisson sample of
each round is drawn from it, not from the public ``--seed``.

ε is recomputed from the entries with :mod:`aggregator.accounting` (the accountant the
run was started with), never summed, so the file can be audited: every entry's (q, Z)
and δ are there.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aggregator import accounting
from aggregator.privacy import DpSettings, Noise, expected_clients, next_clip, report
from edge_client.errors import ConfigError
from edge_client.files import atomic_write

log = logging.getLogger(__name__)

LEDGER_FILE = "privacy.json"


@dataclass(frozen=True)
class Spent:
    """One noised round in the ledger."""

    round: int
    sampling_rate: float
    noise_multiplier: float  # Z, what the accountant charges
    clip: float  # C of this round
    expected_clients: float
    seed: str  # hex of the noise seed
    epsilon: float  # the run's ε once this round is spent
    participants: list[str]  # whose clipped updates the noise was added to
    sum_noise_multiplier: float  # z_Δ of the sum (Z without adaptive clipping)
    unclipped_share: float | None = None  # adaptive clipping: the noised share released
    next_clip: float | None = None  # adaptive clipping: C of the next round

    def noise(self) -> Noise:
        """The noise this entry stands for."""
        return Noise(int(self.seed, 16), self.sum_noise_multiplier, self.clip,
                     self.expected_clients)


class PrivacyLedger:
    """The spent budget of one state directory (see the module docstring)."""

    def __init__(self, root: Path, settings: DpSettings, noise_multiplier: float, *,
                 random_bits: Callable[[int], int] = secrets.randbits) -> None:
        """Open (or begin) ``root/privacy.json``; rounds from now on use ``settings`` and Z.

        Raises:
            ConfigError: the file is unreadable, or was begun with another δ or accountant.
        """
        self.path = Path(root) / LEDGER_FILE
        self.settings, self.noise_multiplier = settings, noise_multiplier
        self._bits = random_bits
        self.entries: list[Spent] = []
        self.sampling_seed = random_bits(63)
        self._affordable: bool | None = None
        if self.path.exists():
            self._load()
        else:
            self._write()

    # -- what the run spent --------------------------------------------------------
    @property
    def clip(self) -> float:
        """C of the next round: ``--dp-clip``, or where adaptive clipping has moved it."""
        last = self.entries[-1].next_clip if self.entries else None
        return self.settings.clip if last is None or not self.settings.adaptive else last

    @property
    def epsilon(self) -> float:
        """ε spent so far (0 before the first noised round)."""
        return self.entries[-1].epsilon if self.entries else 0.0

    def affordable(self) -> bool:
        """Whether one more noised round keeps ε within the target (True without one)."""
        if self.settings.target_epsilon is None:
            return True
        if self._affordable is None:
            after = accounting.epsilon([*self._rounds(), self._next()], self.settings.delta,
                                       self.settings.accountant)
            self._affordable = after <= self.settings.target_epsilon
        return self._affordable

    def has(self, round_id: int) -> bool:
        """Whether ``round_id`` was spent (a crash came before its version was recorded)."""
        return any(e.round == round_id for e in self.entries)

    def spend(self, round_id: int, population: int, participants: list[str],
              unclipped: int = 0) -> Noise:
        """The noise of ``round_id`` over ``participants``: recorded now (fsync) unless the
        ledger has it already for the same participants (a round aggregated again after a
        crash), which costs nothing more. With adaptive clipping, ``unclipped`` (how many
        of them needed no clipping) is released noised and sets the next round's C. Other
        participants would make it another release of the round: it is spent again, with
        fresh noise (the service closes a restored spent round before taking any update,
        so this should not happen).

        Raises:
            OSError: the ledger could not be written; nothing may be published then.
        """
        for entry in reversed(self.entries):
            if entry.round == round_id and entry.participants == participants:
                log.info("privacy: round %d was already spent (ε %.4g); its noise is replayed",
                         round_id, entry.epsilon)
                return entry.noise()
            if entry.round == round_id:
                log.error("privacy: round %d was spent for %s, now aggregates %s: spending "
                          "it again", round_id, entry.participants, participants)
        q, z = self._next()
        eps = accounting.epsilon([*self._rounds(), (q, z)], self.settings.delta,
                                 self.settings.accountant)
        seed, expected, clip = self._bits(128), expected_clients(q, population), self.clip
        share, following = next_clip(clip, unclipped, len(participants), self.settings, z,
                                     expected, seed) if self.settings.adaptive else (None, None)
        entry = Spent(round_id, q, z, clip, expected, f"{seed:032x}", eps, list(participants),
                      self.settings.sum_noise(z), share, following)
        self.entries.append(entry)
        self._affordable = None
        self._write()
        log.info("privacy: round %d spent, ε %.4g at δ %g (%s)", round_id, eps,
                 self.settings.delta, self.settings.accountant)
        return entry.noise()

    def report(self) -> dict[str, Any]:
        """The ``dp`` field of a history line: ε spent so far and its parameters, plus ε
        for a reader who knows which devices each round sampled (q = 1)."""
        row = report(self.settings, self.noise_multiplier, self.epsilon, len(self.entries))
        if self.entries:
            last = self.entries[-1]
            row["clip"] = last.clip  # the C of the latest noised round
            if self.settings.adaptive:
                row["adaptive_clip"] = {"unclipped_share": last.unclipped_share,
                                        "next_clip": last.next_clip,
                                        "quantile": self.settings.clip_quantile,
                                        "sum_noise_multiplier": last.sum_noise_multiplier}
        row["epsilon_without_sampling"] = accounting.epsilon(
            [(1.0, z) for _, z in self._rounds()], self.settings.delta,
            self.settings.accountant)
        return row

    # -- inside --------------------------------------------------------------------------
    def _rounds(self) -> list[tuple[float, float]]:
        return [(e.sampling_rate, e.noise_multiplier) for e in self.entries]

    def _next(self) -> tuple[float, float]:
        return self.settings.sampling_rate, self.noise_multiplier

    def _write(self) -> None:
        data = {"delta": self.settings.delta, "accountant": self.settings.accountant,
                "sampling_seed": self.sampling_seed,
                "rounds": [asdict(e) for e in self.entries]}
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            delta, accountant = float(data["delta"]), str(data["accountant"])
            self.sampling_seed = int(data["sampling_seed"])
            self.entries = [Spent(**e) for e in data["rounds"]]
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{self.path}: unreadable privacy ledger ({e!r}); it is the "
                              "record of the budget spent: restore it, do not delete it"
                              ) from None
        if (delta, accountant) != (self.settings.delta, self.settings.accountant):
            raise ConfigError(f"{self.path}: this run accounts with --dp-delta {delta} and "
                              f"--dp-accountant {accountant}; give the same ones")
