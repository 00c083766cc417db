"""Greylisting (off by default): refuse a new (client network, sender, recipient) triplet with 451
once; accept its retry after `delay` and remember it for `pass_ttl`.

Owns: the triplet key (IPv4 /24 and IPv6 /64, so a sender's pool of outbound servers counts as
one), the table, and the decision. Callers pass `now`. With `shared` (store/cluster.ClusterState)
the table is the cluster's, so a retry may reach any node; alone it is per process: after a
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


class _LocalTable:
    """The greylist table of one process (the cluster's is store/cluster.ClusterState)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float | None, float]] = {}

    def grey_get(self, key: str) -> tuple[float | None, float]:
        return self._rows.get(key, (None, 0.0))

    def grey_put(self, key: str, first_seen: float | None, passed_until: float) -> None:
        if key not in self._rows and len(self._rows) >= MAX_ENTRIES:
            self._rows.pop(next(iter(self._rows)))
        self._rows[key] = (first_seen, passed_until)


class Greylist:
    def __init__(self, shared=None) -> None:
        self.table = shared if shared is not None else _LocalTable()

    def check(self, ip: str, sender: str, rcpt: str, cfg: CheckSettings, now: float) -> CheckResult:
        if not cfg.enabled:
            return passed(NAME, "off")
        key = "|".join(triplet(ip, sender, rcpt))[:700]
        first, until = self.table.grey_get(key)
        if until > now:
            self.table.grey_put(key, first, now + cfg["pass_ttl"])
            return passed(NAME, "known triplet")
        if first is not None and first + cfg["delay"] <= now <= first + cfg["delay"] + cfg["retry_window"]:
            self.table.grey_put(key, None, now + cfg["pass_ttl"])
            return passed(NAME, f"retried after {now - first:.0f}s")
        if first is None or now > first + cfg["delay"] + cfg["retry_window"]:
            self.table.grey_put(key, now, until)
            first = now
        return fired(NAME, cfg.action, "greylisted", f"new triplet, retry after {first + cfg['delay'] - now:.0f}s")
