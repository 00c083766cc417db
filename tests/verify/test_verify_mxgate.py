"""Issue 7, must-show 2: `mxgate verify` passes against a locked-down mxgate mailbox server and
fails, naming the row, when the connector is deliberately left open."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import rig
from rig import ATTACKER, GATEWAY

from mxgate.policy.document import load_toml
from mxgate.probe.verify import Target, VerifySettings, failed, plan_matrix, render_table, run_matrix

IPV6_POLICY = rig.GUIDE_POLICY.replace('sender_ip_addresses = ["127.0.0.10"]', 'sender_ip_addresses = ["127.0.0.10", "::1"]')
OPEN_POLICY = rig.GUIDE_POLICY.replace("restrict_domains_to_ip_addresses = true", "restrict_domains_to_ip_addresses = false")

CERT_POLICY = rig.GUIDE_POLICY + """
[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["partner.test"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
"""


def ports(n) -> tuple[Target, Target]:
    v4, v6 = n.node.listeners["mailbox"].addresses[:2]
    return Target("127.0.0.1", int(v4.rsplit(":", 1)[1])), Target("::1", int(v6.rsplit(":", 1)[1]))


def cli(home, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(rig.REPO / "src")}
    return subprocess.run([sys.executable, "-m", "mxgate", "--home", str(home.root), "verify", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def by_name(results):
    return {r.row.name: r for r in results}


def test_locked_down_server_passes_every_row(node_factory):
    n = node_factory(IPV6_POLICY)
    v4, v6 = ports(n)
    proc = cli(n.home, "--target", f"127.0.0.1:{v4.port}", "--target6", f"[::1]:{v6.port}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "5 passed, 0 failed, 1 skipped: PASS"
    table = "\n".join(lines)
    assert "PASS    bypass 'Third-party filter service' from 127.0.0.66" in table
    assert "refused: reject:550@rcpt 5.7.51" in table
    assert "PASS    gateway 'Third-party filter service' from 127.0.0.10 " in table
    assert "PASS    clear text 'Third-party filter service' from 127.0.0.10" in table and "530@mail" in table
    # IPv6 parity: ::1 is listed, so the v6 gateway row runs and the v6 bypass cannot be tried from ::1.
    assert "PASS    gateway 'Third-party filter service' from ::1 (IPv6)" in table
    assert "SKIP    bypass 'Third-party filter service' from ::1 (IPv6)" in table


def test_ipv6_bypass_is_refused_when_the_connector_lists_only_ipv4(node_factory):
    n = node_factory()
    v4, v6 = ports(n)
    results = asyncio.run(run_matrix(plan_matrix(load_toml(rig.GUIDE_POLICY), VerifySettings(v4, v6))))
    rows = by_name(results)
    row = rows["bypass 'Third-party filter service' from ::1 (IPv6)"]
    assert row.status == "pass" and row.result.code == 550 and row.result.enhanced == "5.7.51"
    assert not failed(results)
    # The accepted row stopped after RCPT: nothing was delivered without --send.
    assert rig.maildir_messages(n.home, "alice@contoso.test") == []


def test_send_delivers_on_the_gateway_rows_only(node_factory):
    n = node_factory()
    v4, _ = ports(n)
    results = asyncio.run(run_matrix(plan_matrix(load_toml(rig.GUIDE_POLICY), VerifySettings(v4, send=True))))
    assert not failed(results), render_table(results)
    assert len(rig.maildir_messages(n.home, "alice@contoso.test")) == 1


def test_connector_left_open_fails_naming_the_row(node_factory):
    n = node_factory(OPEN_POLICY)
    v4, _ = ports(n)
    proc = cli(n.home, "--target", f"127.0.0.1:{v4.port}", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False
    [bad] = [r for r in data["rows"] if r["status"] == "fail"]
    assert bad["name"] == "bypass 'Third-party filter service' from 127.0.0.66"
    assert bad["got"] == "accept" and bad["source"] == ATTACKER
    assert "does not restrict its domains" in bad["detail"]
    assert {r["name"]: r["status"] for r in data["rows"]}["gateway 'Third-party filter service' from 127.0.0.10"] == "pass"
    text = cli(n.home, "--target", f"127.0.0.1:{v4.port}")
    assert text.returncode == 1
    assert "FAIL    bypass 'Third-party filter service' from 127.0.0.66" in text.stdout
    assert text.stdout.splitlines()[-1].endswith(": FAIL")


def test_tls_not_enforced_fails_the_clear_text_row(node_factory):
    # Verify reads the policy that should be in force; the server runs an older, laxer one.
    n = node_factory(rig.GUIDE_POLICY.replace("require_tls = true", "require_tls = false"))
    v4, _ = ports(n)
    rows = by_name(asyncio.run(run_matrix(plan_matrix(load_toml(rig.GUIDE_POLICY), VerifySettings(v4)))))
    row = rows[f"clear text 'Third-party filter service' from {GATEWAY}"]
    assert row.status == "fail" and row.got == "accept" and "requires TLS" in row.detail


def test_certificate_connector_rows(node_factory, test_ca):
    n = node_factory(CERT_POLICY, mailbox={"tls_cert": test_ca["server_cert"], "tls_key": test_ca["server_key"],
                                           "client_ca": test_ca["ca"]})
    v4, _ = ports(n)
    d = test_ca["dir"]
    settings = VerifySettings(v4, ca_file=test_ca["ca"], tls_servername="localhost",
                              client_cert=str(d / "gateway.partner.test.pem"), client_key=str(d / "gateway.partner.test.key"),
                              wrong_cert=str(d / "evil.example.pem"), wrong_key=str(d / "evil.example.key"))
    results = asyncio.run(run_matrix(plan_matrix(load_toml(CERT_POLICY), settings)))
    rows = by_name(results)
    assert not failed(results), render_table(results)
    assert rows[f"no certificate 'Partner by certificate' from {ATTACKER}"].result.enhanced == "5.7.51"
    assert rows[f"wrong certificate 'Partner by certificate' from {ATTACKER}"].status == "pass"
    # A certificate from another CA: refused in the handshake, which counts as refused.
    other = replace_cert(settings, d / "gateway.partner.test-other.pem", d / "gateway.partner.test-other.key")
    rows = by_name(asyncio.run(run_matrix(plan_matrix(load_toml(CERT_POLICY), other))))
    assert rows[f"wrong certificate 'Partner by certificate' from {ATTACKER}"].status == "pass"


def replace_cert(settings, cert, key):
    import dataclasses

    return dataclasses.replace(settings, wrong_cert=str(cert), wrong_key=str(key))


DISABLED_POLICY = rig.GUIDE_POLICY + "enabled = false\n"
# The organisation's own relays own 127.0.0.0/24, which holds the usual attacker address 127.0.0.66.
OWN_RELAYS_POLICY = rig.GUIDE_POLICY + """
[[inbound_connector]]
name = "Own relays"
type = "on_premises"
sender_ip_addresses = ["127.0.0.0/24"]
require_tls = false
"""


def test_a_disabled_lockdown_is_a_fail_row_not_an_empty_matrix(node_factory):
    """Issue 20: a disabled connector's domains are probed too; nothing refuses, so the row fails."""
    n = node_factory(DISABLED_POLICY)
    v4, v6 = ports(n)
    proc = cli(n.home, "--target", f"127.0.0.1:{v4.port}", "--target6", f"[::1]:{v6.port}", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["rows"]}
    row = rows["bypass 'Third-party filter service' (disabled) from 127.0.0.66"]
    assert row["status"] == "fail" and row["got"] == "accept" and "is disabled" in row["detail"]
    assert rows["bypass 'Third-party filter service' (disabled) from ::1 (IPv6)"]["status"] == "fail"
    assert not any(name.startswith("gateway ") for name in rows)  # nothing to admit while disabled
    # Another enabled connector that still refuses the bypass makes the same row pass.
    both = DISABLED_POLICY + """
[[inbound_connector]]
name = "New gateway"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.10"]
restrict_domains_to_ip_addresses = true
"""
    n2 = node_factory(both)
    results = asyncio.run(run_matrix(plan_matrix(load_toml(both), VerifySettings(ports(n2)[0]))))
    assert by_name(results)["bypass 'Third-party filter service' (disabled) from 127.0.0.66"].status == "pass"
    assert not failed(results), render_table(results)


def test_attacker_is_chosen_outside_every_connector(node_factory):
    """Issue 20: with 127.0.0.66 inside the organisation's own relay range, the verifier picks an
    address no connector lists instead of reporting a false FAIL (or skipping the row)."""
    n = node_factory(OWN_RELAYS_POLICY)
    v4, _ = ports(n)
    proc = cli(n.home, "--target", f"127.0.0.1:{v4.port}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS    bypass 'Third-party filter service' from 127.0.66.66" in proc.stdout
    assert "127.0.0.66" not in proc.stdout
    # An attacker the admin names inside a connector is not used: the row says why.
    named = cli(n.home, "--target", f"127.0.0.1:{v4.port}", "--attacker", "127.0.0.66")
    assert "SKIP    bypass 'Third-party filter service' from 127.0.0.66" in named.stdout
    assert "listed by connector 'Own relays'" in named.stdout
