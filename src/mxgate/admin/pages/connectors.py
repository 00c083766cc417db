"""Connector pages: the list, the add/edit wizard and enhanced filtering per connector.

The wizard's steps follow the guide (EXO's "Add a connector"): partner organisation → name →
sender domains → security restrictions (TLS, IP ranges or certificate) → review → create. It is
stateless: each step posts every earlier answer back as hidden fields, and the review step
checks the result with the same rules as the save (validate_policy), so an error is shown
before "Create". Saving is state.save_edit, the CLI's path.
Owns: mapping the wizard's answers to connector fields. Must not validate them itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mxgate.admin.enhanced import EfSettings, ef_changes, ef_settings
from mxgate.admin.pages.common import actor, lines, redirect, render, state
from mxgate.admin.state import save_edit
from mxgate.errors import MxgateError, PolicyError
from mxgate.policy import edit
from mxgate.policy.validate import check_policy

router = APIRouter(include_in_schema=False)

STEPS = ("Partner organisation", "Name", "Sender domains", "Security restrictions", "Review")
FIELDS = ("original", "type", "name", "comment", "enabled", "sender_domains", "require_tls", "restrict",
          "sender_ip_addresses", "tls_sender_certificate_name")
BOOLEANS = ("enabled", "require_tls")


def _answers_from_connector(c) -> dict[str, str]:
    restrict = "ip" if c.restrict_domains_to_ip_addresses else "cert" if c.restrict_domains_to_certificate else "none"
    return {"original": c.name, "type": c.type, "name": c.name, "comment": c.comment,
            "enabled": "true" if c.enabled else "false", "sender_domains": "\n".join(c.sender_domains),
            "require_tls": "true" if c.require_tls else "false", "restrict": restrict,
            "sender_ip_addresses": "\n".join(c.sender_ip_addresses),
            "tls_sender_certificate_name": c.tls_sender_certificate_name}


DEFAULTS = {"original": "", "type": "partner", "name": "", "comment": "", "enabled": "true", "sender_domains": "*",
            "require_tls": "true", "restrict": "ip", "sender_ip_addresses": "", "tls_sender_certificate_name": ""}


def _answers_from_form(form) -> dict[str, str]:
    out = dict(DEFAULTS)
    for f in FIELDS:
        values = form.getlist(f)
        if values:
            # A checkbox posts a hidden "false" and, when ticked, "true" after it.
            out[f] = ("true" if "true" in values else "false") if f in BOOLEANS else str(values[-1])
    return out


def connector_values(a: dict[str, str]) -> dict[str, Any]:
    """The wizard's answers as inbound connector fields (policy/model.py names)."""
    values: dict[str, Any] = {
        "name": a["name"].strip(), "type": a["type"], "comment": a["comment"], "enabled": a["enabled"] == "true",
        "sender_domains": lines(a["sender_domains"]), "sender_ip_addresses": lines(a["sender_ip_addresses"]),
        "require_tls": a["require_tls"] == "true", "tls_sender_certificate_name": a["tls_sender_certificate_name"].strip(),
        "restrict_domains_to_ip_addresses": a["type"] == "partner" and a["restrict"] == "ip",
        "restrict_domains_to_certificate": a["type"] == "partner" and a["restrict"] == "cert",
    }
    return values


def _preview_error(request: Request, a: dict[str, str]) -> str:
    """The error saving these answers would give, or "" (nothing is stored)."""
    policy = state(request).policy_store.current().policy
    try:
        if a["original"]:
            new = edit.change(policy, "inbound_connector", a["original"], connector_values(a))
        else:
            new = edit.add(policy, "inbound_connector", connector_values(a))
        check_policy(new)
    except MxgateError as exc:
        return str(exc)
    return ""


def _wizard(request: Request, a: dict[str, str], step: int, error: str = ""):
    ctx = {"a": a, "step": step, "steps": STEPS, "error": error, "values": connector_values(a),
           "hidden": [f for f in FIELDS if f not in _STEP_FIELDS.get(step, ())]}
    if request.headers.get("hx-request"):
        return render(request, "partials/wizard.html", ctx)
    return render(request, "wizard.html", ctx, nav="/connectors")


