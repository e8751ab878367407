"""Per-round statistics of ``fedge simulate``: the aggregator's history joined with device events.

A round's row has the layout of the demo's ``rounds`` (``tools/demo/report.py``), with
``accuracy`` and ``loss`` null (simulated devices do not evaluate); ``rejections`` are the
aggregator's counts while the round was open (including chunks it could not attribute).
Added from what the devices saw: ``selected``, ``sent`` (devices that published a complete
update), ``resent`` (re-sends after ``resend_after`` without a reply), ``received``
(replies to the round's updates), ``already_accepted`` (copies answered "already
accepted", not counted again), ``replies_rejected`` (rejections by reason code, from the
replies, whenever they came) and the faults drawn (``dropout``, ``slow``, ``crashed``,
``duplicate``; ``crashed_ids`` names the devices that vanished mid-upload).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

ALREADY_ACCEPTED = "already accepted"


def device_counts(events: Iterable[dict[str, Any]]
                  ) -> tuple[dict[int, Counter[str]], dict[int, list[str]]]:
    """Round id → counts of what the devices did and were told; round id → crashed ids."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    crashed: dict[int, list[str]] = defaultdict(list)
    for e in events:
        if "round" not in e or e["event"] == "floor":
            continue
        c = counts[int(e["round"])]
        kind = e["event"]
        if kind == "plan":
            for fault in ("dropout", "slow", "duplicate"):
                c[fault] += bool(e[fault])
        elif kind == "sent":
            c["sent"] += 1
        elif kind == "crashed":
            c["crashed"] += 1
            crashed[int(e["round"])].append(e["client"])
        elif kind == "resent":
            c["resent"] += 1
        elif kind == "reply":
            c["received"] += 1
            c["already_accepted"] += e["reason"] == ALREADY_ACCEPTED
            if not e["accepted"]:
                c["rejected:" + str(e["reason"]).split(":", 1)[0]] += 1
    return counts, crashed


def round_row(row: dict[str, Any], counts: Counter[str], crashed: list[str]) -> dict[str, Any]:
    """One round in the demo's layout, plus the device-side counts."""
    participants = list(row.get("participants", []))
    return {
        "round": row["round"], "outcome": row.get("outcome"), "version": row.get("version"),
        "participants": len(participants), "participant_ids": participants,
        "samples": row.get("samples", 0), "accuracy": None, "loss": None, "clients": {},
        "client_metrics": row.get("metrics", {}), "bytes_up": row.get("bytes_in", 0),
        "bytes_down": row.get("bytes_out", 0), "rejections": row.get("rejections", {}),
        "duration_s": row.get("duration_s"), "selected": len(row.get("selected", [])),
        "sent": counts["sent"], "resent": counts["resent"], "received": counts["received"],
        "already_accepted": counts["already_accepted"],
        "replies_rejected": {k.split(":", 1)[1]: v for k, v in sorted(counts.items())
                             if k.startswith("rejected:")},
        "faults": {"dropout": counts["dropout"], "slow": counts["slow"],
                   "crashed": counts["crashed"], "duplicate": counts["duplicate"]},
        "crashed_ids": sorted(crashed), "dp": row.get("dp"),
    }


def rows_of(history: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every closed round as a row."""
    counts, crashed = device_counts(events)
    return [round_row(h, counts.get(int(h["round"]), Counter()), crashed.get(int(h["round"]), []))
            for h in history]


HEADER = (f"{'round':>5} {'outcome':>10} {'selected':>8} {'sent':>5} {'resent':>6} "
          f"{'received':>8} {'accepted':>8} {'again':>5} {'drop':>4} {'slow':>4} {'crash':>5} "
          f"{'dup':>4} {'seconds':>7}  rejected (replies | aggregator)")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def format_row(r: dict[str, Any]) -> str:
    """One line of the per-round table; ``again``: copies answered "already accepted"."""
    f = r["faults"]
    return (f"{r['round']:>5} {r['outcome']!s:>10} {r['selected']:>8} {r['sent']:>5} "
            f"{r['resent']:>6} {r['received']:>8} {r['participants']:>8} "
            f"{r['already_accepted']:>5} {f['dropout']:>4} {f['slow']:>4} {f['crashed']:>5} "
            f"{f['duplicate']:>4} {r['duration_s'] or 0:>7.2f}  "
            f"{_counts(r['replies_rejected'])} | {_counts(r['rejections'])}")


def summary(rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The ``final`` block: no accuracy (not evaluated), traffic totals, wall time."""
    return {"accuracy": None, "loss": None,
            "bytes_up_total": sum(r["bytes_up"] for r in rows),
            "bytes_down_total": sum(r["bytes_down"] for r in rows),
            "accepted_total": sum(r["participants"] for r in rows),
            "wall_s": round(wall_s, 2)}
