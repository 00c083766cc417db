"""Issue 18, must-show: gateway nodes on one PostgreSQL database enforce one rate limit. A client
spreading its messages over the nodes gets N per minute from the cluster, not N per node; with
PostgreSQL stopped each node falls back to the limit on its own count (some mail still passes,
the limit still holds per node), and when it is back the cluster's count applies again.
Synchronisation is by waiting on state (the node's view of the count), never by sleeping."""

from __future__ import annotations

import pytest

import rig
from pg_rig import PgCluster
from rig import ATTACKER, GATEWAY, GATEWAY2, INTERNET, RawSMTP, free_port, wait_until

LIMIT = 6
POLICY = rig.GUIDE_POLICY + f"\n[gateway.ratelimit]\nmax_messages = {LIMIT}\nmax_connections = 1000\nwindow = 60.0\n"


def _gateway(node_factory, name: str, address: str, dns):
    return node_factory(POLICY, node={"name": name, "cluster_sync_interval": 0.05, "cluster_stale_after": 1.0},
                        roles={"mailbox": False, "gateway": True},
                        dns={"servers": [dns.address], "timeout": 1.0},
                        gateway={"listen": [f"{address}:{free_port(address)}"], "downstream": [f"127.0.0.1:{free_port()}"],
                                 "source_address": address, "hostname": f"{name}.contoso.test"})


def _mail(node, address: str, source: str = ATTACKER) -> int:
    """One MAIL FROM on `node` from `source`: 250 while within the limit, 450 beyond it."""
    with RawSMTP(address, node.port("gateway"), source) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO sender.test")
        code, _ = c.cmd("MAIL FROM:<s@fabrikam.test>")
        c.cmd("QUIT")
        return code


def _seen(node, ip: str = ATTACKER) -> float:
    import time

    return node.node.cluster.estimate("msg", ip, 60.0, time.time())


@pytest.fixture
def own_pg():
    cluster = PgCluster().start()
    cluster.wait_ready()
    yield cluster
    cluster.stop()


def _two_gateways(node_factory, url, monkeypatch, dns):
    monkeypatch.setenv("MXGATE_STORE_URL", url)
    a = _gateway(node_factory, "gw-a", GATEWAY, dns)
    b = _gateway(node_factory, "gw-b", GATEWAY2, dns)
    assert wait_until(lambda: a.node.cluster.live_nodes == 2 and b.node.cluster.live_nodes == 2, timeout=10)
    return a, b


def test_a_message_limit_holds_across_two_gateway_nodes(node_factory, pg_url, monkeypatch, dns):
    a, b = _two_gateways(node_factory, pg_url, monkeypatch, dns)
    codes = []
    for i in range(LIMIT + 4):  # alternate nodes; each waits until the other node's count is seen
        node, addr, other = (a, GATEWAY, b) if i % 2 == 0 else (b, GATEWAY2, a)
        codes.append(_mail(node, addr))
        accepted = codes.count(250)
        assert wait_until(lambda: round(_seen(other)) == accepted, timeout=5)
    assert codes.count(250) == LIMIT and set(codes[LIMIT:]) == {450}, codes
    assert _mail(a, GATEWAY, INTERNET) == 250 and _mail(b, GATEWAY2, INTERNET) == 250  # others unaffected


def test_postgresql_stopped_mid_test_degrades_to_per_node_limits_and_recovers(node_factory, own_pg, monkeypatch, dns):
    a, b = _two_gateways(node_factory, own_pg.create_database(), monkeypatch, dns)
    for n in (1, 2):  # between syncs a node gives at most 1/(2N) of what is left: wait for each sync
        assert _mail(a, GATEWAY) == 250
        assert wait_until(lambda: round(_seen(b)) == n, timeout=5)

    own_pg.halt()
    try:
        assert wait_until(lambda: a.node.cluster.degraded and b.node.cluster.degraded, timeout=15)
        # Each node now counts alone, from what it knew: A has 2 of 6 left to give, B likewise.
        codes_a = [_mail(a, GATEWAY) for _ in range(LIMIT)]
        codes_b = [_mail(b, GATEWAY2) for _ in range(LIMIT)]
        assert codes_a.count(250) == LIMIT - 2 and codes_a[-1] == 450, codes_a  # never no limit
        assert codes_b.count(250) == LIMIT - 2 and codes_b[-1] == 450, codes_b
        assert _mail(b, GATEWAY2, INTERNET) == 250  # never refusing everyone
    finally:
        own_pg.resume()
    # Back: each node writes the counts it made meanwhile and reads the other's.
    total = 2 + 2 * (LIMIT - 2)
    assert wait_until(lambda: not a.node.cluster.degraded and not b.node.cluster.degraded, timeout=30)
    assert wait_until(lambda: round(_seen(a)) == total and round(_seen(b)) == total, timeout=10)
    assert _mail(a, GATEWAY) == 450 and _mail(b, GATEWAY2) == 450
