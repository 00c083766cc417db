"""REST resources beyond single objects: the whole policy document (validate, diff, apply),
the gateway's checks, submission credentials and DKIM keys with selector rotation; and the
interactive API documentation (Swagger UI from local files, behind the same authentication).

Owns: URLs and JSON shapes; the work is admin/manage.py (the pages' path too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse

from mxgate.admin import manage
from mxgate.errors import PolicyFormatError

router = APIRouter()


def _st(request: Request):
    return request.app.state.admin


def _actor(request: Request) -> str:
    return request.state.principal.actor


def _obj(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise PolicyFormatError(f"request body: expected a JSON object, got {type(values).__name__}")
    return values


def _strings(values: Any, *names: str) -> dict[str, str]:
    """The body's fields, each a string ("" when missing). Another key, or a value of another
    type, is refused naming it: str() made {"name": ["x"]} a login named "['x']"."""
    body = _obj(values)
    unknown = sorted(set(body) - set(names))
    if unknown:
        raise PolicyFormatError(f"{unknown[0]}: unknown key (known: {', '.join(names)})")
    for key, value in body.items():
        if not isinstance(value, str):
            raise PolicyFormatError(f"{key}: expected a string, got {type(value).__name__}")
    return {name: body.get(name, "") for name in names}


# --- the whole policy document -----------------------------------------------------------------

@router.post("/policy/validate", tags=["policy"],
             summary='Validate a whole policy ({"toml": "..."} or the JSON form) and diff it against the version in force')
def validate_document(request: Request, body: Any = Body(...)) -> dict[str, Any]:
    return vars(manage.check_document(_st(request), manage.parse_document(_obj(body))))


@router.post("/policy/diff", tags=["policy"], summary="Unified diff of a whole policy document against the version in force")
def diff_document(request: Request, body: Any = Body(...)) -> dict[str, Any]:
    check = manage.check_document(_st(request), manage.parse_document(_obj(body)))
    return {"base_version": check.base_version, "diff": check.diff, "valid": check.valid}


@router.put("/policy", tags=["policy"],
            summary="Apply a whole policy document as the next version; give base_version to refuse a stale edit (409)")
def apply_document(request: Request, body: Any = Body(...)) -> dict[str, Any]:
    body = _obj(body)
    base = body.get("base_version")
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        raise PolicyFormatError("base_version: expected an integer")
    policy = manage.parse_document(body)
    return manage.apply_document(_st(request), policy, _actor(request), base).as_dict()


# --- gateway checks ----------------------------------------------------------------------------

@router.get("/gateway/checks", tags=["gateway checks"], summary="Every check's effective settings and which the policy sets")
def list_checks(request: Request) -> list[dict[str, Any]]:
    return manage.checks_view(_st(request).policy_store.current().policy)


@router.get("/gateway/checks/{name}", tags=["gateway checks"])
def show_check(request: Request, name: str) -> dict[str, Any]:
    for c in manage.checks_view(_st(request).policy_store.current().policy):
        if c["name"] == name:
            return c
    from mxgate.errors import NotFoundError

    raise NotFoundError(f"gateway check {name!r} does not exist")


@router.put("/gateway/checks/{name}", tags=["gateway checks"], summary="Replace the check's table ({} = all defaults)")
def put_check(request: Request, name: str, values: Any = Body(...)) -> dict[str, Any]:
    return manage.set_check(_st(request), name, _obj(values), _actor(request)).as_dict()


@router.patch("/gateway/checks/{name}", tags=["gateway checks"], summary="Change some settings of the check")
def patch_check(request: Request, name: str, values: Any = Body(...)) -> dict[str, Any]:
    return manage.set_check(_st(request), name, _obj(values), _actor(request), replace=False).as_dict()


# --- credentials -------------------------------------------------------------------------------

@router.get("/credentials", tags=["credentials"], summary="Submission logins: mailbox passwords and app credentials (never secrets)")
def list_credentials(request: Request) -> list[dict[str, Any]]:
    return manage.credentials(_st(request))


@router.post("/credentials", tags=["credentials"], status_code=201,
             summary="New app credential {name, address, description}: the secret is in this answer only")
async def new_credential(request: Request, values: Any = Body(...)) -> dict[str, Any]:
    v = _strings(values, "name", "address", "description")
    secret = await asyncio.to_thread(manage.new_app_credential, _st(request), v["name"], v["address"], v["description"])
    return {"username": v["name"].strip().lower(), "secret": secret}


@router.put("/mailboxes/{address}/password", tags=["credentials"], status_code=204,
            summary="Set a mailbox's submission password {password}")
async def set_password(request: Request, address: str, values: Any = Body(...)) -> None:
    await asyncio.to_thread(manage.set_mailbox_password, _st(request), address, _strings(values, "password")["password"])


@router.delete("/credentials/{username}", tags=["credentials"], summary="Remove a login (mailbox password or app credential)")
def remove_credential(request: Request, username: str) -> dict[str, Any]:
    manage.remove_credential(_st(request), username)
    return {"removed": username}


# --- DKIM keys ---------------------------------------------------------------------------------

@router.get("/dkim", tags=["dkim"], summary="Signing keys per domain and selector: TXT record, active, published in DNS")
async def dkim_keys(request: Request) -> list[dict[str, Any]]:
    return await asyncio.to_thread(manage.dkim_keys, _st(request))


@router.post("/dkim/{domain}/{selector}", tags=["dkim"], status_code=201,
             summary="Rotation step 1: a new key under a new selector (publish its TXT record)")
async def dkim_publish(request: Request, domain: str, selector: str) -> dict[str, Any]:
    return await asyncio.to_thread(manage.dkim_publish, _st(request), domain, selector)


@router.post("/dkim/{domain}/{selector}/activate", tags=["dkim"],
             summary="Rotation step 2: sign with this selector (its TXT record must be in DNS)")
async def dkim_activate(request: Request, domain: str, selector: str) -> dict[str, Any]:
    await asyncio.to_thread(manage.dkim_activate, _st(request), domain, selector)
    return {"domain": domain.lower(), "active": selector.lower()}


@router.delete("/dkim/{domain}/{selector}", tags=["dkim"], summary="Rotation step 3: retire a key that no longer signs")
async def dkim_retire(request: Request, domain: str, selector: str) -> dict[str, Any]:
    await asyncio.to_thread(manage.dkim_retire, _st(request), domain, selector)
    return {"domain": domain.lower(), "retired": selector.lower()}


# --- documentation -----------------------------------------------------------------------------

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mxgate REST API</title>
<link rel="stylesheet" href="/api/v1/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui" data-spec="/api/v1/openapi.json"></div>
<script src="/api/v1/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script></body></html>
"""


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI, its files served from the swagger-ui-bundle-v2 package (no CDN, no inline script)."""
    return HTMLResponse(DOCS_PAGE)


@router.get("/docs/assets/{name}", include_in_schema=False)
def docs_asset(name: str):
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    allowed = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
    if name not in allowed:
        raise HTTPException(404, "no such file")
    return FileResponse(_swagger_dir() / name, media_type=allowed[name])


def _swagger_dir():
    from pathlib import Path

    try:
        import swagger_ui_bundle
    except ImportError:  # a clear message instead of a broken page
        from mxgate.errors import ConfigError

        raise ConfigError("the API documentation needs the swagger-ui-bundle-v2 package: pip install swagger-ui-bundle-v2") from None
    return Path(swagger_ui_bundle.swagger_ui_path)
