"""Who may call the admin centre: signed session cookies, CSRF tokens, login rate limits, and the
FastAPI dependencies that pages and the API hang off.

Owns: the cookie format (a random session secret, HttpOnly, SameSite=Strict, Secure over TLS; its
hash, user and CSRF token live in the shared store),
the rule that every state-changing request carries the session's CSRF token (a form field
`csrf_token` or an `X-CSRF-Token` header; htmx sends the header), bearer tokens for the REST
API, and the login limiter (per address and per user name). Must not know what pages or API resources do.

Nothing but the login page, /healthz, /readyz and (when configured) /metrics is reachable
without one of these checks: app.py mounts every other router with a dependency from here.
"""

from __future__ import annotations

import asyncio
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
FLASH_COOKIE = "mxgate_flash"  # the message shown once after a redirect (never a query parameter)
LOGIN_TOKEN_MAX_AGE = 3600
SESSION_MAX_AGE = 12 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Five attempts a minute per address and per user name: slows guessing to ~7,000 tries a day, and the
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
    """Login attempts per address and per user name, counted *before* the password is checked:
    sixty parallel guesses are sixty attempts, so only the first LOGIN_MAX_FAILURES reach argon2."""

    MAX_TRACKED = 100_000  # keys remembered; beyond this, idle ones are dropped first
    SCOPE = "admin-login"

    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES, window: float = LOGIN_WINDOW, shared=None):
        self.max_failures = max_failures
        self.window = window
        # store/cluster.ClusterState: attempts counted across every node on the store (wall clock),
        # so guessing through N admin centres buys nothing; None: this process alone.
        self.shared = shared
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(ip: str, username: str) -> tuple[str, str]:
        return f"ip:{ip}", f"user:{username.strip().lower()}"

    def _wait(self, key: str, now: float) -> float:
        q = self._attempts.get(key)
        if not q:
            return 0.0
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._attempts[key]
            return 0.0
        return 0.0 if len(q) < self.max_failures else max(0.0, self.window - (now - q[0]))

    def admit(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """Count one attempt against every key and return 0, or, when any key is over the limit,
        count nothing and return the seconds to wait. Atomic: callers race on the lock, not the hash."""
        if self.shared is not None:
            return self._admit_shared(keys, now if now is not None else time.time())
        now = now if now is not None else time.monotonic()
        with self._lock:
            wait = max(self._wait(k, now) for k in keys)
            if wait:
                return wait
            if len(self._attempts) >= self.MAX_TRACKED:
                for k in [k for k in list(self._attempts) if self._wait(k, now) == 0.0][: self.MAX_TRACKED // 10]:
                    self._attempts.pop(k, None)
            for k in keys:
                self._attempts.setdefault(k, deque()).append(now)
            return 0.0

    def _admit_shared(self, keys: tuple[str, ...], now: float) -> float:
        with self._lock:  # one check-and-count per process; nodes race within one sync interval
            if any(self.shared.estimate(self.SCOPE, k, self.window, now, strict=True) >= self.max_failures
                   for k in keys):
                return self.window - (now % self.window) or self.window  # the bucket's end bounds the wait
            for k in keys:
                self.shared.add(self.SCOPE, k, self.window, now)
        self.shared.kick()  # the other nodes see the attempt at once, not at the next interval
        return 0.0

    def succeeded(self, keys: tuple[str, ...]) -> None:
        if self.shared is not None:  # the attempt that succeeded does not count against the keys
            for k in keys:
                self.shared.add(self.SCOPE, k, self.window, time.time(), -1)
            return
        with self._lock:
            for k in keys:
                self._attempts.pop(k, None)

    def __len__(self) -> int:
        return len(self._attempts)


class Sessions:
    """Admin sessions: the cookie is a random 192-bit session secret; the store (auth.py) keeps only
    its hash, with the user and CSRF token. The row is the truth: ending a session there ends it on
    every node sharing the store and survives a restart, and any node accepts a live one."""

    def __init__(self, key: bytes, engine):
        self.engine = engine
        self._login_signer = URLSafeTimedSerializer(key, salt="mxgate-admin-login")
        self._flash_signer = URLSafeTimedSerializer(key, salt="mxgate-admin-flash")
        self._used_login: dict[str, float] = {}  # login form token -> expiry: each is good for one POST
        self._lock = threading.Lock()

    def create(self, user: str) -> tuple[str, Principal]:
        cookie, row = auth.store_session(self.engine, user, SESSION_MAX_AGE)
        return cookie, Principal(user, "session", csrf=row.csrf, sid=row.sid)

    def read(self, cookie: str | None) -> Principal | None:
        if not cookie or len(cookie) > 128:
            return None
        row = auth.find_session(self.engine, cookie)
        if row is None:
            return None
        return Principal(row.username, "session", csrf=row.csrf, sid=row.sid)

    def revoke(self, p: Principal) -> None:
        auth.end_session(self.engine, p.sid)

    def login_token(self, next_url: str = "/") -> tuple[str, str]:
        """A form token and the signed cookie that vouches for it (and remembers where to go next,
        so the page never echoes a query parameter)."""
        token = secrets.token_urlsafe(24)
        return token, self._login_signer.dumps({"t": token, "n": next_url})

    def use_login_token(self, cookie: str | None, form_token: str | None) -> str | None:
        """Spend the login form's token: the `next` path when it is valid and unused, else None."""
        if not cookie or not form_token:
            return None
        try:
            data = self._login_signer.loads(cookie, max_age=LOGIN_TOKEN_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not secrets.compare_digest(str(data.get("t", "")), str(form_token)):
            return None
        now = time.time()
        with self._lock:
            if form_token in self._used_login:
                return None
            self._used_login = {t: exp for t, exp in self._used_login.items() if exp > now}
            self._used_login[str(form_token)] = now + LOGIN_TOKEN_MAX_AGE
        return str(data.get("n") or "/")

    def flash_cookie(self, message: str) -> str:
        return self._flash_signer.dumps(message)

    def flash_message(self, cookie: str | None) -> str:
        if not cookie:
            return ""
        try:
            return str(self._flash_signer.loads(cookie, max_age=300))
        except BadSignature:
            return ""


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


async def _session(request: Request) -> Principal | None:
    # A store lookup per request: off the event loop, which the SMTP roles share.
    return await asyncio.to_thread(_state(request).sessions.read, request.cookies.get(SESSION_COOKIE))


def cookie_secure(request: Request) -> bool:
    """Cookies carry `Secure` whenever the admin centre is served over TLS."""
    return request.url.scheme == "https"


async def page_user(request: Request) -> Principal:
    """Dependency for every page: a valid session, and the CSRF token on anything but GET."""
    p = await _session(request)
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
        name = await asyncio.to_thread(auth.token_name, st.engine, header[7:].strip())
        if name is None:
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
        p = Principal(name, "token")
    else:
        p = await _session(request)
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
