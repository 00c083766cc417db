"""Issue 10, must-show 3: two gateway nodes (real `mxgate serve` processes) with
`queue = "database"` on one PostgreSQL database and the downstream stopped. Mail accepted by both
is queued; node A is killed with kill -9 while it holds leases; the downstream starts; node B
delivers every acknowledged message — A's too — and none twice.

"Stopped" is a black hole (a socket that accepts and never greets) so that A's attempts are in
flight, leased to A, at the moment it dies: that is the case the lease expiry exists for.

No step depends on timing (it failed 3 times in 7 under load, issue 15): an attempt hangs on the
black hole for HANG seconds, far longer than it takes to see it and kill A; every wait is a wait
on state with a bound far above need; "no late duplicate" is checked after B has stopped (it
hands back its leases and relays nothing more), not after a sleep.
"""

from __future__ import annotations

import email
import socket

import pytest

import rig
from clusterkit import gateway_toml, queue_rows
from rig import GATEWAY, GATEWAY2, INTERNET, SubprocessNode, free_port, maildir_messages, send_message, simple_message, wait_until
from mxgate.config.home import Home
from mxgate.server.tls import ensure_default_certificates

PER_GATEWAY = 8
LEASE = 2.0
HANG = 60.0  # relay connect timeout: an attempt on the black hole holds its lease this long


def _acked(host: str, port: int, subject: str) -> bool:
    r = send_message(host, port, source=INTERNET, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message(subject=subject))
    return r.get("end", (0,))[0] == 250


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_killed_gateways_queue_is_delivered_by_the_other(tmp_path, pg_url, monkeypatch, node_factory, dns, engine_for):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    engine = engine_for(pg_url)
    mbx_home = Home.open(tmp_path / "mbx")
    rig.apply_policy(mbx_home, rig.GUIDE_POLICY)
    certs = ensure_default_certificates(mbx_home.certs, "mx.mxgate.test")  # the mailbox node reuses these
    downstream_port = free_port()
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", downstream_port))
    hole.listen(256)  # the kernel completes handshakes; nobody ever greets

    gateways = {}
    for name, host in (("gw-a", GATEWAY), ("gw-b", GATEWAY2)):
        port = free_port(host)
        config = tmp_path / f"{name}.toml"
        config.write_text(gateway_toml(name=name, store_url=pg_url, listen=f"{host}:{port}",
                                       downstream=f"127.0.0.1:{downstream_port}", downstream_ca=str(certs.ca_cert),
                                       dns=dns.address, source=GATEWAY, queue_lease=LEASE,
                                       relay_connect_timeout=HANG))
        home = tmp_path / name
        home.mkdir()
        gateways[name] = (SubprocessNode(home, config).start(wait_for=(host, port)), host, port)
    try:
        acked = {name: [f"{name}-{i}" for i in range(PER_GATEWAY) if _acked(host, port, f"{name}-{i}")]
                 for name, (_, host, port) in gateways.items()}
        assert all(len(v) == PER_GATEWAY for v in acked.values()), acked
        rows = queue_rows(engine)
        assert len(rows) == 2 * PER_GATEWAY and {r["node"] for r in rows} == {"gw-a", "gw-b"}  # all queued
        # Kill A while it is relaying (leases held) — the moment the lease rule is for.
        assert wait_until(lambda: any(r["lease_owner"] == "gw-a" and r["queue"] == "active" for r in queue_rows(engine)),
                          timeout=HANG)
        gateways["gw-a"][0].kill9()
        held_by_dead = [r["queue_id"] for r in queue_rows(engine) if r["lease_owner"] == "gw-a"]
        assert held_by_dead, "A died holding no lease: the test would not exercise lease expiry"

        hole.close()  # the downstream starts: the real mailbox node on the same port
        node_factory(None, home_dir=mbx_home.root, node={"name": "mbx"}, mailbox={"listen": [f"127.0.0.1:{downstream_port}"]},
                     dns={"servers": [dns.address], "timeout": 1.0})
        everything = acked["gw-a"] + acked["gw-b"]

        def subjects() -> list[str]:
            return [email.message_from_bytes(m)["Subject"] for m in maildir_messages(mbx_home, "alice@contoso.test")]

        assert wait_until(lambda: set(subjects()) >= set(everything), timeout=180), (
            sorted(set(everything) - set(subjects())), queue_rows(engine))
        assert wait_until(lambda: queue_rows(engine) == [], timeout=60)
        gateways["gw-b"][0].stop()  # B relays nothing after this: a duplicate would be on disk now
        got = subjects()
        assert sorted(got) == sorted(everything), "every acknowledged message exactly once"
        # A accepted half of them and died before the downstream came back: B delivered those.
        by_a = [m for m in maildir_messages(mbx_home, "alice@contoso.test") if b"by gw-a.contoso.test" in m]
        assert len(by_a) == PER_GATEWAY
    finally:
        hole.close()
        for node, _, _ in gateways.values():
            node.stop()
