"""MX lookup against a real DNS server on loopback (conftest.DnsServer)."""

from __future__ import annotations

import socket

import pytest

from mxgate.auth.dns import make_resolver
from mxgate.probe.mx import MxHost
from mxgate.probe.mx import lookup_mx as _lookup


def lookup_mx(domain, servers, timeout):
    """Through the node's one resolver factory (auth/dns.py), in its async view."""
    return _lookup(domain, make_resolver(servers, timeout).aio)


@pytest.fixture
def servers(dns_server):
    return (f"127.0.0.1:{dns_server.port}",)


async def test_preference_order_with_addresses(servers):
    r = await lookup_mx("example.test", servers, timeout=2)
    assert r.error is None and not r.implicit and not r.null_mx
    assert r.hosts == (
        MxHost(10, "mx1.example.test", ("192.0.2.1", "2001:db8::1")),
        MxHost(10, "mxb.example.test", ("2001:db8::b",)),
        MxHost(20, "mx2.example.test", ("192.0.2.3", "192.0.2.20")),  # numeric, not text, order
    )


async def test_queries_go_to_the_configured_server(dns_server, servers):
    before = len(dns_server.queries)
    await lookup_mx("Example.Test.", servers, timeout=2)
    asked = dns_server.queries[before:]
    assert ("example.test.", "MX") in asked
    assert ("mx1.example.test.", "A") in asked and ("mx1.example.test.", "AAAA") in asked


async def test_implicit_mx_when_no_mx_records(servers):
    r = await lookup_mx("implicit.test", servers, timeout=2)
    assert r.implicit and r.error is None
    assert r.hosts == (MxHost(0, "implicit.test", ("192.0.2.9",)),)


async def test_null_mx(servers):
    r = await lookup_mx("null.test", servers, timeout=2)
    assert r.null_mx and r.hosts == () and r.error is None


async def test_nxdomain(servers):
    r = await lookup_mx("missing.test", servers, timeout=2)
    assert r.hosts == () and "NXDOMAIN" in r.error


async def test_exchange_without_addresses_is_reported(servers):
    r = await lookup_mx("dangling.test", servers, timeout=2)
    assert r.hosts == (MxHost(10, "nowhere.test", (), "no A or AAAA records"),)


async def test_unreachable_dns_server_is_an_error_value():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound but never answers: the query times out
    try:
        r = await lookup_mx("example.test", (f"127.0.0.1:{s.getsockname()[1]}",), timeout=0.5)
    finally:
        s.close()
    assert r.hosts == () and r.error == "DNS timeout"


def test_resolver_takes_ports_and_ipv6():
    res = make_resolver(["127.0.0.1:5353", "[::1]:5354", "127.0.0.2"], timeout=1)
    assert [(ns.address, ns.port) for ns in res.nameservers] == [
        ("127.0.0.1", 5353), ("::1", 5354), ("127.0.0.2", 53)]
    assert res.lifetime == 1
