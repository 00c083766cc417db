"""`mxgate mx DOMAIN`: where mail for a domain goes, as an SMTP client would find it.

Owns: the MX lookup through a resolver the caller passes (the node's, from
`mxgate.auth.dns.make_resolver`, in its async view), ordering by preference (RFC 5321 §5.1), the A/AAAA addresses of each exchange, the
implicit MX when a domain has no MX records (RFC 5321 §5.1) and null MX (RFC 7505).

Must not know: SMTP, printing, or the CLI. Errors come back as values, never as exceptions.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

IMPLICIT_MX_PREFERENCE = 0  # RFC 5321 §5.1: "as if ... an MX with preference 0"
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class MxHost:
    preference: int
    name: str  # without the trailing dot
    addresses: tuple[str, ...]  # A records first, then AAAA, each sorted
    error: str | None = None  # why addresses could not be found, if they could not


@dataclass(frozen=True)
class MxResult:
    domain: str
    hosts: tuple[MxHost, ...]  # in the order a sender tries them
    implicit: bool = False  # no MX records: the domain itself is the exchange
    null_mx: bool = False  # "MX 0 ." — the domain accepts no mail
    error: str | None = None  # the MX query itself failed (NXDOMAIN, timeout, SERVFAIL)


async def lookup_mx(domain: str, resolver) -> MxResult:
    """MX records in preference order, each with its addresses. `resolver` has an async
    `resolve(name, rdtype, search=...)` (dnspython's asyncresolver, or auth/dns.py's `.aio`)."""
    domain = domain.strip().rstrip(".").lower()
    try:
        qname = dns.name.from_text(domain)
    except dns.exception.DNSException as exc:
        return MxResult(domain, (), error=f"bad domain name: {exc}")
    try:
        answer = await resolver.resolve(qname, "MX", search=False)
    except dns.resolver.NoAnswer:
        # RFC 5321 §5.1: no MX but the name exists → the domain is its own exchange.
        host = await _addresses(resolver, qname, IMPLICIT_MX_PREFERENCE)
        return MxResult(domain, (host,), implicit=True)
    except dns.resolver.NXDOMAIN:
        return MxResult(domain, (), error="domain does not exist (NXDOMAIN)")
    except dns.exception.DNSException as exc:
        return MxResult(domain, (), error=_dns_error(exc))
    records = sorted(((r.preference, r.exchange) for r in answer), key=lambda p: (p[0], str(p[1])))
    if len(records) == 1 and records[0][1] == dns.name.root:  # RFC 7505 §3
        return MxResult(domain, (), null_mx=True)
    hosts = await asyncio.gather(*(_addresses(resolver, name, pref) for pref, name in records))
    return MxResult(domain, tuple(hosts))


async def _addresses(resolver, name: dns.name.Name, preference: int) -> MxHost:
    v4, v6 = await asyncio.gather(_query(resolver, name, "A"), _query(resolver, name, "AAAA"))
    label = name.to_text(omit_final_dot=True)
    errors = [r for r in (v4, v6) if isinstance(r, str)]
    addrs = [a for r in (v4, v6) if not isinstance(r, str) for a in r]
    error = None
    if not addrs:
        error = "; ".join(errors) if errors else "no A or AAAA records"
    return MxHost(preference, label, tuple(addrs), error)


async def _query(resolver, name: dns.name.Name, rdtype: str) -> list[str] | str:
    """Sorted addresses, [] when the type has no records, or an error text."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except dns.exception.DNSException as exc:
        return f"{rdtype}: {_dns_error(exc)}"
    return sorted((r.address for r in answer), key=ipaddress.ip_address)


def _dns_error(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "DNS timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no DNS server answered (SERVFAIL or refused)"
    return f"DNS error: {exc.__class__.__name__}"
