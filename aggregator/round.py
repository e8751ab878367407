"""The round: every decision about updates, computed once, in one pure object.

A :class:`Round` owns the round state machine's state (:mod:`aggregator.schedule`), what
the open round counted (each accepted update's nonce, sample count, delta norm, metrics
and evaluation counts) and the round's traffic counts (its history line). Its aggregate
(:meth:`Round.delta`) folds the stored updates in acceptance order (memory O(model)),
each weighed and clipped within the round's influence bounds (:mod:`aggregator.bounds`).
The service hands it what arrives and carries out what it returns:

* :meth:`Round.admit` ``(update, now) -> Decision``: a re-sent update (same client,
  round and nonce as an accepted one) is accepted again without counting twice; any
  other update is checked once, cheapest first (identity, admission to the round,
  sample count, tensors), **stored through the journal port** and only then counted
  (its client marked accepted). A journal failure counts nothing.
* :meth:`Round.seen` (presence) and :meth:`Round.tick` (time passes) return the
  schedule's actions: announce, extend, aggregate, skip, finish.

With differential privacy (``dp_clip``), :meth:`Round.plan` is the DP plan of
:mod:`aggregator.privacy` (weight 1, clip to C) instead of the influence bounds, and
between rounds the run finishes when ``budget()`` says the next round cannot be paid for.

It does no I/O but through the journal (``AggregatorStore`` in the service, a dict in
unit tests) and takes the clock as an argument. The aggregate is folded from the same
stored bytes in the same order before and after a restart: bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aggregator import schedule
from aggregator.bounds import InfluenceBounds, Plan, plan
from aggregator.fedavg import Accumulator, Strategy
from aggregator.history import OpenRound
from aggregator.intake import received
from aggregator.privacy import dp_plan
from aggregator.reasons import Reason, Rejection
from aggregator.schedule import Action, Admitted, Announce, Event, Phase, RoundsConfig, RoundState
from aggregator.validation import (
    Counts,
    ReceivedUpdate,
    UpdateLimits,
    check_content,
    check_identity,
    delta_norm,
)
from edge_client.errors import FedgeError
from edge_client.protocol import TensorSpec, Update
from edge_client.score_counts import combine, scores_from_counts


class Journal(Protocol):
    """Where accepted updates are kept before they count (the state directory)."""

    def save_accepted(self, round_id: int, client_id: str, payload: bytes) -> None:
        """Persist an accepted update's wire bytes; raises OSError or FedgeError."""
        ...

    def accepted_payload(self, round_id: int, client_id: str) -> bytes | None:
        """The stored accepted update of ``client_id`` in ``round_id``, or None."""
        ...

    def accepted(self, round_id: int) -> list[tuple[str, bytes]]:
        """Every accepted update of ``round_id`` as (client id, wire bytes), in order."""
        ...


@dataclass(frozen=True)
class Decision:
    """What :meth:`Round.admit` decided about one update.

    Attributes:
        accepted: whether the update counts (or, when ``resent``, already counted).
        rejection: why not, when not accepted.
        resent: the same update was accepted before; answer "accepted" again.
        stored: False when the journal failed: the update must not be acknowledged, so
            the broker keeps it and redelivers it.
        actions: what the schedule does now (e.g. aggregate: every selected client is in).
    """

    accepted: bool
    rejection: Rejection | None = None
    resent: bool = False
    stored: bool = True
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class _Counted:
    nonce: str
    num_samples: int
    metrics: Mapping[str, float]
    norm: float


