"""Reverse DNS of the connecting IP: PTR present, and forward-confirmed (FCrDNS, RFC 8601 §3 iprev).

Owns: the PTR lookup, the forward lookups of at most MAX_PTR_NAMES names, and the rule:
`require = "fcrdns"` fires unless a PTR name resolves back to the IP; `require = "ptr"` fires only
when there is no PTR at all. DNS trouble is an error (fail-open/closed applies).
Must not know: SMTP, or what the action does.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "rdns"
MAX_PTR_NAMES = 10  # RFC 7208 §5.5 bounds the PTR names an SPF check may follow the same way


@dataclass(frozen=True)
class RdnsLookup:
    status: str  # "fcrdns" | "ptr-only" | "none" | "temperror"
    names: tuple[str, ...]
    detail: str = ""


@functools.lru_cache(maxsize=4096)  # pure; dnspython builds the name in ~12 µs, and clients come back
def _client(peer_ip: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str, dns.name.Name]:
    """The connecting address (an IPv4-mapped one as IPv4), its forward type and its reverse name.
    Not an address: ValueError, every time (an exception is not remembered)."""
    addr = ipaddress.ip_address(peer_ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr, "A" if addr.version == 4 else "AAAA", dns.reversename.from_address(str(addr))


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> RdnsLookup:
    addr, rtype, reverse = _client(facts.peer_ip)
    try:
        ptr = env.resolver.resolve(reverse, "PTR", lifetime=cfg.timeout, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return RdnsLookup("none", ())
    except dns.exception.DNSException as exc:
        return RdnsLookup("temperror", (), f"PTR: {exc.__class__.__name__}")
    names = tuple(r.target.to_text(omit_final_dot=True).lower() for r in ptr)[:MAX_PTR_NAMES]
    for name in names:
        try:
            forward = env.resolver.resolve(name, rtype, lifetime=cfg.timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            return RdnsLookup("temperror", names, f"{rtype} {name}: {exc.__class__.__name__}")
        if any(ipaddress.ip_address(r.address) == addr for r in forward):
            return RdnsLookup("fcrdns", names)
    return RdnsLookup("ptr-only", names)


def cached_on_loop(facts: MessageFacts, cfg: CheckSettings) -> bool:
    """Only DNS is waited on: on the loop when the answers are cached (filters/pipeline.py)."""
    return True


def decide(raw: RdnsLookup, cfg: CheckSettings) -> CheckResult:
    detail = f"iprev={raw.status} ptr={','.join(raw.names) or '-'} {raw.detail}".strip()
    if raw.status == "temperror":
        return errored(NAME, detail, status=raw.status)
    if raw.status == "none" or (raw.status == "ptr-only" and cfg["require"] == "fcrdns"):
        reason = "rdns-missing" if cfg.action == "tempfail" else "rdns-failed"
        return fired(NAME, cfg.action, reason, detail, status=raw.status)
    return passed(NAME, detail, status=raw.status)
