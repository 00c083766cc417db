"""REST resources for the organisation policy: accepted domains, mailboxes, inbound and outbound
connectors, enhanced filtering per connector, policy versions and diffs.

Owns: URLs and JSON shapes only. Every write goes through state.save_edit (policy/edit.py →
PolicyStore.save → validate), the CLI's path, so a refused change gets the CLI's message
(422 {"error": ...}); app.py maps NotFoundError → 404 and ConcurrentChangeError → 409.
Bodies are plain objects whose keys are the policy's field names (EXO's, in snake_case).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from mxgate.admin.enhanced import EfSettings, ef_changes, ef_settings
from mxgate.admin.state import AdminState, save_edit
from mxgate.errors import PolicyFormatError
from mxgate.policy import edit
from mxgate.policy.model import object_to_dict
from mxgate.wording import plural

router = APIRouter()

# URL segment → policy kind (policy/edit.py KINDS)
RESOURCES = {
    "domains": "accepted_domain",
    "mailboxes": "mailbox",
    "connectors/inbound": "inbound_connector",
    "connectors/outbound": "outbound_connector",
}


def _st(request: Request) -> AdminState:
    return request.app.state.admin


def _actor(request: Request) -> str:
    return request.state.principal.actor


def _body(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise PolicyFormatError(f"request body: expected a JSON object, got {type(values).__name__}")
    return values


def _add_resource(segment: str, kind: str) -> None:
    human = edit.KINDS[kind][2]
    tag = plural(human)

    @router.get(f"/{segment}", tags=[tag], summary=f"List {tag}")
    def list_(request: Request) -> list[dict[str, Any]]:
        attr = edit.KINDS[kind][0]
        return [object_to_dict(o) for o in getattr(_st(request).policy_store.current().policy, attr)]

    @router.get(f"/{segment}/{{ident}}", tags=[tag], summary=f"Show one {human}")
    def show(request: Request, ident: str) -> dict[str, Any]:
        return object_to_dict(edit.find(_st(request).policy_store.current().policy, kind, ident))

    @router.post(f"/{segment}", tags=[tag], status_code=201, summary=f"Create a {human}")
    def create(request: Request, values: Any = Body(...)) -> dict[str, Any]:
        return save_edit(_st(request), kind, "new", "", _body(values), _actor(request)).as_dict()

    @router.patch(f"/{segment}/{{ident}}", tags=[tag], summary=f"Change fields of a {human}; lists given replace old ones")
    def change(request: Request, ident: str, values: Any = Body(...)) -> dict[str, Any]:
        values = _body(values)
        if not values:
            raise PolicyFormatError("nothing to change: give at least one option")
        return save_edit(_st(request), kind, "set", ident, values, _actor(request)).as_dict()

    @router.delete(f"/{segment}/{{ident}}", tags=[tag], summary=f"Remove a {human}")
    def remove(request: Request, ident: str) -> dict[str, Any]:
        return save_edit(_st(request), kind, "remove", ident, None, _actor(request)).as_dict()


for _segment, _kind in RESOURCES.items():
    _add_resource(_segment, _kind)


@router.get("/connectors/inbound/{name}/enhanced-filtering", tags=["enhanced filtering"])
def get_enhanced_filtering(request: Request, name: str) -> dict[str, Any]:
    c = edit.find(_st(request).policy_store.current().policy, "inbound_connector", name)
    return ef_settings(c).as_dict()


@router.put("/connectors/inbound/{name}/enhanced-filtering", tags=["enhanced filtering"],
            summary="Set enhanced filtering: mode off | skip_last_ip | skip_ips; scope organization | users")
def put_enhanced_filtering(request: Request, name: str, values: Any = Body(...)) -> dict[str, Any]:
    settings = EfSettings.from_dict(_body(values))
    return save_edit(_st(request), "inbound_connector", "set", name, ef_changes(settings), _actor(request)).as_dict()


@router.get("/organization", tags=["policy"])
def organization(request: Request) -> dict[str, Any]:
    return object_to_dict(_st(request).policy_store.current().policy.organization)


@router.get("/policy/versions", tags=["policy"], summary="Policy versions, newest first")
def versions(request: Request, limit: int = 50) -> list[dict[str, Any]]:
    return [{"version": v.version, "created_at": v.created_at, "actor": v.actor, "summary": v.summary}
            for v in _st(request).policy_store.history(limit)]


@router.get("/policy/versions/{version}", tags=["policy"], summary="One policy version as its document")
def version(request: Request, version: int) -> dict[str, Any]:
    from mxgate.policy.document import dump_toml
    from mxgate.policy.model import policy_to_dict

    pv = _st(request).policy_store.get(version)
    return {"version": pv.version, "created_at": pv.created_at, "actor": pv.actor, "summary": pv.summary,
            "policy": policy_to_dict(pv.policy), "toml": dump_toml(pv.policy)}


@router.get("/policy/diff", tags=["policy"], summary="Unified diff between two versions (new defaults to the one in force)")
def diff(request: Request, old: int, new: int | None = None) -> dict[str, Any]:
    from mxgate.policy.document import diff_policies

    store = _st(request).policy_store
    a = store.get(old)
    b = store.get(new) if new is not None else store.current()
    return {"old": a.version, "new": b.version,
            "diff": diff_policies(a.policy, b.policy, f"version {a.version}", f"version {b.version}")}
