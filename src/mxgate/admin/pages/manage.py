"""Pages for the rest of the admin's job: outbound connectors, one mailbox (aliases, forwarding,
members, send-as, password), app credentials, DKIM keys with selector rotation, and the
gateway's checks.

Owns: forms and redirects. Policy edits go through state.save_edit (the CLI's path); the rest
through admin/manage.py (the API's path), so every surface refuses alike.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from mxgate.admin import manage
from mxgate.admin.pages.common import actor, lines, redirect, render, state
from mxgate.admin.state import save_edit
from mxgate.errors import MxgateError, NotFoundError
from mxgate.policy import edit
from mxgate.policy.model import OutboundConnector, object_to_dict

router = APIRouter(include_in_schema=False)

TLS_SETTINGS = ("encryption_only", "certificate_validation", "domain_validation")
OUTBOUND_TYPES = ("partner", "on_premises")


# --- outbound connectors -------------------------------------------------------------------------

def _outbound_values(form) -> dict:
    return {"name": str(form.get("name", "")).strip(), "type": str(form.get("type", "partner")),
            "enabled": "true" in form.getlist("enabled"), "comment": str(form.get("comment", "")),
            "recipient_domains": lines(form.get("recipient_domains")), "smart_hosts": lines(form.get("smart_hosts")),
            "use_mx_record": form.get("route") == "mx", "tls_settings": str(form.get("tls_settings", "")),
            "tls_domain": str(form.get("tls_domain", "")).strip()}


def _outbound_page(request: Request, c: dict, original: str, error: str = "", status: int = 200):
    return render(request, "outbound.html", {"c": c, "original": original, "error": error, "tls_settings": TLS_SETTINGS,
                                             "types": OUTBOUND_TYPES}, nav="/connectors", status=status)


@router.get("/connectors/outbound/new")
def outbound_new(request: Request):
    return _outbound_page(request, object_to_dict(OutboundConnector(name="")), "")


@router.get("/connectors/outbound/{name}/edit")
def outbound_edit(request: Request, name: str):
    c = edit.find(state(request).policy_store.current().policy, "outbound_connector", name)
    return _outbound_page(request, object_to_dict(c), c.name)


@router.post("/connectors/outbound")
async def outbound_save(request: Request):
    form = await request.form()
    values, original = _outbound_values(form), str(form.get("original", ""))
    try:
        op = "set" if original else "new"
        result = save_edit(state(request), "outbound_connector", op, original, values, actor(request))
    except MxgateError as exc:
        return _outbound_page(request, values, original, str(exc), status=422)
    return redirect(request, "/connectors", f"Outbound connector {values['name']!r} saved (policy version {result.version}).")


@router.post("/connectors/outbound/{name}/remove")
def outbound_remove(request: Request, name: str):
    try:
        result = save_edit(state(request), "outbound_connector", "remove", name, None, actor(request))
    except MxgateError as exc:
        return redirect(request, "/connectors", f"Not removed: {exc}")
    return redirect(request, "/connectors", f"Outbound connector {name!r} removed (policy version {result.version}).")


# --- one mailbox: aliases, forwarding, members, send-as, password --------------------------------

def _mailbox_page(request: Request, address: str, values: dict | None = None, error: str = "", status: int = 200):
    st = state(request)
    m = edit.find(st.policy_store.current().policy, "mailbox", address)
    has_password = any(c["username"] == m.address.lower() for c in manage.credentials(st))
    return render(request, "mailbox.html", {"m": values or object_to_dict(m), "address": m.address, "error": error,
                                            "has_password": has_password}, nav="/mailboxes", status=status)


@router.get("/mailboxes/{address}/edit")
def mailbox_edit(request: Request, address: str):
    return _mailbox_page(request, address)


@router.post("/mailboxes/{address}/edit")
async def mailbox_save(request: Request, address: str):
    form = await request.form()
    values = {"aliases": lines(form.get("aliases")), "forward_to": lines(form.get("forward_to")),
              "keep_copy": "true" in form.getlist("keep_copy"), "members": lines(form.get("members")),
              "send_as": lines(form.get("send_as"))}
    try:
        result = save_edit(state(request), "mailbox", "set", address, values, actor(request))
    except MxgateError as exc:
        return _mailbox_page(request, address, {"address": address, **values}, str(exc), status=422)
    return redirect(request, f"/mailboxes/{address}/edit", f"Mailbox {address!r} saved (policy version {result.version}).")


@router.post("/mailboxes/{address}/password")
async def mailbox_password(request: Request, address: str):
    form = await request.form()
    password, again = str(form.get("password", "")), str(form.get("password2", ""))
    if password != again:
        return _mailbox_page(request, address, error="The two passwords differ.", status=422)
    try:
        await asyncio.to_thread(manage.set_mailbox_password, state(request), address, password)
    except MxgateError as exc:
        return _mailbox_page(request, address, error=str(exc), status=422)
    return redirect(request, f"/mailboxes/{address}/edit", f"Submission password set for {address}.")


# --- app credentials -------------------------------------------------------------------------------

def _credentials_page(request: Request, error: str = "", secret: dict | None = None, status: int = 200):
    st = state(request)
    return render(request, "credentials.html", {"creds": manage.credentials(st), "error": error, "secret": secret,
                                                "mailboxes": [m.address for m in st.policy_store.current().policy.mailboxes
                                                              if not m.members]},
                  nav="/credentials", status=status)


@router.get("/credentials")
def credentials(request: Request):
    return _credentials_page(request)


@router.post("/credentials")
async def credential_new(request: Request):
    form = await request.form()
    name, address = str(form.get("name", "")), str(form.get("address", ""))
    try:
        secret = await asyncio.to_thread(manage.new_app_credential, state(request), name, address,
                                         str(form.get("description", "")))
    except MxgateError as exc:
        return _credentials_page(request, str(exc), status=422)
    # Shown on this answer only (never in a redirect, a cookie or a log).
    return _credentials_page(request, secret={"name": name.strip().lower(), "secret": secret}, status=201)


@router.post("/credentials/{username}/remove")
def credential_remove(request: Request, username: str):
    try:
        manage.remove_credential(state(request), username)
    except NotFoundError as exc:
        return redirect(request, "/credentials", str(exc))
    return redirect(request, "/credentials", f"Login {username!r} removed.")


# --- DKIM keys -------------------------------------------------------------------------------------

def _dkim_page(request: Request, keys: list, error: str = "", status: int = 200):
    domains = [d.name for d in state(request).policy_store.current().policy.accepted_domains]
    by_domain: dict[str, list] = {}
    for k in keys:
        by_domain.setdefault(k["domain"], []).append(k)
    return render(request, "dkim.html", {"by_domain": by_domain, "domains": domains, "error": error}, nav="/dkim",
                  status=status)


@router.get("/dkim")
async def dkim(request: Request):
    return _dkim_page(request, await asyncio.to_thread(manage.dkim_keys, state(request)))


@router.post("/dkim/{domain}/{action}")
async def dkim_action(request: Request, domain: str, action: str):
    form = await request.form()
    selector = str(form.get("selector", "")).strip()
    st = state(request)
    try:
        if action == "publish":
            await asyncio.to_thread(manage.dkim_publish, st, domain, selector)
            msg = f"New key {selector!r} for {domain}: publish its TXT record, then choose “Sign with this key”."
        elif action == "activate":
            await asyncio.to_thread(manage.dkim_activate, st, domain, selector)
            msg = f"{domain} now signs with {selector!r}; retire the old key once mail in flight has been verified."
        elif action == "retire":
            await asyncio.to_thread(manage.dkim_retire, st, domain, selector)
            msg = f"Key {selector!r} for {domain} retired: remove its TXT record from DNS."
        else:
            raise NotFoundError(f"unknown DKIM action {action!r}")
    except MxgateError as exc:
        return _dkim_page(request, await asyncio.to_thread(manage.dkim_keys, st), str(exc), status=422)
    return redirect(request, "/dkim", msg)


# --- gateway checks --------------------------------------------------------------------------------

def _checks_page(request: Request, error: str = "", failed: str = "", status: int = 200):
    checks = manage.checks_view(state(request).policy_store.current().policy)
    return render(request, "checks.html", {"checks": checks, "error": error, "failed": failed}, nav="/checks",
                  status=status)


@router.get("/checks")
def checks(request: Request):
    return _checks_page(request)


@router.post("/checks/{name}")
async def check_save(request: Request, name: str):
    form = await request.form()
    try:
        values = manage.parse_check_form(name, {k: str(v) for k, v in form.items() if k != "csrf_token"})
        result = manage.set_check(state(request), name, values, actor(request))
    except MxgateError as exc:
        return _checks_page(request, str(exc), name, status=422)
    return redirect(request, f"/checks#check-{name}", f"Gateway check {name!r} saved (policy version {result.version}).")
