"""Issue 10, must-show 4: Debian's HAProxy with `send-proxy-v2` in front of two gateway nodes on one
PostgreSQL store. The gateways' attribution (trace, Received) and checks (a DNSBL listing the
client) see the real client address, not HAProxy's; a PROXY header from an address that is not
in `trusted_proxies` is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

import rig
from rig import GATEWAY, GATEWAY2, INTERNET, PARTNER, RawSMTP, free_port, maildir_messages, send_message, simple_message, wait_until
from mxgate.smtp.replies import REPLIES

HAPROXY_SOURCE = "127.0.0.5"  # the address HAProxy connects to the gateways from
DNSBL_POLICY = rig.GUIDE_POLICY + '\n[gateway.dnsbl]\nzones = ["zen.example.test"]\n'
HAPROXY_CFG = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend mx
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance roundrobin
    source {source}
    server gw-a {a} send-proxy-v2
    server gw-b {b} send-proxy-v2
"""


@pytest.fixture
def haproxy(tmp_path):
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        raise RuntimeError("haproxy not installed: run scripts/install-system-deps.sh (Debian package 'haproxy')")
    procs = []

    def start(a: str, b: str) -> int:
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, source=HAPROXY_SOURCE, a=a, b=b))
        check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(tmp_path / "haproxy.log", "wb")
        procs.append(subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT))
        rig.wait_port("127.0.0.1", port, proc=procs[-1], log=tmp_path / "haproxy.log")
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.fixture
def cluster(node_factory, pg_url, monkeypatch, dns):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    dns_settings = {"servers": [dns.address], "timeout": 1.0}
    mailbox = node_factory(DNSBL_POLICY, node={"name": "mbx"}, dns=dns_settings)
    gateways = []
    for name, host in (("gw-a", GATEWAY), ("gw-b", GATEWAY2)):
        gateways.append(node_factory(None, node={"name": name}, roles={"mailbox": False, "gateway": True}, dns=dns_settings,
                                     gateway={"listen": [f"{host}:{free_port(host)}"], "queue": "database",
                                              "trusted_proxies": [HAPROXY_SOURCE], "hostname": f"{name}.contoso.test",
                                              "downstream": [f"127.0.0.1:{mailbox.port()}"], "source_address": GATEWAY,
                                              "downstream_ca": str(mailbox.node.certs.ca_cert), "queue_scan_interval": 0.1}))
    return mailbox, gateways


def _send(port: int, source: str, subject: str) -> dict:
    return send_message("127.0.0.1", port, source=source, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                        data=simple_message(subject=subject))


def test_haproxy_send_proxy_v2_real_client_address(cluster, haproxy, dns):
    mailbox, (gw_a, gw_b) = cluster
    dns.add("77.0.0.127.zen.example.test", "A", "127.0.0.2")  # the Internet client is listed; HAProxy is not
    port = haproxy(gw_a.node.listeners["gateway"].addresses[0], gw_b.node.listeners["gateway"].addresses[0])

    for i in range(4):  # round robin: two through each gateway
        assert _send(port, PARTNER, f"via-lb-{i}")["end"][0] == 250
    for i in range(2):
        assert _send(port, INTERNET, f"listed-{i}")["end"] == (554, str(REPLIES["dnsbl"]))

    assert wait_until(lambda: len(maildir_messages(mailbox.home, "alice@contoso.test")) == 4, timeout=15)
    for m in maildir_messages(mailbox.home, "alice@contoso.test"):
        assert f"[{PARTNER}]".encode() in m and HAPROXY_SOURCE.encode() not in m  # Received names the client
    for g in (gw_a, gw_b):
        g.trace.flush()
    rows = gw_a.trace.search(since=time.time() - 120)  # one shared trace for both gateways
    accepted = [r for r in rows if r["role"] == "gateway" and r["status"] != "Rejected"]
    refused = [r for r in rows if r["role"] == "gateway" and r["status"] == "Rejected"]
    assert {r["from_ip"] for r in accepted} == {PARTNER} and len(accepted) == 4
    assert {r["from_ip"] for r in refused} == {INTERNET} and {r["reason"] for r in refused} == {"dnsbl"}
    assert {r["node"] for r in accepted} == {"gw-a", "gw-b"} and {r["node"] for r in refused} == {"gw-a", "gw-b"}
    assert not any(HAPROXY_SOURCE in (r["from_ip"], r["original_ip"]) for r in rows)


def test_proxy_header_from_untrusted_address_is_refused(cluster):
    _, (gw_a, _) = cluster
    with RawSMTP(GATEWAY, gw_a.port("gateway"), INTERNET) as c:  # straight to the gateway, not via HAProxy
        assert c.greeting()[0] == 220
        assert c.cmd(f"PROXY TCP4 {PARTNER} {GATEWAY} 40000 25")[0] == 500
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11, 0, 12]) + bytes([127, 0, 0, 20, 127, 0, 0, 10])
          + (40000).to_bytes(2, "big") + (25).to_bytes(2, "big"))
    with RawSMTP(GATEWAY, gw_a.port("gateway"), INTERNET) as c:
        assert c.greeting()[0] == 220
        c.send(v2 + b"MAIL FROM:<s@fabrikam.test>\r\n")
        code, _ = c.read_reply()
        assert code >= 500  # binary garbage is not a command, and never an address to believe