class Round:
    """The federation's round in progress; see the module docstring."""

    def __init__(self, config: RoundsConfig, strategy: Strategy, spec: tuple[TensorSpec, ...],
                 limits: UpdateLimits, journal: Journal, state: RoundState | None = None, *,
                 now: float = 0.0, bounds: InfluenceBounds | None = None,
                 dp_clip: float | None = None,
                 budget: Callable[[], bool] | None = None) -> None:
        """A round in ``state`` (a fresh run when None), nothing counted; ``now`` is when
        its traffic counts start when it is restored mid-way; ``bounds`` limit one
        party's influence (:mod:`aggregator.bounds`; default factors 3); ``dp_clip``:
        client-level DP's clip C (the bounds are then unused); ``budget``: whether the
        privacy budget pays for another round."""
        self.config, self.strategy, self.spec, self.limits = config, strategy, spec, limits
        self.journal = journal
        self.bounds = bounds or InfluenceBounds()
        self.dp_clip, self.budget = dp_clip, budget
        self.state = state or schedule.initial_state()
        #: clients online when the open round was sampled (restored: as round.json says)
        self.population = len(self.state.online)
        self._counted: dict[str, _Counted] = {}
        self._evaluation: Counts | None = None
        self._sites_evaluated = 0
        self._base_version = self.state.weights_version
        self.traffic = OpenRound(self.state.round_id, tuple(sorted(self.state.selected)),
                                 self._started_at(now))

    # -- events ---------------------------------------------------------------
    def admit(self, update: ReceivedUpdate, now: float) -> Decision:
        """Decide about one update (see the module docstring)."""
        if self._resent(update):
            return Decision(True, resent=True)
        rejection: Rejection | None = (
            check_identity(update, self.config.federation, self.config.model_sha256,
                           self.config.run_id)
            or schedule.admission(self.state, update.client_id, update.round_id,
                                  update.base_version))
        norm, evaluation = 0.0, None
        if rejection is None:  # the norm is checked here and bounds the delta at close
            norm = delta_norm(update.delta)
            rejection = check_content(update, self.spec, self.limits, norm)
        if rejection is None:
            evaluation, rejection = self._with_evaluation(update)
        if rejection is not None:
            self.count_rejection(rejection.reason)
            return Decision(False, rejection)
        try:
            self.journal.save_accepted(update.round_id, update.client_id, update.payload)
        except (OSError, FedgeError) as e:
            self.count_rejection(Reason.STORE)
            return Decision(False, Rejection(Reason.STORE, str(e)), stored=False)
        return Decision(True, actions=self._count(update, now, norm, evaluation))

    def seen(self, client_id: str, online: bool, now: float) -> tuple[Action, ...]:
        """A client's presence changed."""
        return self._step(schedule.Presence(client_id, online), now)

    def tick(self, now: float) -> tuple[Action, ...]:
        """Time passed: deadlines are checked against ``now``; a waiting round may open."""
        return self._step(schedule.Tick(), now)

    def restore(self, stored: Iterable[ReceivedUpdate], now: float) -> tuple[Action, ...]:
        """Re-count the open round's stored updates, in acceptance order, after a restart.

        An update stored but not yet listed in the state (a crash between the two
        writes) counts now; the actions that causes are returned to carry out.
        """
        actions: tuple[Action, ...] = ()
        for update in stored:
            norm, (evaluation, _) = delta_norm(update.delta), self._with_evaluation(update)
            if update.client_id in self.state.accepted:
                self._fold(update, norm, evaluation)
            else:
                actions += self._count(update, now, norm, evaluation)
        return actions

    # -- what the round holds ---------------------------------------------------
    @property
    def finished(self) -> bool:
        """Whether the last round has closed."""
        return self.state.phase is Phase.FINISHED

    @property
    def participants(self) -> tuple[str, ...]:
        """Clients counted in the round, sorted."""
        return tuple(sorted(self._counted))

    @property
    def samples(self) -> int:
        """Training examples behind the counted updates (as claimed, before any cap)."""
        return sum(c.num_samples for c in self._counted.values())

    def metrics(self) -> dict[str, float]:
        """Each client metric averaged over the updates reporting it, weighted by samples."""
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for c in self._counted.values():
            for name, value in c.metrics.items():
                sums[name] = sums.get(name, 0.0) + value * c.num_samples
                weights[name] = weights.get(name, 0.0) + c.num_samples
        return {name: sums[name] / weights[name] for name in sorted(sums)}

    def plan(self) -> Plan:
        """The weights and delta scales :meth:`delta` uses (:func:`aggregator.bounds.plan`,
        or :func:`aggregator.privacy.dp_plan` with DP)."""
        if self.dp_clip is not None:
            return dp_plan(self.dp_clip, {c: u.norm for c, u in self._counted.items()})
        return plan(self.bounds, {c: u.num_samples for c, u in self._counted.items()},
                    {c: u.norm for c, u in self._counted.items()}, self.limits.max_num_samples)

    def delta(self) -> Mapping[str, npt.NDArray[np.float64]]:
        """The aggregate of the counted updates, each weighed and clipped as :meth:`plan`
        says, folded from the journal in acceptance order (memory O(model) for the means).

        Raises:
            ValidationError: nothing was counted.
        """
        bounded = self.plan()
        acc: Accumulator = self.strategy.accumulator()
        for client_id, payload in self.journal.accepted(self.traffic.round_id):
            if client_id not in self._counted:
                continue
            delta = received(Update.decode(payload), payload).delta
            scale = bounded.scales[client_id]
            if scale < 1.0:
                delta = {k: v * np.float32(scale) for k, v in delta.items()}
            acc.add(delta, bounded.weights[client_id])
        return acc.result()

    def count_bytes(self, size: int) -> None:
        """A message of ``size`` bytes arrived during the round."""
        self.traffic.bytes_in += size

    def count_sent(self, size: int) -> None:
        """A message of ``size`` bytes was published during the round."""
        self.traffic.bytes_out += size

    def count_rejection(self, reason: Reason) -> None:
        """One more rejection of ``reason`` in the round's history line."""
        self.traffic.rejections[reason.value] += 1

    def record(self, outcome: str, version: int, now: float) -> dict[str, Any]:
        """The history line of the round closing with ``outcome`` (see :class:`OpenRound`)."""
        summary: dict[str, Any] = {"participants": list(self.participants),
                                   "samples": self.samples, "metrics": self.metrics()}
        if self._counted:
            summary["bounds"] = self.plan().report()
        if self._evaluation is not None:  # the round's base model, on every site's test data
            summary["evaluation"] = {"of_version": self._base_version,
                                     "sites": self._sites_evaluated,
                                     **scores_from_counts(self._evaluation)}
        return self.traffic.record(summary, outcome, version, now)

    # -- inside -------------------------------------------------------------------
    def _count(self, update: ReceivedUpdate, now: float, norm: float,
               evaluation: Counts | None) -> tuple[Action, ...]:
        actions = self._step(Admitted(update.client_id), now)
        self._fold(update, norm, evaluation)
        return actions

    def _with_evaluation(self, update: ReceivedUpdate) -> tuple[Counts | None, Rejection | None]:
        """The round's evaluation counts with ``update``'s added, or why they cannot be."""
        if update.evaluation is None or self._evaluation is None:
            return update.evaluation or self._evaluation, None
        try:
            return combine(self._evaluation, update.evaluation), None  # type: ignore[arg-type]
        except FedgeError as e:
            return None, Rejection(Reason.EVALUATION, f"evaluation counts of "
                                   f"{update.client_id!r} do not add to the round's: {e}")

    def _fold(self, update: ReceivedUpdate, norm: float, evaluation: Counts | None) -> None:
        """Counts ``update``: its delta ``norm``, and ``evaluation``, the round's counts with
        its own added (:meth:`_with_evaluation`)."""
        if update.evaluation is not None:
            self._evaluation = evaluation
            self._sites_evaluated += 1
        self._counted[update.client_id] = _Counted(update.nonce, update.num_samples,
                                                   dict(update.metrics), norm)

    def _step(self, event: Event, now: float) -> tuple[Action, ...]:
        if self.state.phase is Phase.WAITING and self.budget is not None and not self.budget():
            self.state, actions = schedule.finish(self.state)
            return actions
        self.state, actions = schedule.step(self.config, self.state, event, now)
        for action in actions:
            if isinstance(action, Announce):  # a new round: nothing counted, fresh counts
                self._counted = {}
                self._evaluation, self._sites_evaluated = None, 0
                self._base_version = action.base_version
                self.population = len(self.state.online)
                self.traffic = OpenRound(action.round_id, action.selected, now)
        return actions

    def _resent(self, update: ReceivedUpdate) -> bool:
        if update.round_id == self.traffic.round_id and update.client_id in self._counted:
            return self._counted[update.client_id].nonce == update.nonce
        if not 1 <= update.round_id <= self.state.round_id:
            return False
        stored = self.journal.accepted_payload(update.round_id, update.client_id)
        return stored is not None and Update.decode(stored).nonce.hex() == update.nonce

    def _started_at(self, now: float) -> float:
        s = self.state
        if s.deadline is None:
            return now
        return s.deadline - self.config.round_timeout * (2 if s.extended else 1)