_STEP_FIELDS = {1: ("type",), 2: ("name", "comment", "enabled"), 3: ("sender_domains",),
                4: ("require_tls", "restrict", "sender_ip_addresses", "tls_sender_certificate_name")}


@router.get("/connectors")
def connectors(request: Request):
    policy = state(request).policy_store.current().policy
    return render(request, "connectors.html", {"inbound": policy.inbound_connectors, "outbound": policy.outbound_connectors,
                                               "ef": {c.name: ef_settings(c) for c in policy.inbound_connectors}},
                  nav="/connectors")


@router.get("/connectors/new")
def wizard_new(request: Request):
    return _wizard(request, dict(DEFAULTS), 1)


@router.get("/connectors/{name}/edit")
def wizard_edit(request: Request, name: str):
    c = edit.find(state(request).policy_store.current().policy, "inbound_connector", name)
    return _wizard(request, _answers_from_connector(c), 1)


def _step(value) -> int:
    """The form's hidden step, 1 to len(STEPS); anything else (a hand-made or cut-off post) is 1."""
    try:
        return min(max(int(str(value)), 1), len(STEPS))
    except ValueError:
        return 1


@router.post("/connectors/wizard")
async def wizard_step(request: Request):
    form = await request.form()
    a = _answers_from_form(form)
    action = str(form.get("action", "next"))
    step = _step(form.get("step"))
    if action == "back":
        return _wizard(request, a, max(1, step - 1))
    if action == "next":
        if step == 2 and not a["name"].strip():
            return _wizard(request, a, 2, "Give the connector a name.")
        target = min(step + 1, len(STEPS))
        if target == 5:
            return _wizard(request, a, 5, _preview_error(request, a))
        return _wizard(request, a, target)
    # action == "create": store it (or show why not, on the review step)
    try:
        op, ident = ("set", a["original"]) if a["original"] else ("new", "")
        result = save_edit(state(request), "inbound_connector", op, ident, connector_values(a), actor(request))
    except MxgateError as exc:
        return _wizard(request, a, 5, str(exc))
    msg = f"Connector {a['name'].strip()!r} saved as policy version {result.version}."
    if result.warnings:
        msg += " Warnings: " + "; ".join(result.warnings)
    if request.headers.get("hx-request"):
        return redirect(request, "/connectors", msg, Response(status_code=204, headers={"HX-Redirect": "/connectors"}))
    return redirect(request, "/connectors", msg)


@router.post("/connectors/{name}/remove")
def remove(request: Request, name: str):
    try:
        result = save_edit(state(request), "inbound_connector", "remove", name, None, actor(request))
    except MxgateError as exc:
        return render(request, "error.html", {"status": 422, "message": str(exc)}, status=422)
    return redirect(request, "/connectors", f"Connector {name!r} removed (policy version {result.version}).")


@router.get("/connectors/{name}/enhanced-filtering")
def ef_page(request: Request, name: str):
    c = edit.find(state(request).policy_store.current().policy, "inbound_connector", name)
    return render(request, "enhanced.html", {"c": c, "ef": ef_settings(c), "error": ""}, nav="/connectors")


@router.post("/connectors/{name}/enhanced-filtering")
async def ef_save(request: Request, name: str):
    form = await request.form()
    data = {"mode": form.get("mode", "off"), "skip_ips": lines(form.get("skip_ips")), "scope": form.get("scope", "organization"),
            "users": lines(form.get("users")), "test_mode": "true" in form.getlist("test_mode")}
    c = edit.find(state(request).policy_store.current().policy, "inbound_connector", name)
    try:
        settings = EfSettings.from_dict(data)
        result = save_edit(state(request), "inbound_connector", "set", name, ef_changes(settings), actor(request))
    except PolicyError as exc:
        shown = EfSettings(data["mode"], tuple(data["skip_ips"]), data["scope"], tuple(data["users"]), data["test_mode"])
        return render(request, "enhanced.html", {"c": c, "ef": shown, "error": str(exc)}, nav="/connectors", status=422)
    return redirect(request, f"/connectors/{name}/enhanced-filtering",
                    f"Enhanced filtering for {c.name!r} saved as policy version {result.version}.")
