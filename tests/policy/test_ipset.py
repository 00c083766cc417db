"""Issue 2 must-show 4: IP-set matching against a brute-force oracle (v4, v6, mapped, overlapping
prefixes, longest prefix)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.policy.ipset import PrefixTable, parse_network, prefix_too_wide
from mxgate.names import normalize_ip


def oracle(entries, ip):
    ip = normalize_ip(ip)
    best, vals = -1, set()
    for net, v in entries:
        if net.version == ip.version and ip in net:
            if net.prefixlen > best:
                best, vals = net.prefixlen, {v}
            elif net.prefixlen == best:
                vals.add(v)
    return frozenset(vals)


# Small address spaces so random prefixes overlap often.
v4_nets = st.builds(lambda a, p: ipaddress.IPv4Network((a & ~((1 << (32 - p)) - 1) & 0xFFFFFFFF, p)),
                    st.integers(0x0A000000, 0x0A0000FF), st.integers(22, 32))
v6_nets = st.builds(lambda a, p: ipaddress.IPv6Network(((0x20010DB8 << 96 | a) & ~((1 << (128 - p)) - 1), p)),
                    st.integers(0, 0xFFFF), st.integers(112, 128))
entries_st = st.lists(st.tuples(st.one_of(v4_nets, v6_nets), st.sampled_from("abcd")), max_size=25)
v4_probe = st.integers(0x09FFFFF0, 0x0A000110).map(ipaddress.IPv4Address)
v6_probe = st.integers(0, 0x1FFFF).map(lambda a: ipaddress.IPv6Address(0x20010DB8 << 96 | a))


@settings(max_examples=300, deadline=None)
@given(entries_st, st.lists(st.one_of(v4_probe, v6_probe), min_size=1, max_size=20))
def test_longest_prefix_matches_oracle(entries, probes):
    table = PrefixTable(entries)
    for ip in probes:
        assert table.lookup(ip) == oracle(entries, ip)


@settings(max_examples=100, deadline=None)
@given(entries_st, v4_probe)
def test_ipv4_mapped_ipv6_matches_as_ipv4(entries, ip):
    table = PrefixTable(entries)
    mapped = ipaddress.IPv6Address("::ffff:" + str(ip))
    assert table.lookup(mapped) == table.lookup(ip) == oracle(entries, ip)


def test_nested_and_adjacent_prefixes():
    t = PrefixTable([(parse_network("10.0.0.0/8"), "wide"), (parse_network("10.1.0.0/16"), "mid"),
                     (parse_network("10.1.2.3"), "host"), (parse_network("10.2.0.0/16"), "other")])
    assert t.lookup("10.0.0.1") == {"wide"}
    assert t.lookup("10.1.9.9") == {"mid"}
    assert t.lookup("10.1.2.3") == {"host"}
    assert t.lookup("10.1.2.4") == {"mid"}
    assert t.lookup("10.2.255.255") == {"other"}
    assert t.lookup("10.3.0.0") == {"wide"}
    assert t.lookup("11.0.0.0") == frozenset()
    assert t.lookup("::1") == frozenset()


def test_parse_network_rules():
    assert str(parse_network("::ffff:192.0.2.0/120")) == "192.0.2.0/24"
    for bad in ("10.0.0.1/8", "300.1.1.1", "", "10.0.0.0/33", "fe80::1%eth0/64"):
        try:
            parse_network(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert prefix_too_wide(parse_network("10.0.0.0/8")) and not prefix_too_wide(parse_network("10.0.0.0/16"))
    assert prefix_too_wide(parse_network("2001:db8::/32")) and not prefix_too_wide(parse_network("2001:db8::/48"))
    assert normalize_ip("[::ffff:127.0.0.66]") == ipaddress.IPv4Address("127.0.0.66")


# Issue 19 (P5): lookups are bisects bounded by an index on the address's top 16 bits, over
# gap-filled intervals. The attacker's addresses sit where such an index could go wrong: on
# and one beside a bucket edge (x.y.0.0, x.y.255.255), one outside a range, at the ends of the
# address space, and in IPv4-mapped IPv6 text forms.
def _edge(b: int, d: int) -> int:
    return ((b << 16) + d) & 0xFFFFFFFF


v4_edge_nets = st.builds(lambda b, d, p: ipaddress.IPv4Network((_edge(b, d) & ~((1 << (32 - p)) - 1) & 0xFFFFFFFF, p)),
                         st.sampled_from([0, 1, 0x7F00, 0x7F01, 0xFFFE, 0xFFFF]), st.integers(-3, 3), st.integers(0, 32))
v4_edge_probe = st.builds(lambda b, d: ipaddress.IPv4Address(_edge(b, d)),
                          st.sampled_from([0, 1, 2, 0x7F00, 0x7F01, 0x7F02, 0xFFFE, 0xFFFF]), st.integers(-2, 2))
v6_edge_nets = st.builds(lambda b, d, p: ipaddress.IPv6Network((((b << 112) + d) % (1 << 128)) & ~((1 << (128 - p)) - 1), p),
                         st.sampled_from([0, 0x2001, 0xFFFF]), st.integers(-3, 3), st.integers(0, 128))
v6_edge_probe = st.builds(lambda b, d: ipaddress.IPv6Address(((b << 112) + d) % (1 << 128)),
                          st.sampled_from([0, 0x2001, 0x2002, 0xFFFF]), st.integers(-2, 2))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.one_of(v4_edge_nets, v6_edge_nets), st.sampled_from("abc")), max_size=12),
       st.lists(st.one_of(v4_edge_probe, v6_edge_probe), min_size=1, max_size=20))
def test_lookup_at_index_bucket_edges_matches_oracle(entries, probes):
    # The bucket index is forced on (small tables get a plain bisect by default), and the default is checked too.
    for table in (PrefixTable(entries, index_bits=16), PrefixTable(entries)):
        for ip in probes:
            assert table.lookup(ip) == oracle(entries, ip), ip
            if ip.version == 4:
                for text in (f"::ffff:{ip}", f"[::ffff:{ip}]", f"::FFFF:{int(ip) >> 16:x}:{int(ip) & 0xFFFF:x}"):
                    assert table.lookup(text) == oracle(entries, ip), text


def test_only_a_large_family_carries_the_bucket_index():
    """A listener's trusted-proxy table must not hold a 65,537-entry index (~0.5 MB) for three entries."""
    from mxgate.policy.ipset import INDEX_FROM

    small = PrefixTable([(parse_network("127.0.0.10"), "partner")])
    assert len(small._v4.index) == 2 and len(small._v6.index) == 2
    big = PrefixTable((ipaddress.ip_network(f"10.{i >> 8}.{i & 255}.0/25"), "p") for i in range(INDEX_FROM + 1))
    assert len(big._v4.index) == (1 << 16) + 1 and len(big._v6.index) == 2
    assert big.lookup("10.0.1.7") == {"p"} and big.lookup("10.0.1.200") == big.lookup("10.200.0.1") == frozenset()


