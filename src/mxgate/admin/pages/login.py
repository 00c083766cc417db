"""Log in and out of the admin centre.

Owns: the login form (its own single-use CSRF token in a signed cookie, since no session exists
yet, which also carries the `next` path), the per-address and per-user rate limit, and setting or revoking the session cookie. Must not know any
other page. This router is mounted without the page guard; logout lives in the guarded pages.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from mxgate import metrics
from mxgate.admin import auth
from mxgate.admin.guard import (LOGIN_COOKIE, LOGIN_TOKEN_MAX_AGE, SESSION_COOKIE, SESSION_MAX_AGE, client_ip,
                                cookie_secure)
from mxgate.admin.pages.common import render, state

log = logging.getLogger("mxgate.admin.login")
router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only local paths: an attacker's link must not send a fresh login to another site.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(request: Request, error: str = "", username: str = "", status: int = 200, next_url: str | None = None):
    if next_url is None:
        next_url = _safe_next(request.query_params.get("next"))
    token, cookie = state(request).sessions.login_token(next_url)
    resp = render(request, "login.html", {"login_token": token, "error": error, "username": username}, status=status)
    resp.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_TOKEN_MAX_AGE, httponly=True, samesite="strict", path="/login",
                    secure=cookie_secure(request))
    return resp


@router.get("/login")
async def login_page(request: Request):
    return _form(request)


@router.post("/login")
async def login(request: Request):
    st = state(request)
    ip = client_ip(request)
    form = await request.form()
    username = str(form.get("username", ""))[:64]
    # The form token is spent first (one POST per token), then the attempt is counted against the
    # address and the user name *before* the slow password check, so parallel guesses cannot all
    # be checked before the limit applies.
    next_url = st.sessions.use_login_token(request.cookies.get(LOGIN_COOKIE), form.get("csrf_token"))
    if next_url is None:
        return _form(request, "The login form expired or was not sent from this site; please try again.", username,
                     status=403, next_url="/")
    keys = st.limiter.keys(ip, username)
    wait = st.limiter.admit(keys)
    if wait:
        metrics.LOGIN_FAILURES.inc()
        log.warning("admin login for %r from %s refused: too many attempts", username, ip)
        resp = _form(request, f"Too many failed logins; try again in {int(wait) + 1} s.", username, status=429,
                     next_url=next_url)
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    ok = await asyncio.to_thread(auth.check_password, st.engine, username, str(form.get("password", "")))
    if not ok:
        metrics.LOGIN_FAILURES.inc()
        log.warning("failed admin login for %r from %s", username, ip)  # never the password
        return _form(request, "Wrong user name or password.", username, status=401, next_url=next_url)
    st.limiter.succeeded(keys)
    cookie, _principal = await asyncio.to_thread(st.sessions.create, username)
    resp = RedirectResponse(_safe_next(next_url), status_code=303)
    resp.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_MAX_AGE, httponly=True, samesite="strict", path="/",
                    secure=cookie_secure(request))
    resp.delete_cookie(LOGIN_COOKIE, path="/login")
    log.info("admin %r logged in from %s", username, ip)
    return resp


async def logout_response(request: Request) -> RedirectResponse:
    p = request.state.principal
    await asyncio.to_thread(state(request).sessions.revoke, p)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
