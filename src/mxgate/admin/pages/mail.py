"""Message trace pages: search with filters, and one message's detail (events, the Received chain
with the hop enhanced filtering chose, authentication results).

Owns: the filter form and the two templates' context. Searching and detail come from the API's
helpers (trace/query.py search_args, tracing.trace_detail), so both surfaces answer alike.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from mxgate.trace.query import search_args
from mxgate.admin.pages.common import render, state
from mxgate.admin.tracing import trace_detail
from mxgate.errors import PolicyError
from mxgate.trace.store import STATUSES

router = APIRouter(include_in_schema=False)
FILTERS = ("sender", "recipient", "status", "ip", "message_id", "hours")


@router.get("/trace")
def trace(request: Request):
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    error, rows = "", []
    try:
        hours = float(q["hours"] or 24)
        args = search_args(str(time.time() - hours * 3600), None, q["sender"], q["recipient"], q["status"], q["ip"],
                           q["message_id"], 200)
        rows = state(request).trace.search(**args)
    except (PolicyError, ValueError) as exc:
        error = str(exc)
    return render(request, "trace.html", {"q": q, "rows": rows, "statuses": STATUSES, "error": error}, nav="/trace")


@router.get("/trace/{row_id}")
def trace_row(request: Request, row_id: int):
    return render(request, "trace_detail.html", {"m": trace_detail(state(request), row_id)}, nav="/trace")
