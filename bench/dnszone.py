"""A small authoritative DNS server on loopback for the benchmark (SPF, DKIM, DMARC, ARC keys).

Owns: answering UDP queries from a JSON zone file (`{"name": {"TXT": [...], "A": [...]}}`),
re-read on SIGHUP so the harness can publish a key generated after start-up; TCP is answered
too for the rare long TXT. Runs as its own process (`python bench/dnszone.py --port N --zone F`)
so its work never competes with the load client for the harness's GIL.
With `--drop SHARE` a seeded share of UDP queries is never answered and with `--no-soa`
negative answers carry no SOA (P8: the lossy resolver this machine's own resolver is).
Must not know: what the records mean. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import signal
import socket
import struct

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT

TTL = 300


def txt(value: str) -> TXT:
    raw = value.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]  # RFC 1035 §3.3
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


class Zone:
    def __init__(self, path: str, soa: bool = True):
        self.path = path
        self.soa = soa
        self.records: dict[tuple[str, int], list] = {}
        self.load()

    def load(self, *_args) -> None:
        with open(self.path) as fh:
            data = json.load(fh)
        records: dict[tuple[str, int], list] = {}
        for name, types in data.items():
            for rtype, values in types.items():
                code = dns.rdatatype.from_text(rtype)
                key = (name.lower().rstrip("."), code)
                records[key] = [txt(v) if rtype == "TXT" else dns.rdata.from_text(dns.rdataclass.IN, code, v)
                                for v in values]
        self.records = records

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        q = query.question[0]
        name = q.name.to_text().lower().rstrip(".")
        found = self.records.get((name, q.rdtype))
        if found:
            rrset = dns.rrset.RRset(q.name, dns.rdataclass.IN, q.rdtype)
            for rd in found:
                rrset.add(rd, TTL)
            reply.answer.append(rrset)
        else:
            if not any(n == name or n.endswith("." + name) for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            # RFC 2308 §3: a negative answer carries the zone's SOA, whose minimum is how long
            # resolvers may cache it — as real authoritative servers answer (PTR, DNSBL misses).
            if self.soa:
                soa = dns.rrset.from_text("test.", TTL, "IN", "SOA", f"ns.test. hostmaster.test. 1 3600 600 86400 {TTL}")
                reply.authority.append(soa)
        return reply.to_wire()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--drop", type=float, default=0.0, help="share of UDP queries never answered")
    ap.add_argument("--no-soa", action="store_true", help="negative answers without the SOA")
    args = ap.parse_args()
    rng = random.Random(15)
    if not args.host.startswith("127."):
        raise SystemExit("loopback only")
    zone = Zone(args.zone, soa=not args.no_soa)
    signal.signal(signal.SIGHUP, zone.load)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.host, args.port))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.host, args.port))
    tcp.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ, "udp")
    sel.register(tcp, selectors.EVENT_READ, "tcp")
    while True:
        for key, _ in sel.select():
            try:
                if key.data == "udp":
                    wire, peer = udp.recvfrom(4096)
                    if args.drop and rng.random() < args.drop:
                        continue  # lost: the client must ask again
                    udp.sendto(zone.answer(wire), peer)
                else:
                    conn, _ = tcp.accept()
                    with conn:
                        conn.settimeout(2)
                        size = struct.unpack("!H", conn.recv(2))[0]
                        wire = b""
                        while len(wire) < size:
                            wire += conn.recv(size - len(wire))
                        out = zone.answer(wire)
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except (OSError, ValueError, struct.error, dns.exception.DNSException):
                continue


if __name__ == "__main__":
    main()
