"""The node's DNS answers are cached for their TTL (`[dns] cache_size`), so a stream of messages
from one domain asks the DNS server once; with the cache off every lookup goes out.
Issue 15, DNS failures cost little: the system-resolver path has the same cache; identical
lookups in flight are one query; negative answers without an SOA are cached for a floor; a
dropped query is asked again within the lifetime; stale answers are served when the resolver
fails (RFC 8767). Clocks are injected: nothing here waits for a TTL to run out."""

from __future__ import annotations

import threading

import dns.resolver
import pytest

from mxgate.auth import dns as mdns
from mxgate.auth.dns import CachingResolver, make_resolver
from rig import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _queries(server, name, rtype="TXT"):
    return [q for q in server.queries if q[0].rstrip(".") == name and q[1] == rtype]


def test_answers_are_cached_for_their_ttl(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all", ttl=1)
    clock = Clock()
    cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100, clock=clock)
    for _ in range(3):
        assert cached.resolve("fabrikam.test", "TXT")[0].strings == (b"v=spf1 ip4:203.0.113.7 -all",)
    assert len(_queries(dns_server, "fabrikam.test")) == 1
    clock.now += 1.5  # the TTL runs out: asked again
    cached.resolve("fabrikam.test", "TXT")
    assert len(_queries(dns_server, "fabrikam.test")) == 2


def test_no_cache_when_disabled(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all")
    plain = make_resolver([dns_server.address], timeout=1.0)
    for _ in range(3):
        plain.resolve("fabrikam.test", "TXT")
    assert len(_queries(dns_server, "fabrikam.test")) == 3


def test_the_system_resolver_path_is_the_same_resolver_with_the_same_cache():
    """No `[dns] servers`: /etc/resolv.conf's servers, but the same cache and bounds."""
    system = make_resolver((), timeout=2.0, cache_size=100)
    configured = make_resolver(["127.0.0.1:53"], timeout=2.0, cache_size=100)
    assert type(system) is type(configured) is CachingResolver
    assert system.answers is not None and system.lifetime == 2.0 and system.timeout <= mdns.RETRY_INTERVAL
    assert system.nameservers == dns.resolver.Resolver().nameservers  # read from the system


def test_the_node_without_servers_installs_its_cached_resolver(node_factory):
    n = node_factory(dns={"servers": []})
    resolver = n.node.resolver
    assert isinstance(resolver, CachingResolver) and resolver.answers is not None
    assert dns.resolver.get_default_resolver() is resolver  # pyspf and dkimpy go through it


def test_identical_lookups_in_flight_are_one_query(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all")
    resolver = make_resolver([dns_server.address], timeout=5.0, cache_size=100)
    dns_server.hold()
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolver.resolve("fabrikam.test", "TXT")))
               for _ in range(8)]
    try:
        for t in threads:
            t.start()
        assert wait_until(lambda: resolver.stats["coalesced"] == 7, timeout=5)  # all waiting on the first
    finally:
        dns_server.release()
    for t in threads:
        t.join(5)
    assert len(results) == 8 and len(_queries(dns_server, "fabrikam.test")) == 1


@pytest.mark.parametrize("negative", ["nxdomain", "nodata"])
def test_negative_answers_without_soa_are_cached_for_a_floor(dns_server, negative):
    dns_server.add("fabrikam.test", "A", "192.0.2.1")
    name = "missing.test" if negative == "nxdomain" else "fabrikam.test"
    clock = Clock()
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100, clock=clock)
    expected = dns.resolver.NXDOMAIN if negative == "nxdomain" else dns.resolver.NoAnswer
    for _ in range(3):
        with pytest.raises(expected):
            resolver.resolve(name, "TXT")
    assert len(_queries(dns_server, name)) == 1 and resolver.stats["negative_floor"] == 1
    clock.now += mdns.NEGATIVE_FLOOR + 1
    with pytest.raises(expected):
        resolver.resolve(name, "TXT")
    assert len(_queries(dns_server, name)) == 2


