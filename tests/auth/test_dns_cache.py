"""The node's DNS answers are cached for their TTL (`[dns] cache_size`), so a stream of messages
from one domain asks the DNS server once; with the cache off every lookup goes out."""

from __future__ import annotations

import time

from mxgate.auth.dns import make_resolver


def _txt_queries(server, name):
    return [q for q in server.queries if q[0].rstrip(".") == name and q[1] == "TXT"]


def test_answers_are_cached_for_their_ttl(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.7 -all", ttl=1)
    cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    for _ in range(3):
        assert cached.resolve("fabrikam.test", "TXT")[0].strings == (b"v=spf1 ip4:203.0.113.7 -all",)
    assert len(_txt_queries(dns_server, "fabrikam.test")) == 1
    time.sleep(1.2)  # the TTL runs out: asked again
    cached.resolve("fabrikam.test", "TXT")
    assert len(_txt_queries(dns_server, "fabrikam.test")) == 2


def test_no_cache_when_disabled(dns_server):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 -all")
    plain = make_resolver([dns_server.address], timeout=1.0)
    for _ in range(3):
        plain.resolve("fabrikam.test", "TXT")
    assert len(_txt_queries(dns_server, "fabrikam.test")) == 3
