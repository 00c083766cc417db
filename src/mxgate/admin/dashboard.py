"""What the dashboard shows, computed without HTTP: lock-down status per accepted domain, the
accepted/refused/quarantined-per-minute chart (drawn here as SVG, no JavaScript), the top refused
source addresses, and the nodes with the policy version each enforces.

Owns: the rule for "covered" (mail-flow.md §3.2: an enabled partner connector restricting by IP
or certificate, whose sender_domains include `*` and whose associated domains include this one)
and the chart's drawing. Must not know templates beyond returning markup-safe SVG text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape
from typing import Any

from sqlalchemy import Integer, func, select

from mxgate.policy.attribution import _covers_recipient
from mxgate.policy.model import Policy
from mxgate.store.schema import trace_messages

CHART_MINUTES = 60
SERIES = (("accepted", "#2e7d32"), ("refused", "#c62828"), ("quarantined", "#ef6c00"))
_STATUS_SERIES = {"Delivered": "accepted", "Pending": "accepted", "Expanded": "accepted", "FilteredAsSpam": "accepted",
                  "Rejected": "refused", "Deferred": "refused", "Failed": "refused", "Quarantined": "quarantined"}


@dataclass(frozen=True)
class DomainLockdown:
    domain: str
    status: str  # "covered" | "partial" | "uncovered"
    connectors: tuple[str, ...]  # connectors restricting every sender for this domain
    partial: tuple[str, ...]  # connectors restricting only some sender domains

    @property
    def ok(self) -> bool:
        return self.status == "covered"


def lockdown_status(policy: Policy) -> list[DomainLockdown]:
    out = []
    restricting = [c for c in policy.inbound_connectors if c.restricts]
    for d in policy.accepted_domains:
        full = tuple(c.name for c in restricting if "*" in c.sender_domains and _covers_recipient(c, d.name))
        part = tuple(c.name for c in restricting if "*" not in c.sender_domains and _covers_recipient(c, d.name))
        status = "covered" if full else "partial" if part else "uncovered"
        out.append(DomainLockdown(d.name, status, full, part))
    return out


def minute_counts(engine, now: float | None = None) -> dict[str, list[int]]:
    """Per series, CHART_MINUTES counts, oldest first, ending with the current minute."""
    now = now or time.time()
    end_minute = int(now // 60)
    start = (end_minute - CHART_MINUTES + 1) * 60
    minute = _minute(engine)
    q = (select(minute.label("m"), trace_messages.c.status, func.count())
         .where(trace_messages.c.created_at >= start).group_by("m", trace_messages.c.status))
    series = {name: [0] * CHART_MINUTES for name, _ in SERIES}
    with engine.connect() as conn:
        for m, status, n in conn.execute(q):
            i = int(m) - (end_minute - CHART_MINUTES + 1)
            name = _STATUS_SERIES.get(status)
            if name and 0 <= i < CHART_MINUTES:
                series[name][i] += int(n)
    return series


def _minute(engine):
    # SQLite's CAST truncates (= floor for positive times) and may lack floor(); PostgreSQL's CAST rounds.
    if engine.dialect.name == "sqlite":
        return func.cast(trace_messages.c.created_at / 60, Integer)
    return func.floor(trace_messages.c.created_at / 60)


def chart_svg(series: dict[str, list[int]], width: int = 720, height: int = 200) -> str:
    """A line chart with a y-axis scale and one polyline per series; every number is ours (no escaping needed
    beyond the labels)."""
    pad_l, pad_b, pad_t = 40, 22, 10
    w, h = width - pad_l - 10, height - pad_b - pad_t
    top = max([1] + [v for values in series.values() for v in values])
    n = max(len(v) for v in series.values())
    step = w / max(1, n - 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="chart" '
             f'aria-label="messages per minute, last hour">']
    # Whole-number gridlines only: a midline at 0.5 of a top of 1 would be labelled "0" again.
    for frac in ((0, 0.5, 1) if top % 2 == 0 or top > 10 else (0, 1)):
        y = pad_t + h - frac * h
        parts.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{round(top * frac)}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}" font-size="10">-60 min</text>'
                 f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" text-anchor="end">now</text>')
    colours = dict(SERIES)
    for name, values in series.items():
        points = " ".join(f"{pad_l + i * step:.1f},{pad_t + h - v / top * h:.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="series-{escape(name)}" data-total="{sum(values)}" fill="none" '
                     f'stroke="{colours.get(name, "#555")}" stroke-width="2" points="{points}"/>')
    for i, (name, colour) in enumerate(SERIES):
        parts.append(f'<rect x="{pad_l + 10 + i * 120}" y="{pad_t}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{pad_l + 24 + i * 120}" y="{pad_t + 9}" font-size="11">{name} '
                     f'({sum(series.get(name, []))})</text>')
    parts.append("</svg>")
    return "".join(parts)


def top_refused_sources(engine, since: float, limit: int = 10) -> list[dict[str, Any]]:
    t = trace_messages.c
    q = (select(t.from_ip, func.count().label("n"), func.max(t.reason)).where(t.status.in_(("Rejected", "Deferred")), t.created_at >= since)
         .group_by(t.from_ip).order_by(func.count().desc()).limit(limit))
    with engine.connect() as conn:
        return [{"ip": ip, "count": int(n), "reason": reason} for ip, n, reason in conn.execute(q)]


def nodes_status(engine, latest_version: int) -> list[dict[str, Any]]:
    from mxgate.server.node import read_status

    rows = read_status(engine)
    for r in rows:
        r["current"] = r["policy_version"] == latest_version
    return rows
