"""A real authoritative DNS server on loopback (UDP and TCP, one port) for demos, tests and benchmarks.

Owns: the wire protocol (dnspython messages), truncation and TCP fallback, an artificial delay
to simulate timeouts, a forced rcode to simulate SERVFAIL/REFUSED, the ways real resolvers
misbehave — a share of queries never answered (`set_drop`), answers held until released
(`hold`), the SOA in negative answers on or off (`set_negative_soa`; off by default in tests,
as this machine's own resolver answers) — and, in `ZoneFileServer`,
what `mxgate dev dns` runs — serving a zone file and reloading it when it changes. The records
and how a question is answered live in devtools/dnszone.py. Must not know anything about mail:
SPF, DKIM, DMARC, DNSBL zones are just records.

Usage::

    with TestDNSServer() as dns_server:
        dns_server.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all")
        resolver = make_resolver([dns_server.address], timeout=1.0)

Answers: records at the name (following CNAMEs inside the zone); NOERROR with an empty
answer when the name exists (or is an empty non-terminal, RFC 8020) but has no record of
that type; NXDOMAIN otherwise; with `set_negative_soa(True)` (always in `ZoneFileServer`)
both negative answers carry the zone's SOA (RFC 2308 §3). A wildcard owner ``*.zone`` matches
names below it when no exact name exists (RFC 4592, simplified).
"""
from __future__ import annotations

import logging
import random
import selectors
import socket
import struct
import threading
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from mxgate.devtools.dnszone import Zone, ZoneFile, ZoneFileError

log = logging.getLogger("mxgate.devdns")

UDP_DEFAULT_PAYLOAD = 512  # RFC 1035 §4.2.1: UDP messages without EDNS are limited to 512
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: two-octet length prefix on TCP


