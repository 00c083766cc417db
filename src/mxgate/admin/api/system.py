"""REST resources about the running system: nodes and the policy version each enforces, this
node's listeners, the lock-down status per accepted domain, the verifier and background jobs.

Owns: URLs and JSON shapes; the verifier itself is probe/verify.py (run through verifier.py).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from mxgate.admin import dashboard

router = APIRouter(tags=["system"])


@router.get("/nodes", summary="Every node using this store: roles, listeners, heartbeat, policy version enforced")
def nodes(request: Request) -> dict[str, Any]:
    st = request.app.state.admin
    latest = st.policy_store.latest_version_number()
    return {"policy_version": latest, "nodes": dashboard.nodes_status(st.engine, latest)}


@router.get("/lockdown", summary="Is every accepted domain covered by a restricting connector?")
def lockdown(request: Request) -> dict[str, Any]:
    domains = dashboard.lockdown_status(request.app.state.admin.policy_store.current().policy)
    return {"locked_down": bool(domains) and all(d.ok for d in domains), "domains": [asdict(d) for d in domains]}


@router.get("/jobs/{job_id}", summary="Progress and result of a long operation")
def job(request: Request, job_id: str) -> dict[str, Any]:
    j = request.app.state.admin.jobs.get(job_id)
    if j is None:
        raise HTTPException(404, f"job {job_id!r} does not exist")
    return j.as_dict()


@router.post("/verify", status_code=202, summary="Run the lock-down verifier against this node; poll /jobs/{id}")
async def verify(request: Request) -> dict[str, Any]:
    from mxgate.admin.verifier import start_verify

    job = start_verify(request.app.state.admin, request.state.principal.actor)
    return job.as_dict()


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()
