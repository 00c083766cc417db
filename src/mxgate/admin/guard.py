"""Who may call the admin centre: signed session cookies, CSRF tokens, login rate limits, and the
FastAPI dependencies that pages and the API hang off.

Owns: the cookie format (itsdangerous-signed `{user, sid, csrf}`, HttpOnly, SameSite=Strict),
the rule that every state-changing request carries the session's CSRF token (a form field
`csrf_token` or an `X-CSRF-Token` header; htmx sends the header), bearer tokens for the REST
API, and the per-IP login limiter. Must not know what pages or API resources do.

Nothing but the login page, /healthz, /readyz and (when configured) /metrics is reachable
without one of these checks: app.py mounts every other router with a dependency from here.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import HTTPException, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from mxgate.admin import auth

SESSION_COOKIE = "mxgate_session"
LOGIN_COOKIE = "mxgate_login"  # CSRF for the login form itself, before a session exists
SESSION_MAX_AGE = 12 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Five wrong passwords a minute per address: slows guessing to ~7,000 tries a day, and the
# argon2 hash makes each try cost the attacker as much as it costs us.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW = 60.0


@dataclass(frozen=True)
class Principal:
    """The caller: an admin user (via session) or an API token (via bearer header)."""

    name: str
    kind: str  # "session" | "token"
    csrf: str = ""
    sid: str = ""

    @property
    def actor(self) -> str:
        return f"{'web' if self.kind == 'session' else 'api'}:{self.name}"


class NeedLogin(Exception):
    """Raised by page guards; app.py turns it into a redirect to /login."""

    def __init__(self, next_url: str):
        self.next_url = next_url


class LoginLimiter:
    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES, window: float = LOGIN_WINDOW):
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, ip: str, now: float | None = None) -> float:
        """Seconds this address must wait before trying again (0 = may try now)."""
        now = now or time.monotonic()
        with self._lock:
            q = self._failures.get(ip)
            if not q:
                return 0.0
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) < self.max_failures:
                return 0.0
            return max(0.0, self.window - (now - q[0]))

    def failed(self, ip: str) -> None:
        with self._lock:
            self._failures.setdefault(ip, deque()).append(time.monotonic())

    def succeeded(self, ip: str) -> None:
        with self._lock:
            self._failures.pop(ip, None)


class Sessions:
    def __init__(self, key: bytes):
        self._signer = URLSafeTimedSerializer(key, salt="mxgate-admin-session")
        self._login_signer = URLSafeTimedSerializer(key, salt="mxgate-admin-login")
        self._revoked: dict[str, float] = {}  # sid -> expiry; logout makes a copied cookie useless

    def create(self, user: str) -> tuple[str, Principal]:
        p = Principal(user, "session", csrf=secrets.token_urlsafe(24), sid=secrets.token_urlsafe(16))
        return self._signer.dumps({"u": p.name, "sid": p.sid, "csrf": p.csrf}), p

    def read(self, cookie: str | None) -> Principal | None:
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict) or data.get("sid") in self._revoked:
            return None
        return Principal(str(data["u"]), "session", csrf=str(data["csrf"]), sid=str(data["sid"]))

    def revoke(self, p: Principal) -> None:
        now = time.time()
        self._revoked = {s: t for s, t in self._revoked.items() if t > now}
        self._revoked[p.sid] = now + SESSION_MAX_AGE

    def login_token(self) -> tuple[str, str]:
        token = secrets.token_urlsafe(24)
        return token, self._login_signer.dumps(token)

    def login_token_ok(self, cookie: str | None, form_token: str | None) -> bool:
        if not cookie or not form_token:
            return False
        try:
            expected = self._login_signer.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return secrets.compare_digest(str(expected), form_token)


def _state(request: Request):
    return request.app.state.admin


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _csrf_ok(request: Request, p: Principal) -> bool:
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").split(";")[0] in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await request.form()).get("csrf_token")  # Starlette caches the parsed form for the handler
    return bool(sent) and secrets.compare_digest(str(sent), p.csrf)


async def page_user(request: Request) -> Principal:
    """Dependency for every page: a valid session, and the CSRF token on anything but GET."""
    p = _state(request).sessions.read(request.cookies.get(SESSION_COOKIE))
    if p is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise NeedLogin(quote(target, safe="/?=&"))
    if request.method not in SAFE_METHODS and not await _csrf_ok(request, p):
        raise HTTPException(403, "CSRF token missing or wrong; reload the page and try again")
    request.state.principal = p
    return p


async def api_user(request: Request) -> Principal:
    """Dependency for /api/v1: a bearer token, or a session cookie plus X-CSRF-Token on writes."""
    st = _state(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        name = auth.token_name(st.engine, header[7:].strip())
        if name is None:
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
        p = Principal(name, "token")
    else:
        p = st.sessions.read(request.cookies.get(SESSION_COOKIE))
        if p is None:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        if request.method not in SAFE_METHODS and not await _csrf_ok(request, p):
            raise HTTPException(403, "CSRF token missing or wrong")
    request.state.principal = p
    return p


async def metrics_user(request: Request) -> None:
    """/metrics is public when [admin] metrics_public is true (a local Prometheus); else it needs auth."""
    if not _state(request).settings.metrics_public:
        await api_user(request)
