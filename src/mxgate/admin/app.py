"""The admin centre as an ASGI app, and its start-up inside a node's event loop.

Owns: assembling the routers (login, pages, /api/v1, operations), the exception handlers that
turn mxgate's errors into HTTP answers, static files and templates, and running uvicorn on
`[admin] listen` as one more service of the node (`node.extras`).
Must not know the details of any page or resource (see pages/ and api/).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from starlette.exceptions import HTTPException as RoutingHTTPException  # the router's own 404/405; FastAPI's subclasses it
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from mxgate import errors
from mxgate import metrics
from mxgate.admin import auth, held
from mxgate.admin.guard import LoginLimiter, NeedLogin, Sessions, page_user
from mxgate.admin.state import AdminState
from mxgate.errors import ConfigError
from mxgate.names import parse_hostport

log = logging.getLogger("mxgate.admin")

HERE = Path(__file__).resolve().parent


# No inline script or style, no framing, no plugin content; forms post only here (issue 17).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


def host_allowed(host: str, allowed: list[str]) -> bool:
    """The Host header names this admin centre: an IP literal, localhost or a configured name.
    A DNS-rebinding page's requests carry the attacker's name and are refused."""
    import ipaddress

    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name in ("localhost", *(a.strip().lower() for a in allowed))


class SecurityHeaders:
    """ASGI middleware: refuse unknown Host names, and add the security headers to every answer."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app = app
        self.allowed = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.allowed):
            body = b"unknown Host: add it to [admin] allowed_hosts\n"
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                                    *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": body})
            return
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))  # pages hold CSRF tokens and mail data
                if tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# The largest request body the admin centre reads, in bytes: a whole policy document of tens of
# thousands of mailboxes fits. FastAPI reads and parses a body before a route's authentication
# runs, so without a cap anyone who can connect could make the node's process hold any amount.
MAX_BODY = 8 * 1024 * 1024
_TOO_LARGE = f"request body too large: at most {MAX_BODY} bytes"


class BodyLimit:
    """ASGI middleware: a body over MAX_BODY gets 413 — refused by its Content-Length before any
    of it is read, or, when chunked, as soon as what arrived passes the limit."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            body = JSONResponse({"error": _TOO_LARGE}, status_code=413)
            return await body(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise HTTPException(413, detail=_TOO_LARGE)  # FastAPI passes it to _http below
            return message

        await self.app(scope, limited, send)


# Seconds a client has to send a request's headers, from connecting or from its last answer.
# uvicorn waits for ever, and each waiting connection holds a descriptor of the node's first
# process, the one that also serves SMTP (session 10).
HEADER_TIMEOUT = 30.0


class _AdminHttp(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are not complete
    HEADER_TIMEOUT after it opened or after its last response (idle or slow-header clients)."""

    _headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_headers()

    def connection_lost(self, exc) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        self._headers_due = self.loop.call_later(HEADER_TIMEOUT, self._headers_overdue)

    def _headers_overdue(self) -> None:
        import h11

        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no request under way
            self.transport.close()


def create_app(st: AdminState) -> FastAPI:
    from mxgate.admin import api, ops, pages
    from mxgate.admin.pages import login
    from mxgate.admin.pages.common import templates

    # The schema is served behind authentication by api/system.py; no docs UI (it would need a CDN).
    app = FastAPI(title="mxgate admin centre", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.admin = st
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, allowed_hosts=list(st.settings.allowed_hosts))  # outermost: Host first
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(ops.router)
    app.include_router(login.router)
    app.include_router(api.router)
    app.include_router(pages.router, dependencies=[Depends(page_user)])

    @app.exception_handler(NeedLogin)
    async def _login(request: Request, exc: NeedLogin):
        return RedirectResponse(f"/login?next={exc.next_url}", status_code=303)

    @app.exception_handler(errors.PolicyError)
    async def _policy(request: Request, exc: errors.PolicyError):
        # The same text the CLI prints after "error: " (one code path for validation).
        issues = [vars(i) for i in getattr(exc, "issues", [])]
        return JSONResponse({"error": str(exc), "issues": issues}, status_code=422)

    @app.exception_handler(errors.NotFoundError)
    async def _missing(request: Request, exc: errors.NotFoundError):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(errors.ConcurrentChangeError)
    async def _conflict(request: Request, exc: errors.ConcurrentChangeError):
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.exception_handler(errors.MxgateError)
    async def _other(request: Request, exc: errors.MxgateError):
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # FastAPI's default answer echoes the input; ours names the field and the rule only.
        issues = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        text = "; ".join(f"{'.'.join(str(x) for x in i['loc'][1:]) or 'request'}: {i['msg']}" for i in issues)
        if request.url.path.startswith("/api/") or request.headers.get("hx-request"):
            return JSONResponse({"error": text, "issues": issues}, status_code=422)
        ctx = {"status": 422, "message": text, "principal": getattr(request.state, "principal", None)}
        return templates.TemplateResponse(request, "error.html", ctx, status_code=422)

    @app.exception_handler(RoutingHTTPException)
    async def _http(request: Request, exc: RoutingHTTPException):
        if request.url.path.startswith("/api/") or request.headers.get("hx-request"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        ctx = {"status": exc.status_code, "message": exc.detail, "principal": getattr(request.state, "principal", None)}
        return templates.TemplateResponse(request, "error.html", ctx,
                                          status_code=exc.status_code, headers=exc.headers)

    return app


def state_for(node) -> AdminState:
    return AdminState(engine=node.engine, policy_store=node.policy_store, trace=node.trace, node_name=node.name,
                      home=node.home, settings=node.settings.admin, sessions=Sessions(auth.session_key(node.home.keys), node.engine),
                      node=node, limiter=LoginLimiter(shared=getattr(node, "cluster", None)))


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self):
        # The node owns SIGTERM/SIGINT and stops us through AdminService.stop().
        yield


