"""The "Test lock-down" page: start the verifier, show a progress bar while it runs (htmx polls the
job every half second), then its pass/fail table.

Owns: the page and the polling fragment; the work is verifier.py.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from mxgate.admin.pages.common import actor, render, state
from mxgate.admin.verifier import start_verify
from mxgate.errors import MxgateError

router = APIRouter(include_in_schema=False)


@router.get("/verify")
def verify_page(request: Request):
    return render(request, "verify.html", {"job": None, "error": ""}, nav="/verify")


@router.post("/verify")
async def verify_start(request: Request):
    try:
        job = start_verify(state(request), actor(request))
    except MxgateError as exc:
        return render(request, "verify.html", {"job": None, "error": str(exc)}, nav="/verify", status=422)
    if request.headers.get("hx-request"):
        return render(request, "partials/verify_job.html", {"job": job})
    return render(request, "verify.html", {"job": job, "error": ""}, nav="/verify")


@router.get("/verify/jobs/{job_id}")
def verify_job(request: Request, job_id: str):
    job = state(request).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id!r} does not exist")
    return render(request, "partials/verify_job.html", {"job": job})
