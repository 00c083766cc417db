"""Accepted domains and mailboxes: list, add, remove — through state.save_edit (the CLI's path).

Owns: these two pages' forms. Must not validate (the save does, with the CLI's messages).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from mxgate.admin.pages.common import actor, lines, redirect, render, state
from mxgate.admin.state import save_edit
from mxgate.errors import MxgateError

router = APIRouter(include_in_schema=False)


def _page(request: Request, error: str = "", status: int = 200, form: dict | None = None):
    policy = state(request).policy_store.current().policy
    from mxgate.admin.dashboard import lockdown_status

    cover = {d.domain: d for d in lockdown_status(policy)}
    return render(request, "objects.html", {"domains": policy.accepted_domains, "mailboxes": policy.mailboxes,
                                            "cover": cover, "error": error, "form": form or {},
                                            "kind": request.url.path.strip("/").split("/")[0]},
                  nav="/" + request.url.path.strip("/").split("/")[0], status=status)


@router.get("/domains")
def domains(request: Request):
    return _page(request)


@router.get("/mailboxes")
def mailboxes(request: Request):
    return _page(request)


@router.post("/domains")
async def add_domain(request: Request):
    form = await request.form()
    values = {"name": str(form.get("name", "")).strip(), "type": str(form.get("type", "authoritative")),
              "match_subdomains": form.get("match_subdomains") == "true"}
    return _save(request, "accepted_domain", "new", "", values, "/domains", f"Accepted domain {values['name']!r} added")


@router.post("/mailboxes")
async def add_mailbox(request: Request):
    form = await request.form()
    values = {"address": str(form.get("address", "")).strip(), "aliases": lines(form.get("aliases"))}
    return _save(request, "mailbox", "new", "", values, "/mailboxes", f"Mailbox {values['address']!r} added")


@router.post("/domains/{name}/remove")
def remove_domain(request: Request, name: str):
    return _save(request, "accepted_domain", "remove", name, None, "/domains", f"Accepted domain {name!r} removed")


@router.post("/mailboxes/{address}/remove")
def remove_mailbox(request: Request, address: str):
    return _save(request, "mailbox", "remove", address, None, "/mailboxes", f"Mailbox {address!r} removed")


def _save(request: Request, kind: str, op: str, ident: str, values, back: str, done: str):
    try:
        result = save_edit(state(request), kind, op, ident, values, actor(request))
    except MxgateError as exc:
        return _page(request, str(exc), status=422, form=values)
    msg = f"{done} (policy version {result.version})."
    if result.warnings:
        msg += " Warnings: " + "; ".join(result.warnings)
    return redirect(request, back, msg)