def test_attacker_next_to_listed_hosts_and_ranges():
    t = PrefixTable([(parse_network("127.0.0.10"), "partner"), (parse_network("192.0.2.0/24"), "range"),
                     (parse_network("0.0.0.0/32"), "zero"), (parse_network("255.255.255.255"), "top")])
    assert t.lookup("127.0.0.10") == {"partner"} == t.lookup("::ffff:127.0.0.10")
    for outsider in ("127.0.0.66", "::ffff:127.0.0.66", "127.0.0.9", "127.0.0.11", "192.0.1.255", "192.0.3.0",
                     "0.0.0.1", "255.255.255.254", "::7f00:a", "::ffff:7f00:b"):
        assert t.lookup(outsider) == frozenset(), outsider
    assert t.lookup("192.0.2.0") == t.lookup("192.0.2.255") == t.lookup("::ffff:c000:2ff") == {"range"}
    assert t.lookup("0.0.0.0") == {"zero"} and t.lookup("255.255.255.255") == {"top"}
    assert PrefixTable([]).lookup("::") == PrefixTable([]).lookup("0.0.0.0") == frozenset()


def test_address_subclasses_are_looked_up_in_their_family():
    class Peer(ipaddress.IPv4Address):
        pass

    t = PrefixTable([(parse_network("127.0.0.10"), "partner"), (parse_network("::7f00:a"), "v6")])
    assert t.lookup(Peer("127.0.0.10")) == {"partner"}
    assert t.lookup(ipaddress.IPv6Address("::7f00:a")) == {"v6"}
