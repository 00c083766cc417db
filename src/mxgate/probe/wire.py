"""The probe's socket: one TCP connection that records every line it carries.

Owns: opening the connection (optionally bound to a source address), writing a PROXY v1/v2
header before anything else, reading CRLF-terminated lines with a deadline, the STARTTLS
upgrade (discarding any plaintext the server sent ahead of the handshake), and describing the
negotiated TLS session and the server certificate.

Must not know: SMTP verbs, reply codes or what a "stage" is — that is `client.py`; nothing here
decides an outcome. It is deliberately not aiosmtplib: a test tool has to see bytes a
well-behaved client library would hide or repair.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Callable

from cryptography import x509

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; allow generous slack for broken
# servers but never buffer without bound.
MAX_LINE = 64 * 1024
# How long to wait for the peer's side of a TLS shutdown before dropping the socket.
CLOSE_WAIT = 2.0
# PROXY protocol v2 signature (haproxy proxy-protocol.txt §2.2).
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_V2_VERSION_PROXY = 0x21  # version 2, command PROXY
PROXY_V2_TCP4 = 0x11  # AF_INET, STREAM
PROXY_V2_TCP6 = 0x21  # AF_INET6, STREAM


class WireError(Exception):
    """The connection failed: refused, reset, closed early, timed out, or TLS broke."""

    def __init__(self, message: str, *, tls: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.tls = tls
        self.timed_out = timed_out


@dataclass(frozen=True)
class TlsInfo:
    """What was negotiated and who the server claimed to be."""

    version: str
    cipher: str
    verified: bool  # chain (and name) checked against --ca; False for opportunistic TLS
    subject: str | None
    issuer: str | None
    sans: tuple[str, ...]
    not_after: str | None  # ISO 8601, UTC
    sha256: str | None  # fingerprint of the DER certificate, colon-separated hex


def proxy_v1_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    """PROXY v1 text header (proxy-protocol.txt §2.1); both addresses in one family."""
    src_ip, dst_ip = _same_family(src, dst)
    family = "TCP4" if src_ip.version == 4 else "TCP6"
    return f"PROXY {family} {src_ip} {dst_ip} {sport} {dport}\r\n".encode("ascii")


def proxy_v2_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    """PROXY v2 binary header (proxy-protocol.txt §2.2), command PROXY over TCP."""
    src_ip, dst_ip = _same_family(src, dst)
    family = PROXY_V2_TCP4 if src_ip.version == 4 else PROXY_V2_TCP6
    body = src_ip.packed + dst_ip.packed + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", PROXY_V2_VERSION_PROXY, family, len(body)) + body


def _same_family(src: str, dst: str) -> tuple[ipaddress._BaseAddress, ipaddress._BaseAddress]:
    # The header carries one family; map the real destination into the claimed source's family
    # (IPv4-mapped IPv6 when needed) so a v6 claim can be made over a v4 connection and back.
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst.split("%", 1)[0])
    if s.version == d.version:
        return s, d
    if s.version == 6:
        return s, ipaddress.IPv6Address(f"::ffff:{d}")
    mapped = getattr(d, "ipv4_mapped", None)
    return s, mapped if mapped is not None else ipaddress.IPv4Address("0.0.0.0")


def tls_context(ca_file: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    """Verify against `ca_file` when given; otherwise opportunistic (RFC 7435): encrypt, don't trust."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def describe_tls(ssl_object: ssl.SSLObject, verified: bool) -> TlsInfo:
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return TlsInfo(ssl_object.version() or "?", cipher[0] if cipher else "?", verified,
                       None, None, (), None, None)
    cert = x509.load_der_x509_certificate(der)
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v) for v in san_ext.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san_ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        sans = ()
    digest = hashlib.sha256(der).hexdigest().upper()
    return TlsInfo(
        version=ssl_object.version() or "?",
        cipher=cipher[0] if cipher else "?",
        verified=verified,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_after=cert.not_valid_after_utc.isoformat(),
        sha256=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)),
    )


