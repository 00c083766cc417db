"""Greylisting (off by default): refuse a new (client network, sender, recipient) triplet with 451
once; accept its retry after `delay` and remember it for `pass_ttl`.

Owns: the triplet key (IPv4 /24 and IPv6 /64, so a sender's pool of outbound servers counts as
one), the in-memory table, and the decision. Callers pass `now`. State is per process: after a
restart senders are greylisted once more, which costs a delay, never a message.
Must not know: SMTP, or what the action does.
"""

from __future__ import annotations

import ipaddress

from mxgate.filters.result import CheckResult, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "greylist"
MAX_ENTRIES = 200_000
IPV4_PREFIX, IPV6_PREFIX = 24, 64  # Postgrey's default network grouping


def triplet(ip: str, sender: str, rcpt: str) -> tuple[str, str, str]:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    return str(net), sender.lower(), rcpt.lower()


class Greylist:
    def __init__(self) -> None:
        self._first_seen: dict[tuple, float] = {}
        self._passed: dict[tuple, float] = {}

    def check(self, ip: str, sender: str, rcpt: str, cfg: CheckSettings, now: float) -> CheckResult:
        if not cfg.enabled:
            return passed(NAME, "off")
        key = triplet(ip, sender, rcpt)
        until = self._passed.get(key)
        if until is not None and until > now:
            self._passed[key] = now + cfg["pass_ttl"]
            return passed(NAME, "known triplet")
        first = self._first_seen.get(key)
        if first is not None and first + cfg["delay"] <= now <= first + cfg["delay"] + cfg["retry_window"]:
            del self._first_seen[key]
            self._remember(self._passed, key, now + cfg["pass_ttl"])
            return passed(NAME, f"retried after {now - first:.0f}s")
        if first is None or now > first + cfg["delay"] + cfg["retry_window"]:
            self._remember(self._first_seen, key, now)
            first = now
        return fired(NAME, cfg.action, "greylisted", f"new triplet, retry after {first + cfg['delay'] - now:.0f}s")

    @staticmethod
    def _remember(table: dict, key: tuple, value: float) -> None:
        if key not in table and len(table) >= MAX_ENTRIES:
            table.pop(next(iter(table)))
        table[key] = value