class TestDNSServer:
    """Authoritative server for a dict zone; runs in a background thread."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self, host: str = "127.0.0.1", port: int = 0, zone: Zone | None = None) -> None:
        self.host = host
        self.zone = zone if zone is not None else Zone(default_ttl=60, negative_ttl=60)
        self._delay = 0.0
        self._rcode: int | None = None
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp"|"tcp")
        self.dropped = 0  # queries never answered (set_drop, drop_next)
        self._drop_share = 0.0
        self._drop_next = 0
        self._random = random.Random(0)  # a fixed seed: the same run drops the same queries
        self._gate = threading.Event()
        self._gate.set()
        self._negative_soa = False
        self.authentic = False  # set the AD bit, as a DNSSEC-validating resolver would (DANE tests)
        self.insecure: frozenset[str] = frozenset()  # names answered without AD even then (unsigned zones)
        # Replaced whole, never mutated: the serving thread reads a consistent snapshot.
        self._silenced: frozenset[tuple[dns.name.Name, int | None]] = frozenset()
        self._stop = threading.Event()
        self._udp, self._tcp = self._bind(host, port)
        self.port = self._udp.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
        self._selector.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        self._thread = threading.Thread(target=self._serve, name=f"dns-{self.port}", daemon=True)
        self._thread.start()

    # --- zone -----------------------------------------------------------------------
    @property
    def address(self) -> str:
        """"host:port", the form `mxgate.auth.dns.make_resolver` accepts."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def add(self, name: str, rdtype: str, value, ttl: int = 60) -> None:
        """Add one record. TXT takes a str/bytes (split at 255) or a list of strings;
        MX takes "10 mx.example." or (10, "mx.example"); others take presentation text."""
        self.zone.add(name, rdtype, value, ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Drop all records at `name` (of one type, or all types)."""
        self.zone.remove(name, rdtype)

    def clear(self) -> None:
        self.zone.clear()
        self._silenced = frozenset()
        self.queries.clear()

    def set_delay(self, seconds: float) -> None:
        """Answer every query only after `seconds` (a timeout for a client with less)."""
        self._delay = max(0.0, float(seconds))

    def set_rcode(self, rcode: str | None) -> None:
        """Answer every query with this rcode ("SERVFAIL", "REFUSED"), or None for normal."""
        self._rcode = None if rcode is None else dns.rcode.from_text(rcode)

    def set_drop(self, share: float, seed: int = 0) -> None:
        """Never answer this share (0..1) of queries, chosen by a seeded generator."""
        self._drop_share = min(1.0, max(0.0, float(share)))
        self._random = random.Random(seed)

    def drop_next(self, count: int) -> None:
        """Never answer the next `count` queries (a lost UDP datagram, deterministically)."""
        self._drop_next = int(count)

    def silence(self, name: str, rdtype: str | None = None) -> None:
        """Never answer queries for `name` (of one type, or any): a per-name timeout, as
        conformance suites (RFC 7208's `TIMEOUT`) describe them."""
        key = (dns.name.from_text(name), None if rdtype is None else dns.rdatatype.from_text(rdtype))
        self._silenced = self._silenced | {key}

    def hold(self) -> None:
        """Keep every answer until `release()` (lookups in flight, for as long as a test needs)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def set_negative_soa(self, on: bool) -> None:
        """Put the zone's SOA in NXDOMAIN/NODATA answers (RFC 2308 §3), so they may be cached."""
        self._negative_soa = bool(on)

    # --- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._gate.set()
        self._thread.join(timeout=5)
        self._selector.close()
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> "TestDNSServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- answering ------------------------------------------------------------------
    def _respond(self, wire: bytes, transport: str) -> bytes | None:
        """Response wire for a query wire (None when the query is unparseable)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.authentic and not (query.question and
                                   query.question[0].name.to_text(omit_final_dot=True).lower() in self.insecure):
            response.flags |= dns.flags.AD
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            q = query.question[0]
            self.queries.append((q.name.to_text(omit_final_dot=True).lower(),
                                 dns.rdatatype.to_text(q.rdtype), transport))
            silenced = (q.name, None) in self._silenced or (q.name, q.rdtype) in self._silenced
            if silenced or self._drop_next > 0 or (self._drop_share and self._random.random() < self._drop_share):
                if not silenced:
                    self._drop_next = max(0, self._drop_next - 1)
                self.dropped += 1
                return None
            if self._rcode is not None:
                response.set_rcode(self._rcode)
            else:
                found = self.zone.lookup(q.name, q.rdtype)
                response.set_rcode(found.rcode)
                response.answer.extend(found.answer)
                if self._negative_soa:
                    response.authority.extend(found.authority)
        limit = MAX_MESSAGE
        if transport == "udp":
            limit = max(query.payload, UDP_DEFAULT_PAYLOAD) if query.edns >= 0 else UDP_DEFAULT_PAYLOAD
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:  # RFC 2181 §9: set TC, the client retries over TCP
            response.answer.clear()
            response.authority.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _reply_later(self, send, wire: bytes, transport: str) -> None:
        """Answer now, or after the configured delay in a helper thread."""
        def work() -> None:
            if self._delay and self._stop.wait(self._delay):
                return
            self._gate.wait()
            out = self._respond(wire, transport)
            if out is not None:
                try:
                    send(out)
                except OSError:
                    pass  # client gave up or the server is closing
        if self._delay or not self._gate.is_set():
            threading.Thread(target=work, daemon=True).start()
        else:
            work()

    # --- sockets --------------------------------------------------------------------
    @staticmethod
    def _bind(host: str, port: int = 0) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(1 if port else 20):  # UDP port 0, then the same number for TCP; retry if taken
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.bind((host, port))
            except OSError:
                udp.close()
                raise
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
                continue
            tcp.listen(16)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise OSError("could not bind UDP and TCP on the same port")

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                try:
                    key.data(key.fileobj)
                except OSError:
                    pass
            self._tick()

    def _tick(self) -> None:
        """Called by the serving thread between batches of queries (ZoneFileServer polls here)."""

    def _on_udp(self, sock: socket.socket) -> None:
        wire, peer = sock.recvfrom(MAX_MESSAGE)
        self._reply_later(lambda out: sock.sendto(out, peer), wire, "udp")

    def _on_accept(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        threading.Thread(target=self._tcp_session, args=(conn,), daemon=True).start()

    def _tcp_session(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(5)
        with conn:
            try:
                while not self._stop.is_set():
                    head = self._recv_exact(conn, 2)
                    if head is None:
                        return
                    wire = self._recv_exact(conn, struct.unpack("!H", head)[0])
                    if wire is None:
                        return
                    self._reply_later(lambda out: conn.sendall(struct.pack("!H", len(out)) + out),
                                      wire, "tcp")
            except OSError:
                return

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data


class ZoneFileServer(TestDNSServer):
    """`mxgate dev dns`: serve a zone file, reloading it when it changes.

    The file's stat signature is polled every `poll_interval` seconds by the serving thread;
    `check_reload()` is the same poll on demand (tests call it instead of waiting; SIGHUP too).
    A file that no longer parses leaves the last good zone in service and `last_error` set.
    """

    def __init__(self, path: str | Path, host: str = "127.0.0.1", port: int = 0, *, origin: str | None = None,
                 poll_interval: float | None = 1.0, on_reload=None) -> None:
        self.zone_file = ZoneFile(path, origin)
        self.poll_interval = poll_interval
        self.on_reload = on_reload  # called with (zone or None, error or None) after each reload attempt
        self.last_error: str | None = None
        self._next_poll = 0.0
        self._reload_lock = threading.Lock()
        super().__init__(host, port, self.zone_file.load())  # a broken file fails here, before serving
        self.set_negative_soa(True)  # as real authoritative servers answer (RFC 2308 §3)

    def check_reload(self) -> bool:
        """Reload if the file changed since it was last read; True when a new zone is in service."""
        with self._reload_lock:
            if not self.zone_file.changed():
                return False
            try:
                fresh = self.zone_file.load()
            except ZoneFileError as exc:
                self.last_error = str(exc)
                log.error("zone not reloaded, the previous one stays in service: %s", exc)
                if self.on_reload:
                    self.on_reload(None, self.last_error)
                return False
            self.zone.replace_with(fresh)
            self.last_error = None
            if self.on_reload:
                self.on_reload(self.zone, None)
            return True

    def _tick(self) -> None:
        if self.poll_interval is None:
            return
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self.check_reload()
