"""The records a development DNS server answers from, and the zone files they are read from.

Owns: an in-memory zone (records by owner and type, answered authoritatively: CNAME chains
inside the zone, wildcards, empty non-terminals) with the SOA that negative answers carry
(RFC 2308 §3), and reading a zone file — BIND master-file syntax (RFC 1035 §5) or TOML/JSON
tables keyed by owner name — with errors that name the file. Must not know sockets
(devtools/dnsserver.py serves a Zone) or anything about mail.

TOML (JSON has the same shape; bench/ writes JSON):

    ttl = 300                 # optional: TTL of every record (default 300)
    negative_ttl = 60         # optional: SOA MINIMUM of the synthesised SOA (default 300)

    ["fabrikam.test"]
    MX  = ["10 mx.fabrikam.test."]
    TXT = ["v=spf1 ip4:203.0.113.7 -all"]
    SOA = ["ns.fabrikam.test. hostmaster.fabrikam.test. 1 3600 600 86400 60"]   # optional

Without an SOA in the zone, a negative answer carries one synthesised for the top-level
domain of the name asked (`test.` for `x.fabrikam.test`), MINIMUM = the negative TTL.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from dns.rdtypes.ANY.TXT import TXT

MAX_TXT_STRING = 255  # RFC 1035 §3.3: a <character-string> holds at most 255 octets
MAX_CNAME_CHAIN = 8
SUPPORTED_TYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "SOA", "SRV", "CAA", "TLSA")
DEFAULT_TTL = 300
SOA_TIMERS = "3600 600 86400"  # refresh retry expire (RFC 1912 §2.2 style values)


class ZoneFileError(ValueError):
    """A zone file that cannot be read; the message names the file and what is wrong."""


def txt_rdata(value: str | bytes | Iterable[str | bytes]) -> TXT:
    """One TXT rdata; a long string is cut into 255-octet character-strings."""
    if isinstance(value, (str, bytes)):
        raw = value.encode() if isinstance(value, str) else value
        chunks = [raw[i:i + MAX_TXT_STRING] for i in range(0, len(raw), MAX_TXT_STRING)] or [b""]
    else:  # caller chose the string boundaries explicitly
        chunks = [v.encode() if isinstance(v, str) else v for v in value]
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def make_rdata(rdtype: str, value: Any) -> dns.rdata.Rdata:
    """Rdata from presentation text; TXT from a plain string, MX also from (preference, host)."""
    rdtype = rdtype.upper()
    if rdtype not in SUPPORTED_TYPES:
        raise ValueError(f"unsupported record type {rdtype}")
    if rdtype == "TXT":
        return txt_rdata(value)
    if rdtype == "MX" and isinstance(value, tuple):
        value = f"{value[0]} {value[1]}"
    text = str(value)
    if rdtype in ("MX", "PTR", "CNAME", "NS") and not text.endswith("."):
        text += "."  # names here are always absolute
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)


@dataclass(frozen=True)
class Lookup:
    rcode: int
    answer: tuple[dns.rrset.RRset, ...]
    authority: tuple[dns.rrset.RRset, ...] = ()


class Zone:
    """Records by (owner, type); thread-safe; `lookup` answers one question authoritatively."""

    def __init__(self, *, default_ttl: int = DEFAULT_TTL, negative_ttl: int = DEFAULT_TTL) -> None:
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl  # MINIMUM of the synthesised SOA (RFC 2308 §4)
        self._records: dict[tuple[dns.name.Name, int], list[tuple[int, dns.rdata.Rdata]]] = {}
        self._lock = threading.Lock()

    # --- changing -------------------------------------------------------------------
    def add(self, name: str | dns.name.Name, rdtype: str, value: Any, ttl: int | None = None) -> None:
        owner = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        rdata = value if isinstance(value, dns.rdata.Rdata) else make_rdata(rdtype, value)
        with self._lock:
            self._records.setdefault((owner, rdata.rdtype), []).append(
                (self.default_ttl if ttl is None else ttl, rdata))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        owner = dns.name.from_text(name)
        with self._lock:
            for key in [k for k in self._records if k[0] == owner]:
                if rdtype is None or key[1] == dns.rdatatype.from_text(rdtype):
                    del self._records[key]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def replace_with(self, other: "Zone") -> None:
        """Take `other`'s records and TTLs in one step (a reload: no query sees half a zone)."""
        with other._lock:
            records = {k: list(v) for k, v in other._records.items()}
        with self._lock:
            self._records = records
            self.default_ttl, self.negative_ttl = other.default_ttl, other.negative_ttl

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._records.values())

    # --- answering ------------------------------------------------------------------
    def lookup(self, qname: dns.name.Name, qtype: int) -> Lookup:
        answers: list[dns.rrset.RRset] = []
        with self._lock:
            for _ in range(MAX_CNAME_CHAIN):
                owner = self._owner_for(qname)
                if owner is None:
                    if answers:
                        return Lookup(dns.rcode.NOERROR, tuple(answers))
                    return Lookup(dns.rcode.NXDOMAIN, (), (self._soa_for(qname),))
                cname = self._records.get((owner, dns.rdatatype.CNAME))
                if cname and qtype != dns.rdatatype.CNAME:
                    answers.append(_rrset(qname, dns.rdatatype.CNAME, cname))
                    qname = cname[0][1].target
                    continue
                found = self._records.get((owner, qtype))
                if found:
                    answers.append(_rrset(qname, qtype, found))
                    return Lookup(dns.rcode.NOERROR, tuple(answers))
                if answers:
                    return Lookup(dns.rcode.NOERROR, tuple(answers))
                return Lookup(dns.rcode.NOERROR, (), (self._soa_for(qname),))  # NODATA (RFC 2308 §2.2)
        return Lookup(dns.rcode.SERVFAIL, ())

    def _owner_for(self, qname: dns.name.Name) -> dns.name.Name | None:
        names = {k[0] for k in self._records}
        if qname in names or any(n.is_subdomain(qname) for n in names):
            return qname  # exact name or empty non-terminal (RFC 8020)
        parent = qname
        while len(parent) > 1:  # RFC 4592, simplified: the nearest wildcard above the name
            parent = parent.parent()
            wildcard = dns.name.Name((b"*",) + parent.labels)
            if wildcard in names:
                return wildcard
        return None

    def _soa_for(self, qname: dns.name.Name) -> dns.rrset.RRset:
        """The SOA of the closest enclosing zone apex, TTL min(SOA TTL, MINIMUM) (RFC 2308 §3)."""
        apex = qname
        while True:
            found = self._records.get((apex, dns.rdatatype.SOA))
            if found:
                ttl, soa = found[0]
                break
            if len(apex) <= 1:
                apex = dns.name.Name(qname.labels[-2:]) if len(qname) >= 2 else dns.name.root
                soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                                          f"ns.{apex} hostmaster.{apex} 1 {SOA_TIMERS} {self.negative_ttl}"
                                          .replace("..", "."))
                ttl = self.negative_ttl
                break
            apex = apex.parent()
        rrset = dns.rrset.RRset(apex, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.add(soa, min(ttl, soa.minimum))
        return rrset


def _rrset(name: dns.name.Name, rdtype: int, records) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    for ttl, rdata in records:
        rrset.add(rdata, ttl)
    return rrset


# --- zone files --------------------------------------------------------------------------

def load_zone_file(path: str | os.PathLike[str], origin: str | None = None) -> Zone:
    """A Zone from a file: `.toml` or `.json` tables, anything else a BIND master file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneFileError(f"{path}: cannot read: {exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            return zone_from_tables(tomllib.loads(text), str(path))
        except tomllib.TOMLDecodeError as exc:
            raise ZoneFileError(f"{path}: not valid TOML: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            return zone_from_tables(json.loads(text), str(path))
        except ValueError as exc:
            if isinstance(exc, ZoneFileError):
                raise
            raise ZoneFileError(f"{path}: not valid JSON: {exc}") from None
    return zone_from_master_file(text, str(path), origin)


def zone_from_tables(data: Any, where: str) -> Zone:
    if not isinstance(data, dict):
        raise ZoneFileError(f"{where}: expected tables keyed by owner name")
    ttl, negative = data.get("ttl", DEFAULT_TTL), data.get("negative_ttl", DEFAULT_TTL)
    for key, value in (("ttl", ttl), ("negative_ttl", negative)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
            raise ZoneFileError(f"{where}: {key} must be a number of seconds, got {value!r}")
    zone = Zone(default_ttl=ttl, negative_ttl=negative)
    for name, types in data.items():
        if name in ("ttl", "negative_ttl"):
            continue
        if not isinstance(types, dict):
            raise ZoneFileError(f"{where}: [{name!r}] must be a table of record types")
        for rdtype, values in types.items():
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list):
                raise ZoneFileError(f"{where}: {name} {rdtype}: expected a list of values")
            for v in values:
                try:
                    zone.add(name.rstrip(".") + ".", rdtype, v)
                except (ValueError, dns.exception.DNSException) as exc:
                    raise ZoneFileError(f"{where}: {name} {rdtype} {v!r}: {exc}") from None
    return zone


def zone_from_master_file(text: str, where: str, origin: str | None = None) -> Zone:
    """RFC 1035 §5 master file ($ORIGIN, $TTL, relative names, parentheses), via dnspython."""
    try:
        parsed = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False, filename=where)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneFileError(f"{where}: {exc}") from None
    soa = parsed.get_rdataset(parsed.origin, dns.rdatatype.SOA)
    zone = Zone(negative_ttl=soa[0].minimum if soa else DEFAULT_TTL)
    for name, rdataset in parsed.iterate_rdatasets():
        for rdata in rdataset:
            zone.add(name, dns.rdatatype.to_text(rdataset.rdtype), rdata, rdataset.ttl)
    if not len(zone):
        raise ZoneFileError(f"{where}: no records")
    return zone


class ZoneFile:
    """A zone file and the stat signature of the version last read, to reload on change.

    Polling the modification time (and size and inode, for editors that replace the file) is
    portable and needs no inotify; the caller decides when to poll."""

    def __init__(self, path: str | os.PathLike[str], origin: str | None = None) -> None:
        self.path = Path(path)
        self.origin = origin
        self._seen: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def changed(self) -> bool:
        return self._signature() != self._seen

    def load(self) -> Zone:
        """Read the file; the signature is taken first, so a write during the read is seen next time."""
        self._seen = self._signature()
        return load_zone_file(self.path, self.origin)
