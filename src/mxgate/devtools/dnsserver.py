"""A real authoritative DNS server on loopback (UDP and TCP, one port) for demos, tests and benchmarks.

Owns: a mutable in-memory zone, the wire protocol (dnspython messages), truncation and
TCP fallback, an artificial delay to simulate timeouts, and a forced rcode to simulate
SERVFAIL/REFUSED, and the ways real resolvers misbehave: a share of queries never answered
(`set_drop`), answers held until released (`hold`), and the SOA in negative answers on or off
(`set_negative_soa`; off by default, as this machine's own resolver answers). Must not know: anything about mail — SPF, DKIM, DMARC, DNSBL zones are
just records that tests add.

Usage::

    with TestDNSServer() as dns_server:
        dns_server.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all")
        resolver = make_resolver([dns_server.address], timeout=1.0)

Answers: records at the name (following CNAMEs inside the zone); NOERROR with an empty
answer when the name exists (or is an empty non-terminal, RFC 8020) but has no record of
that type; NXDOMAIN otherwise. A wildcard owner ``*.zone`` matches names below it when no
exact name exists (RFC 4592, simplified: no closest-encloser subtleties).
"""
from __future__ import annotations

import random
import selectors
import socket
import struct
import threading
from typing import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT

MAX_TXT_STRING = 255  # RFC 1035 §3.3: a <character-string> holds at most 255 octets
UDP_DEFAULT_PAYLOAD = 512  # RFC 1035 §4.2.1: UDP messages without EDNS are limited to 512
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: two-octet length prefix on TCP
SUPPORTED_TYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "SOA")


def _txt_rdata(value: str | bytes | Iterable[str | bytes]) -> TXT:
    """One TXT rdata; a long string is cut into 255-octet character-strings."""
    if isinstance(value, (str, bytes)):
        raw = value.encode() if isinstance(value, str) else value
        chunks = [raw[i:i + MAX_TXT_STRING] for i in range(0, len(raw), MAX_TXT_STRING)] or [b""]
    else:  # caller chose the string boundaries explicitly
        chunks = [v.encode() if isinstance(v, str) else v for v in value]
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


class TestDNSServer:
    """Authoritative server for a dict zone; runs in a background thread."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._records: dict[tuple[dns.name.Name, int], list[tuple[int, dns.rdata.Rdata]]] = {}
        self._lock = threading.Lock()
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
        self._stop = threading.Event()
        self._udp, self._tcp = self._bind(host)
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
        rdtype = rdtype.upper()
        if rdtype not in SUPPORTED_TYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        owner = dns.name.from_text(name)
        if rdtype == "TXT":
            rdata = _txt_rdata(value)
        else:
            if rdtype == "MX" and isinstance(value, tuple):
                value = f"{value[0]} {value[1]}"
            text = str(value)
            if rdtype in ("MX", "PTR", "CNAME", "NS") and not text.endswith("."):
                text += "."  # names in tests are always absolute
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        with self._lock:
            self._records.setdefault((owner, dns.rdatatype.from_text(rdtype)), []).append((ttl, rdata))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Drop all records at `name` (of one type, or all types)."""
        owner = dns.name.from_text(name)
        with self._lock:
            for key in [k for k in self._records if k[0] == owner]:
                if rdtype is None or key[1] == dns.rdatatype.from_text(rdtype):
                    del self._records[key]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
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
    def _lookup(self, qname: dns.name.Name, qtype: int) -> tuple[int, list[dns.rrset.RRset]]:
        """(rcode, answer rrsets) for one question, from the zone only."""
        answers: list[dns.rrset.RRset] = []
        with self._lock:
            for _ in range(8):  # bounded CNAME chain inside the zone
                owner = self._owner_for(qname)
                if owner is None:
                    return (dns.rcode.NXDOMAIN if not answers else dns.rcode.NOERROR), answers
                cname = self._records.get((owner, dns.rdatatype.CNAME))
                if cname and qtype != dns.rdatatype.CNAME:
                    answers.append(self._rrset(qname, dns.rdatatype.CNAME, cname))
                    qname = cname[0][1].target
                    continue
                found = self._records.get((owner, qtype))
                if found:
                    answers.append(self._rrset(qname, qtype, found))
                return dns.rcode.NOERROR, answers
        return dns.rcode.SERVFAIL, []

    def _owner_for(self, qname: dns.name.Name) -> dns.name.Name | None:
        names = {k[0] for k in self._records}
        if qname in names or any(n.is_subdomain(qname) for n in names):
            return qname  # exact name or empty non-terminal (RFC 8020)
        parent = qname
        while len(parent) > 1:
            parent = parent.parent()
            wildcard = dns.name.Name((b"*",) + parent.labels)
            if wildcard in names:
                return wildcard
        return None

    @staticmethod
    def _rrset(name: dns.name.Name, rdtype: int, records) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for ttl, rdata in records:
            rrset.add(rdata, ttl)
        return rrset

    def _respond(self, wire: bytes, transport: str) -> bytes | None:
        """Response wire for a query wire (None when the query is unparseable)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            q = query.question[0]
            self.queries.append((q.name.to_text(omit_final_dot=True).lower(),
                                 dns.rdatatype.to_text(q.rdtype), transport))
            if self._drop_next > 0 or (self._drop_share and self._random.random() < self._drop_share):
                self._drop_next = max(0, self._drop_next - 1)
                self.dropped += 1
                return None
            if self._rcode is not None:
                response.set_rcode(self._rcode)
            else:
                rcode, answers = self._lookup(q.name, q.rdtype)
                response.set_rcode(rcode)
                response.answer.extend(answers)
                if self._negative_soa and not answers:
                    labels = q.name.labels
                    zone = dns.name.Name(labels[-3:]) if len(labels) >= 3 else q.name
                    response.authority.append(dns.rrset.from_text(
                        zone, 60, "IN", "SOA", f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 60"))
        limit = MAX_MESSAGE
        if transport == "udp":
            limit = max(query.payload, UDP_DEFAULT_PAYLOAD) if query.edns >= 0 else UDP_DEFAULT_PAYLOAD
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:  # RFC 2181 §9: set TC, the client retries over TCP
            response.answer.clear()
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
    def _bind(host: str) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20):  # UDP port 0, then the same number for TCP; retry if taken
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
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
