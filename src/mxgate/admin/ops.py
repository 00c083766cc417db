"""Operations endpoints: /healthz (the process answers), /readyz (it can do its job), /metrics.

Owns: what "ready" means for a node — the store answers and every configured SMTP listener is
bound. Must not know pages or the API. These are the only routes reachable without a login
(metrics only when `[admin] metrics_public` is true).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text

from mxgate import metrics
from mxgate.admin.guard import metrics_user

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok\n")


def readiness(st) -> tuple[bool, dict[str, str]]:
    checks: dict[str, str] = {}
    try:
        with st.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["store"] = "ok"
    except Exception as exc:  # any store failure means not ready; the text helps the operator
        checks["store"] = f"failed: {type(exc).__name__}"
    if st.node is not None:
        for role, listener in st.node.listeners.items():
            checks[f"listener:{role}"] = "ok" if listener.addresses else "not listening"
        checks["policy"] = f"version {st.node.watcher.current.version}" if st.node.watcher else "not loaded"
    ok = all(v == "ok" or k == "policy" for k, v in checks.items()) and checks.get("policy") != "not loaded"
    return ok, checks


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    ok, checks = readiness(request.app.state.admin)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", dependencies=[Depends(metrics_user)])
async def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
