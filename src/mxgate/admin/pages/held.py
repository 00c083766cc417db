"""Quarantine and queue pages: list, preview, release, delete; retry or delete queue entries.

Owns: the forms and redirects; the work is held.py (the API's path too).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from mxgate.admin import held
from mxgate.admin.pages.common import actor, redirect, render, state
from mxgate.errors import MxgateError

router = APIRouter(include_in_schema=False)


@router.get("/quarantine")
def quarantine(request: Request, show: str = ""):
    st = state(request)
    store = held.quarantine_store(st)
    preview = store.preview(held.check_qid(show)) if show else None
    return render(request, "quarantine.html", {"items": store.list(include_released=True, limit=200), "preview": preview},
                  nav="/quarantine")


@router.post("/quarantine/{qid}/release")
async def release(request: Request, qid: str):
    try:
        paths = await held.release(state(request), qid, actor(request))
    except MxgateError as exc:
        return redirect(request, "/quarantine", f"Not released: {exc}")
    return redirect(request, "/quarantine", f"Released {qid}: delivered {len(paths)} cop{'y' if len(paths) == 1 else 'ies'}.")


@router.post("/quarantine/{qid}/delete")
async def delete(request: Request, qid: str):
    await asyncio.to_thread(held.quarantine_store(state(request)).delete, held.check_qid(qid))
    return redirect(request, "/quarantine", f"Deleted {qid}.")


@router.get("/queue")
def queue(request: Request):
    st = state(request)
    return render(request, "queue.html", {"entries": held.queue_rows(st),
                                          "gateway_here": st.role("gateway") is not None,
                                          "root": ", ".join(str(r) for r in held.spool_roots(st))}, nav="/queue")


@router.post("/queue/{queue_id}/{action}")
def queue_action(request: Request, queue_id: str, action: str):
    try:
        held.request_action(state(request), queue_id, action)
    except MxgateError as exc:
        return redirect(request, "/queue", str(exc))
    return redirect(request, "/queue", f"Asked the gateway to {action} {queue_id}.")
