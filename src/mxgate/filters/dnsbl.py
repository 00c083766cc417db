"""DNS block and allow lists on the connecting IP (RFC 5782).

Owns: the query name (reversed IPv4 octets, or IPv6 nibbles, under the zone), reading the
answer (a listing is an A record in 127.0.0.0/8; anything else — such as a list's "query
refused" codes outside that range — is not a listing), and the rule that an allow-list hit
(DNSWL) wins. Must not know: SMTP, or what the action does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.resolver

from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "dnsbl"
LISTED_NET = ipaddress.ip_network("127.0.0.0/8")  # RFC 5782 §2.1: list entries answer 127.0.0.x


@dataclass(frozen=True)
class DnsblLookup:
    listed: tuple[tuple[str, str], ...]  # (zone, answer) of block lists that list the IP
    allowed: tuple[tuple[str, str], ...]  # (zone, answer) of allow lists that list it
    errors: tuple[str, ...]  # zones that could not be asked


def query_name(ip: str, zone: str) -> str:
    """RFC 5782 §2.1 (IPv4) and §2.4 (IPv6 nibbles) name of `ip` under `zone`."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        labels = reversed(str(addr).split("."))
    else:
        labels = reversed(addr.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.strip().rstrip(".")


def _ask(resolver, ip: str, zone: str, timeout: float) -> str | None:
    """The listing answer, or None when not listed. Raises dns.exception.DNSException on trouble."""
    try:
        answer = resolver.resolve(query_name(ip, zone), "A", lifetime=timeout, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    for rdata in answer:
        if ipaddress.ip_address(rdata.address) in LISTED_NET:
            return rdata.address
    return None


def _lookup_all(resolver, ip: str, zones, timeout: float) -> tuple[list[tuple[str, str]], list[str]]:
    found, errors = [], []
    for zone in zones:
        try:
            answer = _ask(resolver, ip, zone, timeout)
        except dns.exception.DNSException as exc:
            errors.append(f"{zone}: {exc.__class__.__name__}")
            continue
        if answer:
            found.append((zone, answer))
    return found, errors


def on_loop(cfg: CheckSettings) -> bool:
    """No zone to ask (the default): gather does no I/O, so no worker is needed."""
    return not cfg["zones"] and not cfg["allow_zones"]


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> DnsblLookup:
    allowed, e1 = _lookup_all(env.resolver, facts.peer_ip, cfg["allow_zones"], cfg.timeout)
    listed, e2 = ([], []) if allowed else _lookup_all(env.resolver, facts.peer_ip, cfg["zones"], cfg.timeout)
    return DnsblLookup(tuple(listed), tuple(allowed), tuple(e1 + e2))


def decide(raw: DnsblLookup, cfg: CheckSettings) -> CheckResult:
    if raw.allowed:
        return passed(NAME, "allow-listed: " + ", ".join(f"{z}={a}" for z, a in raw.allowed),
                      allowed=[z for z, _ in raw.allowed], listed=[])
    if raw.listed:
        return fired(NAME, cfg.action, "dnsbl", "listed: " + ", ".join(f"{z}={a}" for z, a in raw.listed),
                     listed=[z for z, _ in raw.listed], allowed=[])
    if raw.errors:
        return errored(NAME, "lookup failed: " + "; ".join(raw.errors), listed=[], allowed=[])
    return passed(NAME, "not listed", listed=[], allowed=[])
