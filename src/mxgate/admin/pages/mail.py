"""Message trace pages: search with filters, and one message's detail (events, the Received chain
with the hop enhanced filtering chose, authentication results).

Owns: the filter form and the two templates' context. Searching and detail come from the API's
helpers (trace/query.py search_args, tracing.trace_detail), so both surfaces answer alike.
"""

from __future__ import annotations

import time

import csv
import io

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from mxgate.trace.query import search_args
from mxgate.admin.pages.common import render, state, utc
from mxgate.admin.tracing import readable_detail, trace_detail
from mxgate.errors import PolicyError
from mxgate.trace.store import STATUSES

router = APIRouter(include_in_schema=False)
FILTERS = ("sender", "recipient", "status", "ip", "message_id", "hours")


PAGE_SIZE = 100
CSV_MAX_ROWS = 100_000
CSV_COLUMNS = ("id", "created_at", "status", "reason", "sender", "recipient", "subject", "message_id", "size", "from_ip",
               "original_ip", "connector", "policy_version", "role", "direction", "node", "trace_id")


def _args(request: Request, limit: int, offset: int = 0) -> tuple[dict, dict]:
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    hours = float(q["hours"] or 24)
    return q, search_args(str(time.time() - hours * 3600), None, q["sender"], q["recipient"], q["status"], q["ip"],
                          q["message_id"], limit, offset)


@router.get("/trace")
def trace(request: Request, page: int = 1):
    error, rows, more = "", [], False
    page = max(1, page)
    try:
        _q, args = _args(request, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
        rows = state(request).trace.search(**args)
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    except PolicyError as exc:
        error = str(exc).split(", got ")[0]  # the rule, without echoing what was typed
    except ValueError:
        error = "hours: a number is required"
    return render(request, "trace.html", {"rows": rows, "statuses": STATUSES, "error": error, "page": page,
                                          "more": more, "first": (page - 1) * PAGE_SIZE + 1}, nav="/trace")


@router.get("/trace.csv")
def trace_csv(request: Request):
    """Every row matching the filters (up to CSV_MAX_ROWS), newest first, as CSV for a spreadsheet."""
    try:
        _q, args = _args(request, 1)
    except (PolicyError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    store = state(request).trace

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for offset in range(0, CSV_MAX_ROWS, 1000):
            batch = store.search(**(args | {"limit": 1000, "offset": offset}))
            for r in batch:
                writer.writerow([_csv_cell(utc(r["created_at"]) if c == "created_at" else r.get(c)) for c in CSV_COLUMNS])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(batch) < 1000:
                return

    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="message-trace.csv"'})


def _csv_cell(value) -> str:
    """Wire data may start with = + - @ (a formula in a spreadsheet): prefix a quote (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/trace/{row_id}")
def trace_row(request: Request, row_id: int):
    m = trace_detail(state(request), row_id)
    return render(request, "trace_detail.html", {"m": m, "details": readable_detail(m.get("detail") or {}),
                                                 "certificate": (m.get("detail") or {}).get("certificate")},
                  nav="/trace")
