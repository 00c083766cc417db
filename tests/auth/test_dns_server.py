"""The test DNS server answers like an authoritative server, over UDP and TCP."""
from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from dnsserver import TestDNSServer
from mxgate.auth.dns import (DnsTemporaryError, default_resolver, dnsfunc_for,
                             install_default_resolver, make_resolver, parse_server)


def test_a_aaaa_mx_ptr_cname_answers(dns_server, resolver):
    dns_server.add("mx.fabrikam.test", "A", "203.0.113.7")
    dns_server.add("mx.fabrikam.test", "AAAA", "2001:db8::7")
    dns_server.add("fabrikam.test", "MX", (10, "mx.fabrikam.test"))
    dns_server.add("7.113.0.203.in-addr.arpa", "PTR", "mx.fabrikam.test")
    dns_server.add("www.fabrikam.test", "CNAME", "mx.fabrikam.test")
    assert [r.address for r in resolver.resolve("mx.fabrikam.test", "A")] == ["203.0.113.7"]
    assert [r.address for r in resolver.resolve("mx.fabrikam.test", "AAAA")] == ["2001:db8::7"]
    mx = list(resolver.resolve("fabrikam.test", "MX"))
    assert (mx[0].preference, mx[0].exchange.to_text()) == (10, "mx.fabrikam.test.")
    assert resolver.resolve("7.113.0.203.in-addr.arpa", "PTR")[0].target.to_text() == "mx.fabrikam.test."
    answer = resolver.resolve("www.fabrikam.test", "A")
    assert answer.canonical_name.to_text() == "mx.fabrikam.test."
    assert answer[0].address == "203.0.113.7"


def test_nxdomain_and_nodata(dns_server, resolver):
    dns_server.add("a.b.fabrikam.test", "A", "192.0.2.1")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.fabrikam.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("a.b.fabrikam.test", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):  # empty non-terminal exists (RFC 8020)
        resolver.resolve("b.fabrikam.test", "A")


def test_names_are_case_insensitive_and_wildcards_match(dns_server, resolver):
    dns_server.add("*.zen.dnsbl.test", "A", "127.0.0.2")
    dns_server.add("Host.Fabrikam.TEST", "A", "192.0.2.2")
    assert resolver.resolve("host.fabrikam.test", "A")[0].address == "192.0.2.2"
    assert resolver.resolve("2.0.0.127.zen.dnsbl.test", "A")[0].address == "127.0.0.2"


def test_long_txt_is_split_and_served_over_tcp_when_truncated(dns_server, dnsfunc):
    value = "v=DKIM1; k=rsa; p=" + "A" * 900
    dns_server.add("sel._domainkey.fabrikam.test", "TXT", value)
    query = dns.message.make_query("sel._domainkey.fabrikam.test", "TXT")
    udp = dns.query.udp(query, "127.0.0.1", port=dns_server.port, timeout=2)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = dns.query.tcp(query, "127.0.0.1", port=dns_server.port, timeout=2)
    strings = tcp.answer[0][0].strings
    assert all(len(s) <= 255 for s in strings) and len(strings) == 4
    assert dnsfunc(b"sel._domainkey.fabrikam.test") == value.encode()
    assert ("sel._domainkey.fabrikam.test", "TXT", "tcp") in dns_server.queries


def test_remove_and_rcode(dns_server, dnsfunc):
    dns_server.add("x.test", "TXT", "one")
    dns_server.add("x.test", "TXT", "two")
    assert sorted(dnsfunc.txt_records("x.test")) == [b"one", b"two"]
    dns_server.remove("x.test", "TXT")
    assert dnsfunc("x.test") is None
    dns_server.set_rcode("SERVFAIL")
    with pytest.raises(DnsTemporaryError):
        dnsfunc("x.test")


def test_delay_makes_lookups_time_out_quickly(dns_server):
    dns_server.add("slow.test", "TXT", "late")
    dns_server.set_delay(2.0)
    lookup = dnsfunc_for(make_resolver([dns_server.address], timeout=0.3), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DnsTemporaryError):
        lookup(b"slow.test")
    assert time.monotonic() - started < 1.5
    dns_server.set_delay(0)
    assert lookup(b"slow.test") == b"late"


def test_ipv6_loopback_server():
    with TestDNSServer(host="::1") as server:
        server.add("v6.test", "A", "192.0.2.9")
        assert server.address == f"[::1]:{server.port}"
        res = make_resolver([server.address], timeout=1)
        assert res.resolve("v6.test", "A")[0].address == "192.0.2.9"


def test_parse_server_forms():
    assert parse_server("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:53") == ("::1", 53)
    assert parse_server("::1") == ("::1", 53)
    for bad in ("dns.example:53", "127.0.0.1:0", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_server(bad)


def test_default_resolver_is_restored(dns_server):
    res = make_resolver([dns_server.address], timeout=1)
    before = dns.resolver.default_resolver
    with default_resolver(res):
        assert dns.resolver.get_default_resolver() is res
    assert dns.resolver.default_resolver is before
    previous = install_default_resolver(res)
    assert install_default_resolver(previous) is res
