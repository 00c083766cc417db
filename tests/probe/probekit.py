"""Real loopback servers for the probe tests: aiosmtpd, a scripted SMTP peer, a DNS server.

Servers run on their own event loop in a background thread, so the same fixtures serve async
tests (probe on pytest's loop) and CliRunner tests (which call asyncio.run themselves).
Every socket is bound to 127.0.0.1 or ::1 with port 0.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from aiosmtpd.smtp import SMTP

REFUSED_PEER = "127.0.0.66"
ATTRIBUTION_REFUSAL = "550 5.7.51 TenantInboundAttribution; Rejecting"


class BackgroundLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop_server(self, server: asyncio.Server) -> None:
        async def stop() -> None:  # asyncio objects are not thread-safe: close on their loop
            server.close()
        self.run(stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def bg():
    b = BackgroundLoop()
    yield b
    b.close()


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: str
    wrong_ca_file: str
    client_pem: str  # key + cert chain in one file

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("mx.test", "127.0.0.1", "::1").configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, wrong = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    wrong.cert_pem.write_to_path(str(d / "wrong.pem"))
    ca.issue_cert("client.test").private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    return Pki(ca, str(d / "ca.pem"), str(d / "wrong.pem"), str(d / "client.pem"))


class RecordingHandler:
    """Accepts mail, except RCPT from `refused_peers` (like a locked-down mailbox server)."""

    def __init__(self, refused_peers=(REFUSED_PEER,)) -> None:
        self.refused_peers = set(refused_peers)
        self.peers: list[str] = []
        self.messages: list[tuple[str, tuple[str, ...], bytes]] = []
        self.client_certs: list[object] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.peers.append(session.peer[0])
        if session.ssl:
            self.client_certs.append(session.ssl.get("peercert"))
        if session.peer[0] in self.refused_peers:
            return ATTRIBUTION_REFUSAL
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"


@dataclass
class Running:
    host: str
    port: int
    handler: object = None

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@pytest.fixture
def smtpd(bg):
    """start(tls=None, host="127.0.0.1", refused_peers=...) → Running with .handler."""
    servers = []

    def start(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1", **kw) -> Running:
        handler = RecordingHandler(**kw)

        async def serve():
            loop = asyncio.get_running_loop()
            return await loop.create_server(
                lambda: SMTP(handler, hostname="mx.test", ident="test-smtpd", tls_context=tls,
                             require_starttls=False),
                host, 0)
        server = bg.run(serve())
        servers.append(server)
        return Running(host, server.sockets[0].getsockname()[1], handler)

    yield start
    for s in servers:
        bg.stop_server(s)


@dataclass
class Script:
    """A scripted SMTP peer: fixed replies per verb, optional PROXY capture and STARTTLS."""

    greeting: bytes = b"220 scripted.test ESMTP\r\n"
    replies: dict[str, bytes] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    starttls_reply: bytes = b"220 2.0.0 go ahead\r\n"
    data_end: bytes = b"250 2.0.0 queued\r\n"
    read_proxy: bool = False
    received: list[bytes] = field(default_factory=list)
    proxy_header: bytes | None = None

    def reply_for(self, verb: str, in_tls: bool) -> bytes:
        if verb in self.replies:
            return self.replies[verb]
        if verb in ("EHLO", "HELO"):
            ext = b"250-PIPELINING\r\n250 STARTTLS\r\n" if self.tls and not in_tls else b"250 8BITMIME\r\n"
            return b"250-scripted.test\r\n" + ext
        if verb == "STARTTLS":
            return self.starttls_reply if self.tls else b"502 5.5.1 not offered\r\n"
        return {"DATA": b"354 go on\r\n", "QUIT": b"221 bye\r\n"}.get(verb, b"250 2.0.0 ok\r\n")

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.read_proxy:
                self.proxy_header = await _read_proxy(reader)
            writer.write(self.greeting)
            in_tls = False
            while line := await reader.readline():
                self.received.append(line)
                verb = line.split(b" ")[0].strip().upper().decode("latin-1")
                reply = self.reply_for(verb, in_tls)
                writer.write(reply)
                if verb == "QUIT":
                    break
                if verb == "STARTTLS" and self.tls and reply.startswith(b"220"):
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    in_tls = True
                elif verb == "DATA" and reply.startswith(b"354"):
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.received.append(body)
                    writer.write(self.data_end)
            await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _read_proxy(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(16)
    if head.startswith(b"PROXY "):
        return head + await reader.readuntil(b"\r\n")
    length = int.from_bytes(head[14:16], "big")  # PROXY v2: length of the address block
    return head + await reader.readexactly(length)


@pytest.fixture
def scripted(bg):
    servers = []

    def start(script: Script, host: str = "127.0.0.1") -> Running:
        server = bg.run(asyncio.start_server(script.session, host, 0))
        servers.append(server)
        return Running(host, server.sockets[0].getsockname()[1], script)

    yield start
    for s in servers:
        bg.stop_server(s)


# Test zone for the MX tests: (name, type) → rdata texts. 192.0.2.0/24 and 2001:db8::/32 are
# documentation ranges; they are only data here, nothing connects to them.
ZONE = {
    ("example.test.", "MX"): ["20 mx2.example.test.", "10 mxb.example.test.", "10 mx1.example.test."],
    ("mx1.example.test.", "A"): ["192.0.2.1"],
    ("mx1.example.test.", "AAAA"): ["2001:db8::1"],
    ("mx2.example.test.", "A"): ["192.0.2.20", "192.0.2.3"],
    ("mxb.example.test.", "AAAA"): ["2001:db8::b"],
    ("implicit.test.", "A"): ["192.0.2.9"],
    ("null.test.", "MX"): ["0 ."],
    ("dangling.test.", "MX"): ["10 nowhere.test."],
}


class DnsServer:
    """A tiny authoritative UDP server over ZONE; NXDOMAIN for names it does not hold."""

    def __init__(self, zone: dict) -> None:
        self.zone = zone
        self.names = {name for name, _ in zone}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries: list[tuple[str, str]] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            q = query.question[0]
            name, rdtype = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
            self.queries.append((name, rdtype))
            if name not in self.names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif (name, rdtype) in self.zone:
                response.answer.append(
                    dns.rrset.from_text_list(name, 300, "IN", rdtype, self.zone[(name, rdtype)]))
            self.sock.sendto(response.to_wire(), addr)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def dns_server():
    server = DnsServer(ZONE)
    yield server
    server.close()
