"""P3: Internet client → mxgate gateway → queue → TLS relay → mxgate mailbox server → Maildir.

Owns: the two-node setup of the end-to-end scenario — a gateway (SPF, DKIM verify, DMARC and the
spam score against the bench DNS server, durable queue, ARC seal, STARTTLS relay from the
gateway address) in front of a mailbox server whose partner connector has enhanced filtering on
(it authenticates the original Internet sender from the gateway's Received header) — the
DKIM-signed load, and the measurement: msg/s from the first MAIL until the last message is in
the Maildir, the gateway queue drained, every acknowledged message delivered exactly once.
Must not know: the other scenarios or the report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import accounting
import loadclient
import peers
from peers import INTERNET, REPO, MxgatePeer
from scenarios import SENDER, Mode, Result, _judge

sys.path.insert(0, str(REPO / "src"))

DKIM_SELECTOR = "bench"
P3_WARMUP = 100  # messages end to end before the measured load
MAILBOX_POLICY = peers.GUIDE_POLICY.replace(
    'authserv_id = "mx.contoso.test"', 'authserv_id = "mx.contoso.test"\narc_trusted_sealers = ["mxgate.test"]'
).replace("require_tls = true", "require_tls = true\nef_skip_last_ip = true")
# The gateway's checks: the defaults (SPF, DKIM, DMARC, rDNS, score, attachments) except the
# per-IP rate limit, which would throttle the one benchmark client by design.
GATEWAY_POLICY = peers.GUIDE_POLICY + """
[gateway.spf]
action = "reject"
[gateway.dmarc]
action = "reject"
[gateway.ratelimit]
action = "off"
"""


class GatewayPeer(MxgatePeer):
    """`mxgate serve` with only the gateway role, relaying to `downstream` from the gateway address."""

    downstream: str = ""
    downstream_ca: str = ""
    extra_gateway: str = ""  # more [gateway] lines (P9: connect_checks)

    def start(self) -> "GatewayPeer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or peers.free_port(peers.GATEWAY)
        self.apply_policy(self.policy)
        (self.root / "node.toml").write_text(f"""
[node]
name = "bench-gateway"
event_loop = "{peers.server_loop()}"
[roles]
mailbox = false
gateway = true
submission = false
admin = false
[gateway]
listen = ["{peers.GATEWAY}:{self.port}"]
hostname = "gw.contoso.test"
tls_cert = "{self.cert}"
tls_key = "{self.key}"
downstream = ["{self.downstream}"]
downstream_ca = "{self.downstream_ca}"
source_address = "{peers.GATEWAY}"
{self.extra_gateway}
queue_scan_interval = 0.2
relay_concurrency = 20
# The load's 20 sessions all come from one Internet address: let them all into the checks
# (a client gets at most half of check_workers).
check_workers = 40
check_per_client = 20
[gateway.limits]
max_connections_per_ip = 20000
[dns]
servers = ["{self.dns}"]
timeout = 2.0
[log]
level = "warning"
""")
        self.proc = peers.spawn_serve(self.root, self.home, self.env)
        peers.wait_greeting(peers.GATEWAY, self.port, 60, self.proc, self.root / "serve.log")
        # At the node's defaults ([node] workers = one per core): measure once every process serves.
        self.processes = peers.wait_workers(self.home, self.root / "serve.log", self.proc)
        return self

    def queued(self) -> int:
        """Queue files in every process's gateway spool (spool/gateway, spool/gateway-w<N>)."""
        spool = self.home / "spool"
        dirs = [d for d in spool.glob("gateway*") if d.name == "gateway" or d.name[len("gateway"):].startswith("-w")]
        return sum(len(os.listdir(d / q)) for d in dirs for q in ("incoming", "active", "deferred", "hold")
                   if (d / q).is_dir())


