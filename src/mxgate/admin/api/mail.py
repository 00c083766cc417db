"""REST resources for mail that has passed through: message trace search and detail.

Owns: URLs, query parameters and JSON shapes. Searching is TraceStore.search; the detail adds
the stored copy's Received chain and authentication results (tracing.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from mxgate.admin.tracing import trace_detail
from mxgate.errors import PolicyFormatError
from mxgate.trace.store import STATUSES

router = APIRouter(tags=["message trace"])


def parse_time(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 (UTC unless an offset is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PolicyFormatError(f"{name}: expected epoch seconds or an ISO 8601 time, got {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def search_args(since: str | None, until: str | None, sender: str | None, recipient: str | None,
                status: str | None, ip: str | None, message_id: str | None, limit: int) -> dict[str, Any]:
    if status and status not in STATUSES:
        raise PolicyFormatError(f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= 1000:
        raise PolicyFormatError(f"limit: must be between 1 and 1000, got {limit}")
    return {"since": parse_time(since, "since"), "until": parse_time(until, "until"), "sender": sender or None,
            "recipient": recipient or None, "status": status or None, "ip": ip or None,
            "message_id": message_id or None, "limit": limit}


@router.get("/trace", summary="Search the message trace (newest first)")
def search(request: Request, since: str | None = None, until: str | None = None, sender: str | None = None,
           recipient: str | None = None, status: str | None = None, ip: str | None = None,
           message_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    args = search_args(since, until, sender, recipient, status, ip, message_id, limit)
    return request.app.state.admin.trace.search(**args)


@router.get("/trace/{row_id}", summary="One trace row with events, Received chain and authentication results")
def detail(request: Request, row_id: int) -> dict[str, Any]:
    return trace_detail(request.app.state.admin, row_id)
