"""REST resources for held mail: quarantine (list, preview, release, delete) and the gateway
queue (list, retry, delete).

Owns: URLs and JSON shapes; the work is held.py over quarantine/store.py and queue/spool.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from mxgate.admin import held
from mxgate.quarantine.store import QuarantineStateError

router = APIRouter()


def _st(request: Request):
    return request.app.state.admin


@router.get("/quarantine", tags=["quarantine"], summary="Quarantined messages, newest first")
def quarantine_list(request: Request, include_released: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    return held.quarantine_store(_st(request)).list(include_released=include_released, limit=min(max(limit, 1), 1000))


@router.get("/quarantine/{qid}", tags=["quarantine"], summary="Preview: headers and the start of the body as text")
def quarantine_preview(request: Request, qid: str) -> dict[str, Any]:
    return held.quarantine_store(_st(request)).preview(held.check_qid(qid))


@router.post("/quarantine/{qid}/release", tags=["quarantine"], summary="Deliver to the recipients' inboxes")
async def quarantine_release(request: Request, qid: str) -> dict[str, Any]:
    try:
        paths = await held.release(_st(request), qid, request.state.principal.actor)
    except QuarantineStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"released": qid, "delivered": len(paths)}


@router.delete("/quarantine/{qid}", tags=["quarantine"], summary="Delete the message (the decision stays recorded)")
async def quarantine_delete(request: Request, qid: str) -> dict[str, Any]:
    await asyncio.to_thread(held.quarantine_store(_st(request)).delete, held.check_qid(qid))
    return {"deleted": qid}


@router.get("/queue", tags=["queue"], summary="Gateway queue entries by arrival")
def queue_list(request: Request) -> list[dict[str, Any]]:
    return held.queue_rows(_st(request))


@router.post("/queue/{queue_id}/retry", tags=["queue"], status_code=202, summary="Try the entry now")
def queue_retry(request: Request, queue_id: str) -> dict[str, Any]:
    held.request_action(_st(request), queue_id, "retry")
    return {"requested": "retry", "queue_id": queue_id}


@router.delete("/queue/{queue_id}", tags=["queue"], status_code=202, summary="Remove the entry (no bounce)")
def queue_delete(request: Request, queue_id: str) -> dict[str, Any]:
    held.request_action(_st(request), queue_id, "delete")
    return {"requested": "delete", "queue_id": queue_id}
