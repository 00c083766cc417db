"""Listening sockets for one role: binding, connection caps, TLS context, the role hooks' contract.

Owns: `Listener` (servers for each "host:port", per-IP and global connection counts, graceful
stop) and `Role`, the hooks a role implements, in protocol order. Must not decide policy.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from mxgate.config.node import LimitsSection
from mxgate.errors import ConfigError
from mxgate.names import format_hostport
from mxgate.server import sockets
from mxgate.server.session import SmtpSession
from mxgate.server.sockets import parse_listen
from mxgate.verdict import Verdict, accept

if TYPE_CHECKING:
    from mxgate.server.session import MessageBody, Transaction
    from mxgate.smtp.address import Address

log = logging.getLogger("mxgate.listener")

RcptAnswer = tuple[Verdict, Any]  # the verdict and the role's decision kept with the recipient


class Role:
    """Hooks called by SmtpSession in protocol order; each returns a Verdict. Defaults accept.

    `on_mail` and `on_rcpt` may instead return an awaitable of their answer (a lookup that must
    not block the loop, e.g. an RCPT callahead): the session waits for it and resumes itself
    (SmtpSession.wait), so no role needs a session subclass."""

    name = "role"
    hostname = "localhost"
    # MAIL FROM parameters of the extensions the role offers (RFC 5321 §4.1.1.11: any other is 555).
    mail_parameters: tuple[str, ...] = ("SIZE", "BODY", "SMTPUTF8")

    def on_connect(self, s: "SmtpSession") -> Verdict:
        return accept("connect-ok")

    def on_helo(self, s: "SmtpSession", name: str) -> Verdict:
        return accept("helo-ok")

    def ehlo_keywords(self, s: "SmtpSession") -> list[str]:
        words = ["PIPELINING", f"SIZE {s.limits.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                 "CHUNKING"]
        if s.tls is None and s.listener.ssl_context() is not None:
            words.append("STARTTLS")
        return words

    def on_tls(self, s: "SmtpSession") -> None:
        pass

    def auth_start(self, s: "SmtpSession", arg: str) -> None:
        s.error("unknown-command")  # AUTH is not offered on anonymous listeners: counted as any unknown command

    def auth_continue(self, s: "SmtpSession", raw: bytes) -> None:
        s.set_mode("command")

    def disk_ok(self) -> bool:
        return True

    def on_mail(self, s: "SmtpSession", sender: "Address", params: dict[str, str]) -> Verdict | Awaitable[Verdict]:
        return accept("sender-ok")

    def on_rcpt(self, s: "SmtpSession", rcpt: "Address") -> RcptAnswer | Awaitable[RcptAnswer]:
        return accept("recipient-ok"), None

    async def on_message(self, s: "SmtpSession", txn: "Transaction", body: "MessageBody") -> Verdict:
        raise NotImplementedError

    def on_refused(self, s: "SmtpSession", stage: str, verdict: Verdict, **facts: Any) -> None:
        pass

    def on_disconnect(self, s: "SmtpSession") -> None:
        pass

    @staticmethod
    def refused_envelope(s: "SmtpSession", facts: dict[str, Any]) -> tuple[str, list[str]]:
        """The sender and recipients an `on_refused` call concerns (none yet before MAIL/RCPT)."""
        sender = facts.get("sender") or (s.txn.sender if s.txn else None)
        rcpts = [facts["rcpt"]] if facts.get("rcpt") is not None else [r.address for r in facts.get("recipients", [])]
        return (str(sender) if sender is not None else ""), [str(r) for r in rcpts]


class Listener:
    def __init__(self, role: Role, limits: LimitsSection, *, ssl_context: Callable[[], ssl.SSLContext | None],
                 spill_dir: str | None = None, trusted_proxies: list[str] | tuple[str, ...] = ()):
        from mxgate.policy.ipset import PrefixTable, parse_network

        self.role = role
        # Only these peers may tell us, with a PROXY header, who the client really is.
        self.trusted_proxies = PrefixTable((parse_network(p), "proxy") for p in trusted_proxies)
        self.limits = limits
        self._ssl_context = ssl_context
        self.spill_dir = spill_dir
        self.loop = asyncio.get_event_loop()
        self.servers: list[asyncio.AbstractServer] = []
        self.sessions: set[Any] = set()
        self.per_ip: dict[Any, int] = {}
        self.addresses: list[str] = []
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        # Worker processes of one node bind the same addresses; the kernel spreads connections.
        self.reuse_port = False

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context()

    async def start(self, listen: list[str]) -> None:
        self.loop = asyncio.get_running_loop()
        for addr in listen:
            host, port = parse_listen(addr)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            opened = sockets.take(host, port)  # bound before privileges were dropped, or inherited
            try:
                if opened is not None:
                    server = await self.loop.create_server(lambda: SmtpSession(self), sock=opened,
                                                           backlog=sockets.BACKLOG)
                else:
                    server = await self.loop.create_server(lambda: SmtpSession(self), host, port, family=family,
                                                           reuse_address=True, reuse_port=self.reuse_port,
                                                           backlog=sockets.BACKLOG)
            except OSError as exc:
                raise ConfigError(f"{self.role.name}: cannot listen on {addr}: {exc.strerror or exc}") from None
            self.servers.append(server)
            for sock in server.sockets:
                h, p = sock.getsockname()[:2]
                self.addresses.append(format_hostport(h, p))

    def keep(self, task: asyncio.Task) -> None:
        """Hold a session's background task (TLS handshake, delivery): the loop keeps only weak
        references, and a task collected mid-flight would lose an acknowledged message's reply."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def admit(self, session: Any) -> str | None:
        """Connection caps: a reason to refuse (421 4.7.0), or None to admit."""
        if len(self.sessions) >= self.limits.max_connections:
            return "too-many-connections"
        count = self.per_ip.get(session.peer_ip, 0)
        if count >= self.limits.max_connections_per_ip:
            return "too-many-connections-from-ip"
        self.per_ip[session.peer_ip] = count + 1
        self.sessions.add(session)
        return None

    def release(self, session: Any) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            left = self.per_ip.get(session.peer_ip, 1) - 1
            if left <= 0:
                self.per_ip.pop(session.peer_ip, None)
            else:
                self.per_ip[session.peer_ip] = left

    async def stop(self, deadline: float = 10.0) -> None:
        """Stop accepting; tell idle sessions 421; give busy ones `deadline` seconds to finish."""
        self.stopping = True
        for server in self.servers:
            server.close()
        for s in list(self.sessions):
            s.shutdown()
        end = self.loop.time() + deadline
        # A session we closed may still be waiting for the peer's TLS close_notify; it is done.
        while any(not s.is_closed for s in self.sessions) and self.loop.time() < end:
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            if s.transport:
                s.transport.abort()
        for server in self.servers:
            await server.wait_closed()
