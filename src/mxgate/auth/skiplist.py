"""Enhanced filtering for connectors: find the original sender behind trusted hops.

Owns: the skip-list walk of mail-flow.md §4 as a pure function (`find_original_sender`),
its settings and result values, the default non-routable set, and the `ef_users` scope
test (`ef_applies`). Must not know: SMTP, DNS, SPF/DKIM/DMARC, clocks, the store, or how
a Received header is spelled (that is `auth/received.py`).

Interpretation of "the top header is trusted only if it was written by the trusted hop"
(mail-flow.md §4.3), stated precisely:
- The walk is given the Received headers of the message *as it arrived*, before the
  mailbox server prepends its own, so header 0 was written by the connecting host.
  The connecting IP is therefore the writer of header 0, and header 0 may be believed
  only if the connecting IP is trusted: with `skip_last_ip` it is trusted by definition;
  otherwise it must fall inside `skip_ips`, or the walk does not start (status `none`,
  rule `connecting-ip-not-trusted`). Being non-routable does not make the connecting IP
  trusted — a private address is not necessarily our gateway.
- Header i+1 was written by the host that header i names in its `from` TCP-info. It is
  believed only while every hop named so far is trusted or non-routable. The first
  address that is neither is the original sender: that header, written by a trusted
  hop, is the last one believed; everything below it may be forged and is never read.
- Headers without a `from` part (by-only: Postfix pickup, qmail `invoked by`, Gmail's
  internal hops) and `with local` handovers are passed over without breaking the chain: a
  trusted host wrote them about itself.
- A header with a `from` part whose peer address cannot be read (the MTA recorded none, or
  the sender's HELO text made it ambiguous — see `auth/received.py`) stops the walk: we no
  longer know who wrote the header below it, so nothing below is believed (status
  `stopped`, rule `unreadable-trusted-hop`). Authentication then uses `last_trusted_ip`, the
  last address a believed header named (at worst the connecting IP), never a header the
  sender may have written (adversarial.md §9).
- If a caller passes the headers *after* prepending its own, header 0 names the
  connecting IP, which is trusted, so the walk steps over it and the answer is the same.
- With `skip_last_ip` the trusted set is only the connecting IP (`skip_ips` is ignored),
  as §4.2 says.

`rule` of a detected result names why the hop just above the original sender was
skipped (`skip-last-ip`, `skip-ips` or `non-routable`); `header_index` names the header
(0 = top) whose TCP-info gave the original IP.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mxgate.auth.received import ReceivedHop, parse_received
from mxgate.names import IPAddress, normalize_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Status = Literal["off", "detected", "none", "stopped"]

# RFC 1918 private, RFC 1122 loopback, RFC 3927 link-local, RFC 4193 ULA, RFC 4291
# link-local and loopback. Not Python's `is_private`: it also flags the RFC 5737 /
# RFC 3849 documentation ranges, which here count as Internet addresses.
DEFAULT_NON_ROUTABLE: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",  # RFC 1918
        "192.168.0.0/16",  # RFC 1918
        "127.0.0.0/8",  # RFC 1122 §3.2.1.3 loopback
        "169.254.0.0/16",  # RFC 3927 link-local
        "fc00::/7",  # RFC 4193 unique local
        "fe80::/10",  # RFC 4291 §2.5.6 link-local
        "::1/128",  # RFC 4291 §2.5.3 loopback
    )
)
# Far above any real path (RFC 5321 §6.3 suggests rejecting loops at ~100 hops; the
# listener refuses more than 50 Received headers), and bounds the work per message.
MAX_WALK_HEADERS = 100
# How many skipped hops the one-sentence explanation names before summarising.
MAX_EXPLAINED_HOPS = 6

RULE_DISABLED = "disabled"
RULE_CONNECTING_NOT_TRUSTED = "connecting-ip-not-trusted"
RULE_SKIP_LAST_IP = "skip-last-ip"
RULE_SKIP_IPS = "skip-ips"
RULE_NON_ROUTABLE = "non-routable"
RULE_NO_USABLE_HEADER = "no-usable-header"
RULE_WALK_LIMIT = "walk-limit"
RULE_UNREADABLE_HOP = "unreadable-trusted-hop"
# `with` values of handovers inside one host (Exim `with local`, `local-bsmtp`; spools):
# there is no network peer to read, and the host wrote the header about itself.
LOCAL_PROTOCOLS = frozenset({"LOCAL", "LOCAL-ESMTP", "LOCAL-SMTP", "LOCAL-BSMTP", "SPOOL", "PICKUP"})


@dataclass(frozen=True)
class SkipListSettings:
    """One connector's `ef_skip_last_ip` / `ef_skip_ips`, plus the node's non-routable set.
    Networks may be given as strings; IPv4-mapped IPv6 networks become IPv4."""

    skip_last_ip: bool
    skip_ips: tuple[IPNetwork, ...]
    non_routable: tuple[IPNetwork, ...] = field(default=DEFAULT_NON_ROUTABLE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_ips", _networks(self.skip_ips))
        object.__setattr__(self, "non_routable", _networks(self.non_routable))

    @property
    def enabled(self) -> bool:
        return self.skip_last_ip or bool(self.skip_ips)


@dataclass(frozen=True)
class SkipListResult:
    """The walk's outcome; `rule` is a stable machine reason, `explanation` one human
    sentence for the message trace."""

    status: Status
    original_ip: IPAddress | None
    original_helo: str | None
    header_index: int | None
    rule: str
    explanation: str
    # With status `stopped`: the last address a believed header named (or the connecting
    # IP), which authentication uses instead of anything below the unreadable header.
    last_trusted_ip: IPAddress | None = None


def find_original_sender(
    received: Sequence[str] | Sequence[ReceivedHop],
    connecting_ip: IPAddress | str,
    settings: SkipListSettings,
) -> SkipListResult:
    """Walk Received headers top-down past trusted and non-routable hops (mail-flow.md §4).

    `received` holds header values (top first, as `received_values` returns them) or
    already parsed hops. Pure: no I/O, and at most `MAX_WALK_HEADERS` headers are read.
    """
    if not settings.enabled:
        return DISABLED
    connecting = _connecting(connecting_ip) if type(connecting_ip) is str and len(connecting_ip) <= 64 \
        else normalize_ip(ipaddress.ip_address(connecting_ip))
    if settings.skip_last_ip:
        trusted: tuple[IPNetwork, ...] = (_host_network(connecting),)
        trusted_rule = RULE_SKIP_LAST_IP
    else:
        trusted, trusted_rule = settings.skip_ips, RULE_SKIP_IPS
        if not _in_any(connecting, trusted):
            return _result("none", RULE_CONNECTING_NOT_TRUSTED, (
                f"Connecting IP {connecting} is not in ef_skip_ips, so no Received header is "
                "trusted and authentication uses the connecting IP."))

    skipped = [f"{connecting} (connecting IP, {trusted_rule})"]
    last_rule = trusted_rule
    last_trusted: IPAddress = connecting
    for index, item in enumerate(itertools.islice(received, MAX_WALK_HEADERS)):
        hop = item if isinstance(item, ReceivedHop) else parse_received(item)
        if not hop.has_from or (hop.ip is None and hop.with_proto in LOCAL_PROTOCOLS):
            continue  # by-only or local handover: written by a trusted host about itself
        if hop.ip is None:
            why = hop.note or "no peer address"
            return SkipListResult("stopped", None, None, index, RULE_UNREADABLE_HOP, (
                f"Skipped {_hops(skipped)}; Received header {index}, written by trusted hop "
                f"{last_trusted}, has no readable peer address ({_printable(why)}), so no header "
                f"from it down is believed and authentication uses {last_trusted}."), last_trusted)
        ip = normalize_ip(hop.ip)
        reason = _skip_reason(ip, trusted, trusted_rule, settings.non_routable)
        if reason is not None:
            skipped.append(f"{ip} (header {index}, {reason})")
            last_rule = reason
            last_trusted = ip
            continue
        helo = f" (HELO {_printable(hop.from_helo)})" if hop.from_helo else ""
        return SkipListResult("detected", ip, hop.from_helo, index, last_rule, (
            f"Skipped {_hops(skipped)}; the original sender is {ip}{helo}, named by "
            f"Received header {index}, and no header below it is trusted."))

    if len(received) > MAX_WALK_HEADERS:
        return _result("none", RULE_WALK_LIMIT, (
            f"Stopped after {MAX_WALK_HEADERS} Received headers without reaching an Internet "
            f"address (skipped {_hops(skipped)}); authentication uses the connecting IP."))
    return _result("none", RULE_NO_USABLE_HEADER, (
        f"Skipped {_hops(skipped)}; no Received header names an Internet address below the "
        "trusted hops, so authentication uses the connecting IP."))


# The connecting IP is one of a node's few gateways for nearly every message it walks: its
# parse was a quarter of a walk past one header (issue 19, P3). Pure; ValueError is not kept.
@functools.lru_cache(maxsize=1024)
def _connecting(text: str) -> IPAddress:
    return normalize_ip(ipaddress.ip_address(text))


# Its one-address network, likewise (ipaddress.ip_network was a quarter of a ~12 µs walk past one header, issue 19, P3). Pure;
# networks are immutable, so the cached one is shared safely.
@functools.lru_cache(maxsize=1024)
def _host_network(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(address)


def ef_applies(ef_users: Sequence[str], recipients: Sequence[str]) -> bool:
    """`ef_users` scope (mail-flow.md §4.5): empty means everyone; otherwise enhanced
    filtering applies only when every recipient is listed (compared case-insensitively).
    A message with no recipients is not in scope of a non-empty list."""
    if not ef_users:
        return True
    listed = {_address_key(user) for user in ef_users}
    return bool(recipients) and all(_address_key(r) in listed for r in recipients)


def _skip_reason(
    ip: IPAddress,
    trusted: tuple[IPNetwork, ...],
    trusted_rule: str,
    non_routable: tuple[IPNetwork, ...],
) -> str | None:
    if _in_any(ip, trusted):
        return trusted_rule
    if _in_any(ip, non_routable):
        return RULE_NON_ROUTABLE
    return None


def _in_any(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    # `in` is False across families, so v4 and v6 lists can be mixed freely.
    return any(ip in net for net in networks)


def _networks(values: Sequence[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return tuple(v if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and v.version == 4 or
                 isinstance(v, ipaddress.IPv6Network) and v.network_address.ipv4_mapped is None
                 else _normalise_network(ipaddress.ip_network(v, strict=False)) for v in values)


def _normalise_network(net: IPNetwork) -> IPNetwork:
    """`::ffff:192.0.2.0/120` → `192.0.2.0/24` so it matches normalised addresses."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def _result(status: Status, rule: str, explanation: str) -> SkipListResult:
    return SkipListResult(status, None, None, None, rule, explanation)


# The answer whenever neither setting is on, which reads no header (frozen, so shared).
DISABLED = _result("off", RULE_DISABLED, "Enhanced filtering is off: neither ef_skip_last_ip nor ef_skip_ips is set "
                   "for this connector.")


def _hops(skipped: list[str]) -> str:
    if len(skipped) <= MAX_EXPLAINED_HOPS:
        return ", ".join(skipped)
    shown = ", ".join(skipped[:MAX_EXPLAINED_HOPS])
    return f"{shown} and {len(skipped) - MAX_EXPLAINED_HOPS} more"


def _printable(text: str) -> str:
    # The HELO is sender-controlled; keep the trace sentence one clean line.
    return "".join(c if c.isprintable() else "?" for c in text[:255])


def _address_key(address: str) -> str:
    return address.strip().strip("<>").casefold()
