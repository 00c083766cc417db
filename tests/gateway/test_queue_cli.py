"""`mxgate queue list|show|retry|delete|flush --json` against a running gateway and a stopped one,
and `mxgate gateway arc-dns`."""

from __future__ import annotations

import json
import subprocess
import sys

from gwkit import gw_port, spool_count
from rig import INTERNET, free_port, send_message, simple_message, wait_until


def mx(home, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxgate", "--home", str(home.root), *args],
                          capture_output=True, text=True, timeout=60)


def test_queue_commands_on_a_running_gateway(make_gateway, test_ca):
    gw = make_gateway(downstream=[f"127.0.0.1:{free_port()}"], downstream_ca=test_ca["ca"],
                      retry_first=3600.0, retry_max_backoff=3600.0)
    for i in range(2):
        send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(subject=f"cli {i}"))
    assert wait_until(lambda: sum(e.attempts for e in gw.node.roles["gateway"].sv.spool.list()) == 2, timeout=5)
    listed = json.loads(mx(gw.home, "queue", "list", "--json").stdout)
    assert [e["queue"] for e in listed] == ["deferred", "deferred"]
    assert listed[0]["recipients"][0]["state"] == "pending" and "could not deliver" in listed[0]["recipients"][0]["error"]
    assert "ConnectionRefusedError" in listed[0]["last_error"]
    shown = json.loads(mx(gw.home, "queue", "show", listed[0]["id"], "--json").stdout)
    assert "Subject: cli 0" in shown["headers"] and "ARC-Seal" in shown["headers"]
    r = mx(gw.home, "queue", "delete", listed[0]["id"], "--json")
    assert json.loads(r.stdout)["state"] == "applied", r.stderr
    assert spool_count(gw) == 1
    before = gw.node.roles["gateway"].sv.spool.list()[0].attempts
    assert json.loads(mx(gw.home, "queue", "flush", "--json").stdout)["state"] == "applied"
    assert wait_until(lambda: gw.node.roles["gateway"].sv.spool.list()[0].attempts == before + 1, timeout=5)
    assert mx(gw.home, "queue", "show", "00000000000000000000").returncode == 1


def test_queue_commands_without_a_gateway_and_arc_dns(make_gateway, test_ca):
    gw = make_gateway(downstream=[f"127.0.0.1:{free_port()}"], downstream_ca=test_ca["ca"],
                      retry_first=3600.0, retry_max_backoff=3600.0)
    send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                 rcpts=["alice@contoso.test"], data=simple_message())
    assert wait_until(lambda: spool_count(gw) == 1)
    gw.stop()
    [entry] = json.loads(mx(gw.home, "queue", "list", "--json").stdout)
    r = mx(gw.home, "queue", "retry", entry["id"], "--json")
    assert json.loads(r.stdout)["state"] == "applied (gateway not running)", r.stderr
    [after] = json.loads(mx(gw.home, "queue", "list", "--json").stdout)
    assert after["attempts"] == entry["attempts"] + 1
    assert json.loads(mx(gw.home, "queue", "delete", entry["id"], "--json").stdout)["action"] == "delete"
    assert json.loads(mx(gw.home, "queue", "list", "--json").stdout) == []
    dns_line = mx(gw.home, "gateway", "arc-dns").stdout
    assert dns_line.startswith("mxgate-gw._domainkey.mxgate.test. IN TXT (") and "v=DKIM1; k=rsa; p=" in dns_line
