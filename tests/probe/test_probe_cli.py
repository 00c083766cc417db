"""`mxgate probe` / `mxgate mx` through typer's CliRunner: exit codes, text and JSON output."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from probekit import REFUSED_PEER, Script
from mxgate.cli.probe_cmds import register
from mxgate.probe.raw import ATTACKS


@pytest.fixture
def cli():
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))
    return invoke


def test_commands_registered():
    app = typer.Typer()
    register(app)
    assert {c.name for c in app.registered_commands} == {"probe", "mx"}


def test_accept_exits_zero_and_prints_transcript(cli, smtpd):
    srv = smtpd()
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--to", "b@contoso.test", "--timeout", "3")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(ln.split()[1:] == ["C:", "RCPT", "TO:<b@contoso.test>"] for ln in lines)
    assert float(lines[1].split()[0]) >= 0  # every transcript line starts with its time
    assert lines[-1] == "VERDICT: accept"
    assert "TLS:         none (clear text)" in r.output


@pytest.mark.parametrize("expect, code", [
    ("reject", 0), ("reject:550", 0), ("reject:5.7.51", 0), ("reject@rcpt", 0),
    ("reject:550@rcpt", 0), ("reject:5.7.51@rcpt", 0),
    ("accept", 1), ("reject@mail", 1), ("reject:554", 1), ("reject:5.7.1@rcpt", 1), ("tempfail", 1),
])
def test_expect_exit_codes_for_refused_source(cli, smtpd, expect, code):
    srv = smtpd()
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--source-address", REFUSED_PEER,
            "--expect", expect)
    assert r.exit_code == code, r.output
    assert ("PASS" if code == 0 else "FAIL") in r.output.splitlines()[-1]
    assert srv.handler.peers == [REFUSED_PEER]


def test_without_expect_refusal_exits_one(cli, smtpd):
    srv = smtpd()
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--source-address", REFUSED_PEER)
    assert r.exit_code == 1
    assert "VERDICT: reject:550@rcpt 5.7.51" in r.output


def test_greeting_refusal_expect_connect(cli, scripted):
    srv = scripted(Script(greeting=b"554 5.7.1 no service\r\n"))
    assert cli("probe", srv.target, "--expect", "reject:554@connect").exit_code == 0
    assert cli("probe", srv.target, "--to", "a@contoso.test", "--expect", "reject@rcpt").exit_code == 1


def test_expect_at_rcpt_without_a_recipient_is_a_usage_error(cli, smtpd):
    """Issue 20: without --to the probe stops after MAIL and can never see a RCPT reply; the
    admin is told why instead of getting a mismatch that looks like a server fault."""
    srv = smtpd()
    for expect in ("reject:5.7.51@rcpt", "reject@data"):
        r = cli("probe", srv.target, "--expect", expect)
        assert r.exit_code == 2, r.output
        assert "needs --to" in r.output and "never reaches" in r.output
    assert srv.handler.peers == []  # refused before connecting
    assert cli("probe", srv.target, "--expect", "accept").exit_code == 0


def test_send_accept_and_data_refusal(cli, smtpd, scripted):
    srv = smtpd()
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--send", "--subject", "cli test")
    assert r.exit_code == 0 and b"Subject: cli test" in srv.handler.messages[0][2]
    bad = scripted(Script(data_end=b"550 5.7.1 spam\r\n"))
    r = cli("probe", bad.target, "--to", "a@x.test", "--send", "--expect", "reject:550@data")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args", [
    ["--expect", "maybe"], ["--expect", "reject:451"], ["--starttls", "sometimes"],
    ["--client-key", "k.pem"], ["--raw", "no-such-attack"], ["--raw", "pregreet", "--expect", "accept"],
    ["--proxy-version", "3"],
])
def test_usage_errors_exit_two(cli, args):
    r = cli("probe", "127.0.0.1:1", *args)
    assert r.exit_code == 2, r.output


def test_bad_target_exits_two(cli):
    assert cli("probe", "mx.test:notaport").exit_code == 2


def test_json_shape(cli, smtpd, pki):
    srv = smtpd(tls=pki.server_context())
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--ca", pki.ca_file, "--starttls", "require",
            "--json", "--expect", "accept")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["schema"] == 1 and doc["outcome"] == "accept" and doc["stage"] == "done"
    assert doc["code"] == 250 and doc["accepted_rcpts"] == ["a@contoso.test"] and doc["refused_rcpts"] == []
    assert doc["tls"]["verified"] is True and "127.0.0.1" in doc["tls"]["sans"]
    assert {"version", "cipher", "subject", "issuer", "not_after", "sha256"} <= set(doc["tls"])
    assert doc["expect"] == {"expression": "accept", "matched": True, "explanation": "as expected: accept"}
    t = doc["transcript"]
    assert all(set(x) == {"t", "dir", "text"} and x["dir"] in "CS*" for x in t)
    assert [x["text"] for x in t if x["dir"] == "C"].count("EHLO mxgate-probe.invalid") == 2


def test_json_refusal_lists_refused_rcpts(cli, smtpd):
    srv = smtpd()
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--source-address", REFUSED_PEER, "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["tls"] is None and "expect" not in doc
    assert doc["refused_rcpts"] == [{"address": "a@contoso.test", "code": 550, "enhanced": "5.7.51",
                                     "reply": "5.7.51 TenantInboundAttribution; Rejecting"}]


def test_wrong_ca_is_error_at_starttls(cli, smtpd, pki):
    srv = smtpd(tls=pki.server_context())
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--ca", pki.wrong_ca_file)
    assert r.exit_code == 1 and "VERDICT: error@starttls" in r.output
    assert cli("probe", srv.target, "--ca", pki.wrong_ca_file, "--expect", "accept").exit_code == 1


def test_client_cert_option(cli, smtpd, pki):
    srv = smtpd(tls=pki.server_context(require_client_cert=True))
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--ca", pki.ca_file, "--client-cert", pki.client_pem)
    assert r.exit_code == 0, r.output
    assert len(srv.handler.client_certs) == 1


def test_ipv6_target(cli, smtpd):
    srv = smtpd(host="::1")
    r = cli("probe", srv.target, "--to", "a@contoso.test", "--expect", "accept")
    assert r.exit_code == 0 and "connected from [::1]:" in r.output


def test_proxy_source_option(cli, scripted):
    script = Script(read_proxy=True)
    srv = scripted(script)
    r = cli("probe", srv.target, "--to", "a@x.test", "--proxy-source", "203.0.113.5:1234")
    assert r.exit_code == 0
    assert script.proxy_header == f"PROXY TCP4 203.0.113.5 127.0.0.1 1234 {srv.port}\r\n".encode()
    assert "C: PROXY TCP4 203.0.113.5" in r.output


def test_raw_attack_and_raw_file(cli, scripted, tmp_path):
    script = Script()
    srv = scripted(script)
    r = cli("probe", srv.target, "--raw", "starttls-inject", "--timeout", "2")
    assert r.exit_code == 0, r.output
    assert b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n" not in script.received  # line-split by server
    assert script.received[1:3] == [b"STARTTLS\r\n", b"MAIL FROM:<evil@x>\r\n"]
    assert "RAW: replies per step: 220 |" in r.output
    f = tmp_path / "steps.txt"
    f.write_text("EHLO x\\r\\n\nQUIT\\r\\n\n")
    r = cli("probe", srv.target, "--raw-file", str(f), "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 0 and doc["mode"] == "raw" and doc["replies"][0] == [220]
    assert doc["replies"][2] == [221] and doc["closed_by_server"] is True


def test_raw_connect_failure_exits_one(cli):
    assert cli("probe", "127.0.0.1:1", "--raw", "http-get", "--timeout", "1").exit_code == 1
    assert "smuggle-lf" in ATTACKS and len([a for a in ATTACKS if a.startswith("smuggle-")]) == 9


def test_mx_text_and_json(cli, dns_server):
    dns = f"127.0.0.1:{dns_server.port}"
    r = cli("mx", "example.test", "--dns", dns)
    assert r.exit_code == 0, r.output
    rows = [ln.split() for ln in r.output.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["10", "mx1.example.test"], ["10", "mxb.example.test"],
                                          ["20", "mx2.example.test"]]
    assert rows[0][2:] == ["192.0.2.1,", "2001:db8::1"]
    doc = json.loads(cli("mx", "implicit.test", "--dns", dns, "--json").output)
    assert doc["implicit"] is True and doc["hosts"][0]["addresses"] == ["192.0.2.9"]


def test_mx_failures_exit_one(cli, dns_server):
    dns = f"127.0.0.1:{dns_server.port}"
    r = cli("mx", "missing.test", "--dns", dns)
    assert r.exit_code == 1 and "NXDOMAIN" in r.output
    r = cli("mx", "null.test", "--dns", dns)
    assert r.exit_code == 1 and "null MX" in r.output
    assert cli("mx", "example.test", "--dns", "127.0.0.1:99999").exit_code == 2
