"""DNS resolver configuration shared by SPF, DKIM, DMARC and ARC.

Owns: turning configured server strings into a `dns.resolver.Resolver` whose every lookup
is bounded in time, installing it as dnspython's process-wide default (pyspf, dkimpy and
authheaders have no resolver argument and resolve through `dns.resolver.default_resolver`),
and the TXT lookup callable (`dnsfunc`) that dkimpy's verify/arc_verify accept.

Must not know: what the records mean. A lookup that could not be answered in time, or whose
servers all failed, raises `DnsTemporaryError` — distinct from "no such record" (None) so the
callers can report `temperror` (RFC 8601 §2.7) rather than `fail`. The exception is
deliberately *not* a dkimpy `DKIMException`: dkimpy swallows those into a plain `False`.
"""
from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Iterator

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

DNS_PORT = 53  # RFC 1035 §4.2
DEFAULT_TIMEOUT = 5.0  # seconds for a whole lookup (all servers, all retries)


class DnsTemporaryError(Exception):
    """The DNS could not answer now (timeout, SERVFAIL from every server)."""


def parse_server(server: str) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or a bare IPv6 literal -> (ip, port)."""
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, DNS_PORT
    ipaddress.ip_address(host)  # resolvers are addressed by IP; a name here is a config error
    if not 0 < port < 65536:
        raise ValueError(f"DNS server port out of range: {server!r}")
    return host, port


def make_resolver(servers: list[str], timeout: float = DEFAULT_TIMEOUT, cache_size: int = 0) -> dns.resolver.Resolver:
    """A resolver that asks only `servers` and gives up after `timeout` s.

    With `cache_size` > 0 answers are kept for their TTL (RFC 1035 §3.2.1): a node checking SPF,
    DKIM and DMARC for a stream of messages from one domain asks once, not per message."""
    if not servers:
        raise ValueError("at least one DNS server is required")
    resolver = dns.resolver.Resolver(configure=False)  # never read /etc/resolv.conf
    resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in servers]
    resolver.timeout = timeout  # per attempt
    resolver.lifetime = timeout  # whole lookup: lookups never hang
    resolver.retry_servfail = False
    resolver.cache = dns.resolver.LRUCache(cache_size) if cache_size > 0 else None
    return resolver


def install_default_resolver(resolver: dns.resolver.Resolver | None) -> dns.resolver.Resolver | None:
    """Make `resolver` dnspython's default; returns the previous one (may be None)."""
    previous = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    return previous


@contextlib.contextmanager
def default_resolver(resolver: dns.resolver.Resolver) -> Iterator[dns.resolver.Resolver]:
    """Install `resolver` as the default for the duration of a block, then restore."""
    previous = install_default_resolver(resolver)
    try:
        yield resolver
    finally:
        install_default_resolver(previous)


def _to_name(name: bytes | str) -> dns.name.Name:
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    return dns.name.from_text(text)


@dataclass(frozen=True)
class TxtLookup:
    """The dkimpy-style `dnsfunc(name, timeout=...) -> bytes | None`, bound to a resolver.

    Calling it returns the first TXT record's strings joined (what dkimpy expects);
    `txt_records` returns every TXT record (DMARC must see them all, RFC 7489 §6.6.3).
    """

    resolver: dns.resolver.Resolver
    timeout: float = DEFAULT_TIMEOUT

    def __call__(self, name: bytes | str, timeout: float | None = None) -> bytes | None:
        records = self.txt_records(name, timeout)
        return records[0] if records else None

    def txt_records(self, name: bytes | str, timeout: float | None = None) -> tuple[bytes, ...]:
        lifetime = self.timeout if timeout is None else min(float(timeout), self.timeout)
        try:
            qname = _to_name(name)
        except (dns.exception.DNSException, ValueError):
            return ()  # a name that cannot exist has no records (e.g. a 64-octet selector)
        try:
            answer = self.resolver.resolve(qname, dns.rdatatype.TXT, lifetime=lifetime,
                                           raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return ()
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"TXT {name!r}: {exc.__class__.__name__}") from exc
        except dns.exception.DNSException as exc:  # malformed name, bad response
            raise DnsTemporaryError(f"TXT {name!r}: {exc}") from exc
        if answer.rrset is None:
            return ()
        return tuple(b"".join(rdata.strings) for rdata in answer.rrset)


def dnsfunc_for(resolver: dns.resolver.Resolver, timeout: float = DEFAULT_TIMEOUT) -> TxtLookup:
    """TXT lookup callable for dkimpy/authheaders, bounded by `timeout` seconds."""
    return TxtLookup(resolver, timeout)