class _LineProtocol(asyncio.Protocol):
    """Buffers received bytes; the buffer is ours, so STARTTLS can drop what came before it."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.lost = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = self.closed or WireError("connection closed by server")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.closed = self.closed or WireError("connection closed by server")
        else:
            self.closed = WireError(f"connection lost: {exc}", tls=isinstance(exc, ssl.SSLError))
        self.lost.set()
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def data_waiter(self) -> asyncio.Future[None]:
        """A future completed by the next data/EOF; armed synchronously so no wake-up is lost
        (wrapping a coroutine in wait_for would arm it only once its task first runs)."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter


class Wire:
    """One recorded connection. `note` receives (direction, text) for the transcript."""

    def __init__(self, transport: asyncio.Transport, protocol: _LineProtocol, timeout: float,
                 note: Callable[[str, str], None]) -> None:
        self._transport = transport
        self._raw_transport = transport  # kept to abort if a TLS shutdown hangs
        self._protocol = protocol
        self.timeout = timeout
        self.note = note
        self.tls: TlsInfo | None = None

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float, note: Callable[[str, str], None],
                   source_address: str | None = None) -> "Wire":
        loop = asyncio.get_running_loop()
        local = (source_address, 0) if source_address else None
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(_LineProtocol, host, port, local_addr=local), timeout)
        except asyncio.TimeoutError:
            raise WireError(f"connect to {host} port {port} timed out after {timeout:g}s") from None
        except OSError as exc:
            raise WireError(f"connect to {host} port {port} failed: {exc.strerror or exc}") from None
        wire = cls(transport, protocol, timeout, note)
        sock, peer = wire.sockname, wire.peername
        note("*", f"connected from {_fmt(sock)} to {_fmt(peer)}")
        return wire

    @property
    def sockname(self) -> tuple:
        return self._transport.get_extra_info("sockname")

    @property
    def peername(self) -> tuple:
        return self._transport.get_extra_info("peername")

    async def write(self, data: bytes) -> None:
        if self._protocol.closed is not None:
            raise self._protocol.closed
        await asyncio.wait_for(self._protocol._can_write.wait(), self.timeout)
        self._transport.write(data)

    async def read_line(self, timeout: float | None = None) -> bytes:
        """One line including its terminator (LF); raises WireError on close or deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        proto = self._protocol
        while True:
            end = proto.buffer.find(b"\n")
            if end >= 0:
                line = bytes(proto.buffer[: end + 1])
                del proto.buffer[: end + 1]
                return line
            if len(proto.buffer) > MAX_LINE:
                raise WireError(f"server line longer than {MAX_LINE} bytes")
            if proto.closed is not None:
                if proto.buffer:  # a last line without terminator is still evidence
                    line = bytes(proto.buffer)
                    proto.buffer.clear()
                    return line
                raise proto.closed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireError("timed out waiting for the server", timed_out=True)
            try:
                await asyncio.wait_for(proto.data_waiter(), remaining)
            except asyncio.TimeoutError:
                continue

    async def start_tls(self, ctx: ssl.SSLContext, server_hostname: str | None) -> bytes:
        """Upgrade in place; returns (and drops) plaintext that was buffered before the handshake.

        CVE-2011-0411: bytes the server sent after its 220 arrived unencrypted and must never be
        read as if they came through TLS. Taking the buffer and handing the transport to the TLS
        layer happen without yielding, so no later plaintext can slip into our buffer.
        """
        loop = asyncio.get_running_loop()
        stale = bytes(self._protocol.buffer)
        self._protocol.buffer.clear()
        try:
            new_transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ctx, server_hostname=server_hostname),
                self.timeout)
        except asyncio.TimeoutError:
            raise WireError("TLS handshake timed out", tls=True) from None
        except (ssl.SSLError, ssl.CertificateError, OSError, ConnectionError) as exc:
            raise WireError(f"TLS handshake failed: {exc}", tls=True) from None
        if new_transport is None:
            raise WireError("TLS handshake failed: connection closed", tls=True)
        self._transport = new_transport
        self.tls = describe_tls(new_transport.get_extra_info("ssl_object"),
                                ctx.verify_mode != ssl.CERT_NONE)
        return stale

    async def close(self) -> None:
        """Close and wait until the socket is really gone (a TLS close_notify takes a round trip)."""
        self._transport.close()
        try:
            await asyncio.wait_for(self._protocol.lost.wait(), min(self.timeout, CLOSE_WAIT))
        except asyncio.TimeoutError:
            self._raw_transport.abort()


def _fmt(addr: tuple | None) -> str:
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
