"""P9: connect-stage DNSBL refusals (issue 18): a flood of new connections from DNSBL-listed
addresses against the gateway with `connect_checks = ["dnsbl"]`, each refused with 554 before
the greeting (RFC 5321 §3.1). The first connection from an address looks it up in the bench DNS
server; later ones reuse the verdict the node cached (and shared through its store).

Owns: the gateway setup for this scenario (the DNSBL zone listing every attacker source, the
policy's DNSBL check with action reject, rate limits off so only the DNSBL refuses) and the
measurement: refusals/s, latency per refused connection, the gateway's CPU per refusal.
Must not know: the other scenarios or the report.
"""

from __future__ import annotations

from pathlib import Path

import accounting
import loadclient
import peers
from endtoend import GatewayPeer
from peers import ATTACKER
from scenarios import Mode, Result, _judge

ZONE = "zen.bench.test"
SOURCES = [ATTACKER] + [f"127.0.66.{i}" for i in range(1, 32)]
POLICY = peers.GUIDE_POLICY + f"""
[gateway.dnsbl]
zones = ["{ZONE}"]
action = "reject"
[gateway.ratelimit]
action = "off"
"""


def p9(root: Path, mode: Mode, dns: peers.DnsServer, certs) -> Result:
    for ip in SOURCES:  # RFC 5782 §2.1: the reversed octets under the zone answer 127.0.0.2
        dns.publish(".".join(reversed(ip.split("."))) + "." + ZONE, "A", "127.0.0.2")
    gw = GatewayPeer("mxgate-gw-connect", root, dns=dns.address, policy=POLICY,
                     cert=str(certs.server_cert), key=str(certs.server_key))
    gw.downstream, gw.downstream_ca = "127.0.0.1:9", str(certs.ca_cert)  # nothing is ever relayed
    gw.extra_gateway = 'connect_checks = ["dnsbl"]'
    try:
        gw.start()
        c0 = accounting.tree_cpu(gw.pid())
        with accounting.RssSampler(gw.pid()) as rss:
            res = loadclient.run(loadclient.bypass_flood(peers.GATEWAY, gw.port, concurrency=mode.sessions,
                                                      count=mode.p2_count, sources=SOURCES, deadline=mode.deadline))
        cpu = accounting.tree_cpu(gw.pid()) - c0
        detail = {"refused_at": dict(res.refused_at)}
        ok = _judge(res, None, detail) and res.refused == mode.p2_count and set(res.refused_at) == {"connect"}
        return Result("P9", gw.name, res.rate(), res.percentile(50) * 1e3, res.percentile(99) * 1e3, rss.peak / 2**20,
                      cpu / max(1, res.refused) * 1e6, f"refused at {'/'.join(sorted(res.refused_at)) or '-'}",
                      res.refused, 0, ok, detail)
    finally:
        gw.stop()
