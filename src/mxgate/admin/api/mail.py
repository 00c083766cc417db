"""REST resources for mail that has passed through: message trace search and detail.

Owns: URLs, query parameters and JSON shapes. Searching is TraceStore.search; the detail adds
the stored copy's Received chain and authentication results (tracing.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mxgate.admin.tracing import trace_detail
from mxgate.trace.query import search_args

router = APIRouter(tags=["message trace"])


@router.get("/trace", summary="Search the message trace (newest first)")
def search(request: Request, since: str | None = None, until: str | None = None, sender: str | None = None,
           recipient: str | None = None, status: str | None = None, ip: str | None = None,
           message_id: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    args = search_args(since, until, sender, recipient, status, ip, message_id, limit, offset)
    return request.app.state.admin.trace.search(**args)


@router.get("/trace/{row_id}", summary="One trace row with events, Received chain and authentication results")
def detail(request: Request, row_id: int) -> dict[str, Any]:
    return trace_detail(request.app.state.admin, row_id)
