"""Longest-prefix matching of IPv4 and IPv6 addresses against many CIDR entries.

Owns: parsing CIDR text (IPv4-mapped IPv6 prefixes as IPv4; single addresses are normalised by
mxgate/names.py) and a lookup table that answers "which values does the most specific covering prefix carry"
in O(log n). Must not know what the values mean (connectors, trust lists): callers decide.

Design: CIDR prefixes are either nested or disjoint, so a sweep over the prefixes sorted by
(start, widest first) flattens them into disjoint intervals, each labelled with the values
of its most specific covering prefix. A lookup is then one ``bisect`` per family, bounded by
an index on the address's top 16 bits.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from ipaddress import IPv4Address
from itertools import accumulate
from typing import Generic, Hashable, Iterable, NamedTuple, TypeVar

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

    __slots__ = ("_v4", "_v6", "size")

    def __init__(self, entries: Iterable[tuple[IPNetwork, V]], *, index_bits: int | None = None):
        """`index_bits`: how many top bits of an address pick its bucket; by default 16 for a
        family with more than INDEX_FROM intervals and 0 (one bucket: a plain bisect) otherwise."""
        by_family: dict[int, dict[tuple[int, int], set]] = {4: {}, 6: {}}
        count = 0
        for net, value in entries:
            key = (int(net.network_address), net.prefixlen)
            by_family[net.version].setdefault(key, set()).add(value)
            count += 1
        self.size = count
        self._v4 = _family(_flatten(by_family[4], 32), 32, index_bits)
        self._v6 = _family(_flatten(by_family[6], 128), 128, index_bits)

    def lookup(self, ip: str | IPAddress) -> frozenset:
        addr = normalize_ip(ip)
        # `_ip` is int(addr) without the __int__ call, and the exact-type test spares the
        # `version` property: together a fifth of a lookup (P5).
        value = addr._ip
        starts, values, index, shift = self._v4 if type(addr) is IPv4Address or addr.version == 4 else self._v6
        bucket = value >> shift
        # starts[0] == 0 and gaps are intervals of their own, so the covering interval is
        # always the one before the insertion point (P5: no second list to read).
        return values[bisect_right(starts, value, index[bucket], index[bucket + 1]) - 1]

    def __contains__(self, ip: object) -> bool:
        return bool(self.lookup(ip))  # type: ignore[arg-type]


_INDEX_BITS = 16
# Below this many intervals a plain bisect is a few probes, and a 65,537-entry index would cost
# ~0.5 MB per family for nothing: every listener's trusted-proxy table and each small policy has one.
INDEX_FROM = 1024


class _Family(NamedTuple):
    """One family's intervals, gap-filled so they cover the whole address space, plus an index
    of where each top-16-bit bucket's intervals begin in `starts`.

    The index bounds each bisect to one bucket's intervals: at 100k entries a plain bisect of
    ~17 probes spent most of a lookup in cache misses on the scattered int objects (P5)."""

    starts: list[int]
    values: list[frozenset]
    index: list[int]  # index[b] = bisect_left(starts, b << shift); index[-1] = len(starts)
    shift: int


def _family(intervals: list[tuple[int, int, frozenset]], bits: int, index_bits: int | None = None) -> _Family:
    starts: list[int] = []
    values: list[frozenset] = []
    cursor = 0
    for lo, hi, vals in intervals:
        if lo > cursor:
            starts.append(cursor)
            values.append(_EMPTY)
        starts.append(lo)
        values.append(vals)
        cursor = hi + 1
    if cursor < (1 << bits) or not starts:
        starts.append(cursor if starts else 0)
        values.append(_EMPTY)
    if index_bits is None:
        index_bits = _INDEX_BITS if len(starts) > INDEX_FROM else 0
    shift = bits - index_bits
    # index[b] = how many intervals start in a bucket below b: a prefix sum, O(n + 65536) at
    # compile time (a policy change must be enforced within 100 ms, P6). With 0 bits it is
    # [0, len(starts)]: one bucket, the same lookup code.
    counts = [0] * ((1 << index_bits) + 1)
    for start in starts:
        counts[(start >> shift) + 1] += 1
    index = list(accumulate(counts))
    return _Family(starts, values, index, shift)


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
