"""What every page shares: rendering with the caller and CSRF token in context, redirects after
a POST (so a reload never repeats a change), and time formatting.

Owns: the page context conventions (`principal`, `nav`, `flash`). Must not know any page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pathlib import Path

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mxgate.admin.guard import FLASH_COOKIE, cookie_secure

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def utc(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


templates.env.filters["utc"] = utc


def state(request: Request):
    return request.app.state.admin


def actor(request: Request) -> str:
    return request.state.principal.actor


def render(request: Request, name: str, ctx: dict[str, Any] | None = None, *, nav: str = "", status: int = 200):
    # The flash message comes from a signed cookie set by redirect(), never from the URL: a link
    # must not be able to put words on an admin page.
    flash = state(request).sessions.flash_message(request.cookies.get(FLASH_COOKIE))
    context = {"principal": getattr(request.state, "principal", None), "nav": nav, "flash": flash}
    context.update(ctx or {})
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    if flash:
        resp.delete_cookie(FLASH_COOKIE, path="/")
    return resp


def redirect(request: Request, url: str, msg: str = "", response: Response | None = None) -> Response:
    """303 to `url` (or the given response, e.g. htmx's 204 + HX-Redirect) showing `msg` once there."""
    resp = response or RedirectResponse(url, status_code=303)
    if msg:
        resp.set_cookie(FLASH_COOKIE, state(request).sessions.flash_cookie(msg), max_age=300, httponly=True,
                        samesite="strict", path="/", secure=cookie_secure(request))
    return resp


def lines(text: str | None) -> list[str]:
    """A text area's list: one item per line or comma-separated, blanks dropped."""
    return [v.strip() for v in (text or "").replace(",", "\n").splitlines() if v.strip()]
