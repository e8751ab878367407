"""What ``fedge status`` shows: the retained messages of one federation, as text or JSON.

A :class:`Snapshot` holds the last manifest, round, status and presence messages read
from the broker; :func:`render` and :func:`as_json` turn it into what a user reads.
Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_client.protocol import Manifest, Presence, Round, Status


@dataclass
class Snapshot:
    """The retained state of a federation, as far as it has been read."""

    federation: str
    manifest: Manifest | None = None
    round: Round | None = None
    status: Status | None = None
    presence: dict[str, Presence] = field(default_factory=dict)

    @property
    def online(self) -> list[str]:
        """Client ids whose retained presence says online, sorted."""
        return sorted(c for c, p in self.presence.items() if p.online)

    @property
    def finished(self) -> str:
        """Why the run finished, or ``""`` while it runs (or nothing is known)."""
        m, s = self.manifest, self.status
        return (m.finished if m else "") or (s.finished if s else "")


def as_json(snap: Snapshot, now: float) -> dict[str, Any]:
    """The snapshot as a JSON-able dict (the ``--json`` output)."""
    m, r, s = snap.manifest, snap.round, snap.status
    out: dict[str, Any] = {
        "federation": snap.federation, "run_id": (m.run_id if m else None),
        "finished": snap.finished or None,
        "weights_version": m.weights_version if m else None,
        "model_sha256": m.model_sha256 if m else None,
        "signed": (m.signature is not None) if m else None,
        "online": snap.online, "round": None, "status": None,
    }
    if r is not None:
        out["round"] = {"round_id": r.round_id, "run_id": r.run_id,
                        "base_version": r.weights_version,
                        "deadline_in_s": round(r.deadline - now, 1),
                        "selected": list(r.selected) if r.selected is not None else None,
                        "fraction": r.fraction, "codec": r.codec}
    if s is not None:
        out["status"] = {"phase": s.phase, "round_id": s.round_id, "selected": s.selected,
                         "accepted": s.accepted, "rejected": dict(s.rejected),
                         "online": s.online, "last_round": dict(s.last_round),
                         "age_s": round(now - s.updated_at, 1)}
    return out


def render(snap: Snapshot, now: float) -> str:
    """The snapshot as lines of terminal text."""
    m, r, s = snap.manifest, snap.round, snap.status
    if m is None and s is None:
        return (f"federation {snap.federation}: no manifest on the broker (no aggregator has "
                "run this federation here, or the topic prefix differs)")
    lines = [f"federation {snap.federation}   run {m.run_id if m and m.run_id else '-'}"
             + (f"   FINISHED ({snap.finished})" if snap.finished else "")]
    if m is not None:
        lines.append(f"global model  version {m.weights_version}   model {m.model_sha256[:12]}…"
                     f"   {'signed' if m.signature else 'UNSIGNED'}")
    if s is not None:
        lines.append(_round_line(s, r, now))
        if s.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected.items()))
            lines.append(f"rejected      {reasons}")
        if "dp_epsilon" in s.last_round:  # client-level DP: the budget spent so far
            lines.append(f"privacy       epsilon {_number(s.last_round['dp_epsilon'])} spent "
                         "(client-level DP, docs/privacy.md)")
        if s.last_round:
            lines.append("last round    " + "  ".join(
                f"{k} {_number(v)}" for k, v in sorted(s.last_round.items())))
    elif r is not None:
        lines.append(f"round {r.round_id}      open, deadline in {r.deadline - now:.0f} s")
    online = snap.online
    lines.append(f"online        {len(online)}" + (f": {' '.join(online[:20])}" if online else "")
                 + (" …" if len(online) > 20 else ""))
    if s is not None:
        lines.append(f"(aggregator status {now - s.updated_at:.0f} s old)")
    return "\n".join(lines)


def _round_line(s: Status, r: Round | None, now: float) -> str:
    if s.phase == "collecting":
        deadline = f"deadline in {max(0.0, s.deadline - now):.0f} s"
        return (f"round {s.round_id:<7} collecting   {deadline}   selected {s.selected}   "
                f"accepted {s.accepted}   rejected {sum(s.rejected.values())}")
    if s.phase == "finished":
        return f"round {s.round_id:<7} finished"
    return f"round {s.round_id:<7} waiting for clients ({s.online} online)"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
