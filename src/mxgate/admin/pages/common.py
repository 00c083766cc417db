"""What every page shares: rendering with the caller and CSRF token in context, redirects after
a POST (so a reload never repeats a change), and time formatting.

Owns: the page context conventions (`principal`, `nav`, `flash`). Must not know any page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from pathlib import Path

from fastapi import Request
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

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
    context = {"principal": getattr(request.state, "principal", None), "nav": nav,
               "flash": request.query_params.get("msg", "")}
    context.update(ctx or {})
    return templates.TemplateResponse(request, name, context, status_code=status)


def redirect(url: str, msg: str = "") -> RedirectResponse:
    if msg:
        url += ("&" if "?" in url else "?") + "msg=" + quote(msg)
    return RedirectResponse(url, status_code=303)


def lines(text: str | None) -> list[str]:
    """A text area's list: one item per line or comma-separated, blanks dropped."""
    return [v.strip() for v in (text or "").replace(",", "\n").splitlines() if v.strip()]
