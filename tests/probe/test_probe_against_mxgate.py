"""Issue 7 must-show 1 against mxgate itself: `mxgate probe` from the attacker and the gateway
addresses, with --expect at each relevant stage, TLS details, and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from rig import ATTACKER, GATEWAY


def probe(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxgate", "probe", f"127.0.0.1:{port}", "--to", "alice@contoso.test",
                           "--from", "probe@fabrikam.test", *args], capture_output=True, text=True, timeout=60)


def test_probe_asserts_the_lockdown_of_a_running_mxgate(node_factory):
    n = node_factory()
    port = n.port()
    refused = probe(port, "--source-address", ATTACKER, "--expect", "reject:5.7.51@rcpt")
    assert refused.returncode == 0, refused.stdout
    assert "550 5.7.51 TenantInboundAttribution" in refused.stdout
    wrong = probe(port, "--source-address", ATTACKER, "--expect", "accept")
    assert wrong.returncode == 1
    accepted = probe(port, "--source-address", GATEWAY, "--starttls", "require", "--send", "--expect", "accept", "--json")
    assert accepted.returncode == 0, accepted.stdout
    data = json.loads(accepted.stdout)
    assert data["outcome"] == "accept" and data["tls"]["version"].startswith("TLSv1.")
    clear = probe(port, "--source-address", GATEWAY, "--starttls", "off", "--expect", "reject:530@mail")
    assert clear.returncode == 0, clear.stdout
    connect = node_factory(mailbox={"reject_stage": "connect"})
    at_connect = probe(connect.port(), "--source-address", ATTACKER, "--expect", "reject:554@connect")
    assert at_connect.returncode == 0, at_connect.stdout