def test_negative_answers_with_soa_follow_its_minimum(dns_server):
    dns_server.set_negative_soa(True)  # the SOA says 60 s (RFC 2308 §5)
    clock = Clock()
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100, clock=clock)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.test", "A")
    clock.now += 59
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.test", "A")
    assert len(_queries(dns_server, "missing.test", "A")) == 1 and resolver.stats["negative_floor"] == 0


def test_a_dropped_query_is_asked_again_within_the_lifetime(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all")
    dns_server.drop_next(1)  # the first datagram is lost
    resolver = make_resolver([dns_server.address], timeout=5.0, cache_size=100)
    assert resolver.resolve("fabrikam.test", "TXT")[0].strings == (b"v=spf1 -all",)
    assert len(_queries(dns_server, "fabrikam.test")) == 2 and dns_server.dropped == 1


def test_stale_answers_are_served_when_the_resolver_fails(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all", ttl=60)
    clock = Clock()
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100, clock=clock)
    resolver.resolve("fabrikam.test", "TXT")
    clock.now += 120  # expired
    dns_server.set_rcode("SERVFAIL")
    assert resolver.resolve("fabrikam.test", "TXT")[0].strings == (b"v=spf1 -all",)
    assert resolver.stats["stale"] == 1
    resolver.resolve("fabrikam.test", "TXT")  # RFC 8767 §4: not asked again for STALE_TTL
    assert len(_queries(dns_server, "fabrikam.test")) == 2
    clock.now += mdns.MAX_STALE + mdns.STALE_TTL + 1  # too old even to be stale
    with pytest.raises(dns.resolver.NoNameservers):
        resolver.resolve("fabrikam.test", "TXT")


def test_cache_only_answers_from_the_cache_and_never_asks(dns_server):
    """Issue 19: under cache_only() a lookup answers from fresh cache entries (answers and
    negative answers alike) or raises NotCached — not an Exception, so no library's
    `except Exception` turns it into a result — and the look records the miss even when the
    caller swallowed it; nothing is asked meanwhile, and outside the block lookups ask again."""
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all", ttl=60)
    clock = Clock()
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100, clock=clock)
    resolver.resolve("fabrikam.test", "TXT")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.test", "TXT")
    asked = len(dns_server.queries)
    with mdns.cache_only() as look:
        assert resolver.resolve("fabrikam.test", "TXT")[0].strings == (b"v=spf1 -all",)
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve("missing.test", "TXT")
        assert not look.missed
        assert not issubclass(mdns.NotCached, Exception)
        try:
            resolver.resolve("other.test", "TXT")
        except BaseException as exc:  # noqa: BLE001 - pyspf's bare `except: pass` does this
            assert isinstance(exc, mdns.NotCached)
        assert look.missed
    with mdns.cache_only() as look:
        clock.now += 61  # expired: not answered from the cache (serve-stale is the worker's business)
        with pytest.raises(mdns.NotCached):
            resolver.resolve("fabrikam.test", "TXT")
        assert look.missed
    assert len(dns_server.queries) == asked
    resolver.resolve("fabrikam.test", "TXT")  # outside the block: asked again
    assert len(dns_server.queries) == asked + 1
    plain = make_resolver([dns_server.address], timeout=1.0)
    with mdns.cache_only() as look, pytest.raises(mdns.NotCached):
        plain.resolve("fabrikam.test", "TXT")  # no cache at all: never a query on the caller's thread
    assert look.missed and len(dns_server.queries) == asked + 1
    previous = mdns.install_default_resolver(resolver)
    try:
        assert mdns.answers_from_cache(resolver) and not mdns.answers_from_cache(plain)
    finally:
        mdns.install_default_resolver(previous)
    assert not mdns.answers_from_cache(resolver)  # pyspf would ask another resolver