class AdminService:
    """The running admin centre: one uvicorn server on the node's loop."""

    role_name = "admin"  # reported in node status beside the SMTP roles

    def __init__(self, st: AdminState, sock: socket.socket):
        self.state = st
        self.sock = sock
        self.address = "%s:%d" % sock.getsockname()[:2] if sock.family == socket.AF_INET else "[%s]:%d" % sock.getsockname()[:2]
        tls = {}
        if st.settings.tls_cert:
            tls = {"ssl_certfile": st.settings.tls_cert, "ssl_keyfile": st.settings.tls_key or None}
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(create_app(st), log_level="warning", access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False, http=_AdminHttp, **tls)
        self.server = _Server(config)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        try:
            self.server.config.load()  # reads the certificate now, so a bad one is a clear start-up error
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[admin] tls_cert/tls_key: cannot load: {exc}") from None
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                exc = self.task.exception() if not self.task.cancelled() else None
                raise ConfigError(f"admin: could not start on {self.address}: {exc!r}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.state.jobs.cancel_all()
        self.server.should_exit = True
        if self.task:
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, SystemExit):
                self.task.cancel()
        self.sock.close()

    @property
    def addresses(self) -> list[str]:
        return [f"{self.scheme}://{self.address}/"]

    def describe(self) -> str:
        return f"admin        {self.scheme}://{self.address}/"


def _bind(listen: str) -> socket.socket:
    try:
        host, port = parse_hostport(listen if not listen.startswith(":") else "127.0.0.1" + listen, min_port=0)
    except ValueError as exc:
        raise ConfigError(f"[admin] listen: cannot listen on {listen!r}: {exc}") from None
    from mxgate.server import sockets

    if (opened := sockets.take(host, port)) is not None:
        return opened  # bound before `mxgate serve` dropped root
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, ValueError) as exc:
        sock.close()
        raise ConfigError(f"[admin] listen: cannot listen on {listen!r}: {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def renew_in_place(node, live_context, cert: str, key: str) -> None:
    """The admin centre's HTTPS certificate renews like the SMTP listeners' (server/tls.py
    ReloadingContext, checked by the node): uvicorn keeps its own SSL context, so each handshake is
    switched to the current one in the ClientHello callback, which OpenSSL calls with or without SNI."""
    from mxgate.server.tls import ReloadingContext

    current = ReloadingContext("admin", cert, key or cert)
    node.tls["admin"] = current

    def use_current(ssl_object, _server_name, _context) -> None:
        ssl_object.context = current()

    live_context.sni_callback = use_current


async def start_admin(node) -> AdminService:
    """Role starter (server/node.py OPTIONAL_ROLES): serve the admin centre on [admin] listen."""
    password = await asyncio.to_thread(auth.ensure_first_admin, node.engine)
    if password:
        # Printed once to the terminal that started the node, never to the log.
        sys.stderr.write(f"mxgate admin centre: created user '{auth.DEFAULT_ADMIN}' with password {password}\n"
                         "  (shown once; change it with `mxgate admin set-password`)\n")
        sys.stderr.flush()
    watcher = node.watcher
    metrics.set_policy_reader(lambda: watcher.current.version)

    def store_facts() -> dict[str, float]:
        from mxgate.admin.dashboard import lockdown_status

        pv = node.policy_store.current()
        return {"latest": pv.version, "uncovered": sum(1 for d in lockdown_status(pv.policy) if not d.ok)}

    metrics.set_store_reader(store_facts)
    st = state_for(node)
    metrics.set_queue_reader(lambda: held.queue_depths(st))
    trace = node.trace
    metrics.set_trace_reader(lambda: (trace.rows, trace.journal.pending if trace.journal else 0))
    service = AdminService(st, _bind(node.settings.admin.listen))
    await service.start()
    node.extras.append(service)
    if node.settings.admin.tls_cert:
        renew_in_place(node, service.server.config.ssl, node.settings.admin.tls_cert, node.settings.admin.tls_key)
    log.info("admin centre listening on %s://%s/", service.scheme, service.address)
    return service
