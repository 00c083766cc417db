"""Longest-prefix matching of IPv4 and IPv6 addresses against many CIDR entries.

Owns: parsing CIDR text (IPv4-mapped IPv6 prefixes as IPv4; single addresses are normalised by
mxgate/names.py) and a lookup table that answers "which values does the most specific covering prefix carry"
in O(log n). Must not know what the values mean (connectors, trust lists): callers decide.

Design: CIDR prefixes are either nested or disjoint, so a sweep over the prefixes sorted by
(start, widest first) flattens them into disjoint intervals, each labelled with the values
of its most specific covering prefix. A lookup is then one ``bisect`` per family.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Generic, Hashable, Iterable, TypeVar

from mxgate.names import IPAddress, normalize_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

V = TypeVar("V", bound=Hashable)
_EMPTY: frozenset = frozenset()


def parse_network(text: str) -> IPNetwork:
    """Parse ``a.b.c.d``, ``a.b.c.d/n``, ``2001:db8::/32``; host bits must be zero.

    Raises ValueError with a short reason. IPv4-mapped IPv6 prefixes of /96 or longer are
    rewritten as the IPv4 prefix they denote.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IP address or CIDR prefix ({exc})") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None and net.prefixlen >= 96:
        return ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
    return net


class PrefixTable(Generic[V]):
    """Immutable longest-prefix-match table from CIDR prefixes to sets of values.

    Several values may share one prefix (two connectors listing the same range); a lookup
    returns all values of the most specific matching prefix, or an empty frozenset.
    """

    __slots__ = ("_starts", "_ends", "_values", "size")

    def __init__(self, entries: Iterable[tuple[IPNetwork, V]]):
        by_family: dict[int, dict[tuple[int, int], set]] = {4: {}, 6: {}}
        count = 0
        for net, value in entries:
            key = (int(net.network_address), net.prefixlen)
            by_family[net.version].setdefault(key, set()).add(value)
            count += 1
        self.size = count
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        self._values: dict[int, list[frozenset]] = {}
        for family, prefixes in by_family.items():
            bits = 32 if family == 4 else 128
            intervals = _flatten(prefixes, bits)
            self._starts[family] = [iv[0] for iv in intervals]
            self._ends[family] = [iv[1] for iv in intervals]
            self._values[family] = [iv[2] for iv in intervals]

    def lookup(self, ip: str | IPAddress) -> frozenset:
        addr = normalize_ip(ip)
        family = addr.version
        value = int(addr)
        i = bisect_right(self._starts[family], value) - 1
        if i >= 0 and value <= self._ends[family][i]:
            return self._values[family][i]
        return _EMPTY

    def __contains__(self, ip: object) -> bool:
        return bool(self.lookup(ip))  # type: ignore[arg-type]


def _flatten(prefixes: dict[tuple[int, int], set], bits: int) -> list[tuple[int, int, frozenset]]:
    """Turn nested/disjoint prefixes into sorted disjoint intervals labelled most-specific-first."""
    ordered = sorted(
        ((start, start + (1 << (bits - plen)) - 1, frozenset(vals)) for (start, plen), vals in prefixes.items()),
        key=lambda p: (p[0], -(p[1] - p[0])),
    )
    out: list[tuple[int, int, frozenset]] = []
    stack: list[tuple[int, int, frozenset]] = []  # enclosing prefixes, innermost last
    cursor = 0  # first address not yet emitted

    def emit(lo: int, hi: int, vals: frozenset) -> None:
        if lo <= hi:
            if out and out[-1][1] + 1 == lo and out[-1][2] == vals:
                out[-1] = (out[-1][0], hi, vals)
            else:
                out.append((lo, hi, vals))

    for start, end, vals in ordered:
        # Close enclosing prefixes that end before this one starts.
        while stack and stack[-1][1] < start:
            top = stack.pop()
            emit(max(cursor, top[0]), top[1], top[2])
            cursor = max(cursor, top[1] + 1)
        if stack:
            emit(max(cursor, stack[-1][0]), start - 1, stack[-1][2])
        cursor = max(cursor, start)
        stack.append((start, end, vals))
    while stack:
        top = stack.pop()
        emit(max(cursor, top[0]), top[1], top[2])
        cursor = max(cursor, top[1] + 1)
    return out


def prefix_too_wide(net: IPNetwork) -> bool:
    """Wider than /16 (IPv4) or /48 (IPv6): allowed, but worth a warning (mail-flow.md §2)."""
    return net.prefixlen < (16 if net.version == 4 else 48)