def signed_template(key_pem: bytes, size: int) -> bytes:
    """One DKIM-signed message; each copy gets its own unsigned X-Bench-Seq on top."""
    from mxgate.auth.dkim import sign_dkim

    body = loadclient.make_message("TEMPLATE", size, SENDER, peers.RECIPIENT).split(b"\r\n", 1)[1]
    body = body.replace(b"Subject: bench TEMPLATE", b"Subject: bench end to end")
    body = body.replace(b"<TEMPLATE@", b"<template@")
    return sign_dkim(body, "fabrikam.test", DKIM_SELECTOR, key_pem,
                     include_headers=["From", "To", "Subject", "Date", "Message-ID"]) + body


def p3(root: Path, mode: Mode, tls, dns: peers.DnsServer, certs, beside: list | None = None) -> Result:
    """`beside`: the harness's other processes still running during P3 (its DNS server): their CPU
    in the window is reported, as is the machine's (the load client, anything else, the steal)."""
    from mxgate.auth.dkim import generate_dkim_key
    from mxgate.server.gateway import ensure_arc_key

    root.mkdir(parents=True, exist_ok=True)
    accounting.spread_peers(root)  # the gateway and the mailbox are separate machines in production
    key_pem, key_txt = generate_dkim_key()
    dns.publish(f"{DKIM_SELECTOR}._domainkey.fabrikam.test", "TXT", key_txt)
    # Every bench address is loopback: without 127.0.0.0/8 in non_routable (the default has it),
    # the mailbox's walk finds the Internet sender 127.0.0.77 behind the gateway, as it would a
    # public address, and a full verification judges SPF and DMARC on it.
    from mxgate.config.node import NodeSettings

    routable = [n for n in NodeSettings().mailbox.non_routable if n != "127.0.0.0/8"]
    mailbox = MxgatePeer("mxgate-mailbox", root / "mailbox", dns=dns.address, policy=MAILBOX_POLICY,
                         cert=str(certs.server_cert), key=str(certs.server_key),
                         mailbox_toml=f"non_routable = {json.dumps(routable)}", workers=1)
    gw = GatewayPeer("mxgate-gateway", root / "gateway", dns=dns.address, policy=GATEWAY_POLICY,
                     cert=str(certs.server_cert), key=str(certs.server_key))
    gw.downstream_ca = str(certs.ca_cert)
    (gw.home / "keys").mkdir(parents=True, exist_ok=True)
    ensure_arc_key(gw.home / "keys", "mxgate-gw")
    dns.publish("mxgate-gw._domainkey.mxgate.test", "TXT", (gw.home / "keys" / "arc-mxgate-gw.txt").read_text())
    template = signed_template(key_pem, mode.size)
    try:
        mailbox.start()
        gw.downstream = f"127.0.0.1:{mailbox.port}"
        gw.start()
        # Warm-up outside the window, as P1 has: one-off costs of a fresh node (the public suffix
        # list, ~145 ms on the mailbox's first partner message; the relay's TLS sessions; the DNS
        # caches; lazy imports) are not per-message costs (issue 19, the P3 mailbox profile).
        warm = loadclient.run(loadclient.persistent_load(
            peers.GATEWAY, gw.port, sessions=mode.sessions, count=P3_WARMUP, size=mode.size, source=INTERNET,
            run_id="P3warm", sender=SENDER, rcpt=peers.RECIPIENT, tls=tls, deadline=mode.deadline,
            message=lambda seq: f"X-Bench-Seq: {seq}\r\n".encode() + template))
        accounting.wait_for_mail(mailbox.maildir_new(), "P3warm", len(warm.acked), mode.deadline)
        drain_end = time.monotonic() + 30
        while gw.queued() and time.monotonic() < drain_end:
            time.sleep(0.1)
        run_id = "P3e2e"
        g0, m0 = accounting.tree_cpu(gw.pid()), accounting.tree_cpu(mailbox.pid())
        beside_pids = [p.proc.pid for p in beside or () if p.proc]
        b0, (busy0, steal0), c0 = sum(map(accounting.tree_cpu, beside_pids)), accounting.machine_cpu(), time.process_time()
        gs0, ms0 = accounting.tree_cpu_split(gw.pid()), accounting.tree_cpu_split(mailbox.pid())
        t0 = time.perf_counter()
        with accounting.RssSampler(gw.pid()) as rss_gw, accounting.RssSampler(mailbox.pid()) as rss_mb:
            res = loadclient.run(loadclient.persistent_load(
                peers.GATEWAY, gw.port, sessions=mode.sessions, count=mode.p3_count, size=mode.size, source=INTERNET,
                run_id=run_id, sender=SENDER, rcpt=peers.RECIPIENT, tls=tls, deadline=mode.deadline,
                message=lambda seq: f"X-Bench-Seq: {seq}\r\n".encode() + template))
            found = accounting.wait_for_mail(mailbox.maildir_new(), run_id, len(res.acked), mode.deadline)
            done = time.perf_counter()
            drain_end = time.monotonic() + 30
            while gw.queued() and time.monotonic() < drain_end:
                time.sleep(0.1)
        cpu_gw, cpu_mb = accounting.tree_cpu(gw.pid()) - g0, accounting.tree_cpu(mailbox.pid()) - m0
        cpu_client, cpu_beside = time.process_time() - c0, sum(map(accounting.tree_cpu, beside_pids)) - b0
        busy1, steal1 = accounting.machine_cpu()
        gs1, ms1 = accounting.tree_cpu_split(gw.pid()), accounting.tree_cpu_split(mailbox.pid())
        cpu, per = cpu_gw + cpu_mb, max(1, len(res.acked))
        acct = accounting.account(res.acked, found)
        drained = gw.queued() == 0
        detail = {"drained": drained, "gateway_ack_rate": round(res.rate(), 1),
                  "rss_gateway_mb": round(rss_gw.peak / 2**20), "rss_mailbox_mb": round(rss_mb.peak / 2**20),
                  "quarantined_or_junk": _elsewhere(mailbox),
                  "cpu_gateway_us": round(cpu_gw / per * 1e6), "cpu_mailbox_us": round(cpu_mb / per * 1e6),
                  "gateway_processes": gw.processes,
                  # the rest of the machine in the same window: the load client (this process),
                  # the harness's DNS server, everything else, and the hypervisor's steal
                  "cpu_load_client_us": round(cpu_client / per * 1e6), "cpu_beside_us": round(cpu_beside / per * 1e6),
                  "cpu_other_us": round((busy1 - busy0 - (steal1 - steal0) - cpu_gw - cpu_mb - cpu_client - cpu_beside)
                                        / per * 1e6),
                  "steal_us": round((steal1 - steal0) / per * 1e6),
                  # user and system apart: a file system's per-file cost (ext4's recently-deleted
                  # inode search, bench/RESULTS.md session 5) moves system time from run to run
                  "cpu_gateway_user_us": round((gs1[0] - gs0[0]) / per * 1e6),
                  "cpu_mailbox_user_us": round((ms1[0] - ms0[0]) / per * 1e6),
                  "cpu_mailbox_sys_us": round((ms1[1] - ms0[1]) / per * 1e6)}
        ok = _judge(res, acct, detail) and drained and len(res.acked) == mode.p3_count
        return Result("P3", "mxgate gw→mbx", len(res.acked) / (done - t0), res.percentile(50) * 1e3,
                      res.percentile(99) * 1e3, (rss_gw.peak + rss_mb.peak) / 2**20, cpu / per * 1e6,
                      _p3_durability(gw), len(res.acked), 0, ok, detail)
    finally:
        gw.stop()
        mailbox.stop()


def _p3_durability(gw: "GatewayPeer") -> str:
    """What stood behind the gateway's 250: with cut-through (the default, `[gateway] cut_through`)
    the mailbox's group commit before the downstream's 250, for a message the gateway relayed at
    once; the gateway's own queue fsync for one it spooled (downstream trouble, no free slot)."""
    if "cut_through = false" in gw.extra_gateway:
        return "gateway queue fsync + mailbox group commit"
    return "mailbox group commit before the gateway's 250 (cut-through); gateway queue fsync otherwise"


def _elsewhere(mailbox: MxgatePeer) -> int:
    """Messages that went to Junk instead of the inbox would be 'lost' to the count: say so."""
    junk = mailbox.home / "maildir" / peers.RECIPIENT / ".Junk" / "new"
    return len(os.listdir(junk)) if junk.exists() else 0
