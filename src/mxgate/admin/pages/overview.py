"""Pages about the whole system: the dashboard, policy history with diffs, and logout.

Owns: their URLs and what each template receives. The numbers come from dashboard.py.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from markupsafe import Markup

from mxgate import metrics
from mxgate.admin import dashboard
from mxgate.admin.pages.common import render, state
from mxgate.admin.pages.login import logout_response

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard_page(request: Request):
    st = state(request)
    pv = st.policy_store.current()
    domains = dashboard.lockdown_status(pv.policy)
    series = dashboard.minute_counts(st.engine)
    return render(request, "dashboard.html", {
        "version": pv.version, "domains": domains, "locked_down": bool(domains) and all(d.ok for d in domains),
        "chart": Markup(dashboard.chart_svg(series)), "totals": {k: sum(v) for k, v in series.items()},
        "top_refused": dashboard.top_refused_sources(st.engine, time.time() - 3600),
        "nodes": dashboard.nodes_status(st.engine, pv.version),
        "sessions": int(sum(metrics.value("mxgate_smtp_sessions_total", role=r) for r in ("mailbox", "gateway", "submission"))),
    }, nav="/")


@router.post("/logout")
async def logout(request: Request):
    return await logout_response(request)


@router.get("/policy")
def history(request: Request, version: int | None = None):
    from mxgate.policy.document import diff_policies

    store = state(request).policy_store
    versions = store.history(100)
    shown = diff = None
    if version is not None:
        shown = store.get(version)
        before = store.get(version - 1) if version > 1 else store.get(0)
        diff = diff_policies(before.policy, shown.policy, f"version {before.version}", f"version {shown.version}") or "no change"
    return render(request, "history.html", {"versions": versions, "shown": shown, "diff": diff}, nav="/policy")
