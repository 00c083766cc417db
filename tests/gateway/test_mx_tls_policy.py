"""Issue 18: MTA-STS (RFC 8461) and DANE (RFC 7672) applied to delivery by MX, end to end.

A real gateway node relays its organisation's outbound mail (`outbound_from`) by MX, asking the
loopback DNS server (MX, A, `_mta-sts` TXT, TLSA with the AD bit the server sets on request);
the policy comes from a loopback HTTPS server whose certificate the node's CA issued; the
receiving MX is a RecordingSink on <loopback>:25, with or without STARTTLS, with the right or
the wrong certificate. What must happen: delivered, or deferred with 4.7.5 and retried, as the
policy says — and each session lands in the TLS-RPT log (RFC 8460) under the policy applied.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import ssl
import threading
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gwkit import FAST_QUEUE, gateway_policy, gw_port, publish_arc_key
from rig import GATEWAY, MxSink, free_port, send_message, simple_message, wait_until

from mxgate.queue.dane import Tlsa, record_for
from mxgate.queue.tlsrpt import TlsReports, build_report
from mxgate.server.tls import issue_certificate

ORG = "127.0.0.5"  # the organisation's mailbox server, trusted by `outbound_from`
DOMAIN = "fabrikam.test"
MX = "mx.fabrikam.test"


class _Policy(http.server.BaseHTTPRequestHandler):
    body = ""

    def do_GET(self):  # noqa: N802
        data = self.body.encode()
        self.send_response(200 if self.path == "/.well-known/mta-sts.txt" else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class World:
    """The gateway, its CA, the DNS and the policy web server; `mx(...)` starts a receiving MX."""

    def __init__(self, gw, dns, tmp_path, https_port):
        self.gw, self.dns, self.tmp = gw, dns, tmp_path
        certs = gw.node.certs
        self.ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
        self.ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
        self.sinks = []
        cert, key = self.issue("mta-sts." + DOMAIN)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.handler = type("H", (_Policy,), {})
        self.httpd = http.server.HTTPServer(("127.0.0.1", https_port), self.handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def issue(self, name: str, chain: bool = False) -> tuple[str, str]:
        cert, key = issue_certificate(self.ca, self.ca_key, name, server=True)
        if chain:  # DANE-TA: the server presents its issuer too (RFC 7672 §3.1.2)
            cert += self.ca.public_bytes(serialization.Encoding.PEM)
        c, k = self.tmp / f"{name}-{len(self.sinks)}.pem", self.tmp / f"{name}-{len(self.sinks)}.key"
        c.write_bytes(cert)
        k.write_bytes(key)
        return str(c), str(k)

    def mx(self, cert_name: str = MX, *, starttls: bool = True, mx_name: str = MX, cert=None):
        cert, key = cert or self.issue(cert_name)
        sink = MxSink(cert, key, name=mx_name)
        sink.offer_starttls = starttls
        self.sinks.append(sink)
        self.dns.add(DOMAIN, "MX", (10, mx_name))
        self.dns.add(mx_name, "A", sink.host)
        return sink

    def sts(self, mode: str, mx: str = MX) -> None:
        self.handler.body = f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"
        self.dns.add("mta-sts." + DOMAIN, "A", "127.0.0.1")
        self.dns.add("_mta-sts." + DOMAIN, "TXT", "v=STSv1; id=1;")

    def send(self, subject: str) -> None:
        r = send_message(GATEWAY, gw_port(self.gw), source=ORG, sender="alice@contoso.test", rcpts=[f"bob@{DOMAIN}"],
                         data=simple_message(subject=subject, sender="alice@contoso.test", to=f"bob@{DOMAIN}"))
        assert r["end"][0] == 250

    def entries(self):
        return self.gw.node.roles["gateway"].sv.outbound.queue.spool.list()

    def deferred_with(self, status: str) -> bool:
        return any(e.attempts >= 1 and [r.status for r in e.recipients] == [status] for e in self.entries())

    def report(self) -> dict:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        results = TlsReports(self.gw.home.spool / "tls-rpt").results(DOMAIN, day)
        r = build_report(results, domain=DOMAIN, day=day, organization="Contoso", contact="tls@contoso.test", report_id="t")
        return {p["policy"]["policy-type"]: p for p in r["policies"]}

    def close(self):
        self.httpd.shutdown()
        for s in self.sinks:
            s.close()


@pytest.fixture
def world(node_factory, dns, tmp_path):
    https_port = free_port("127.0.0.1")
    settings = {"listen": [f"{GATEWAY}:{free_port(GATEWAY)}"], "downstream": ["127.0.0.1:9"], "source_address": GATEWAY,
                "hostname": "gw.contoso.test", "outbound_from": [f"{ORG}/32"], **FAST_QUEUE}
    gw = node_factory(gateway_policy(), roles={"mailbox": False, "gateway": True}, gateway=settings,
                      dns={"servers": [dns.address], "timeout": 2.0},
                      outbound={"mta_sts_port": https_port, "dane": True})
    publish_arc_key(dns, gw)
    w = World(gw, dns, tmp_path, https_port)
    yield w
    w.close()


def test_enforce_delivers_over_verified_tls_and_reports_the_success(world):
    world.sts("enforce")
    mx = world.mx()
    world.send("sts ok")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert mx.messages[0]["tls"] and mx.messages[0]["rcpts"] == [f"bob@{DOMAIN}"]
    sts = world.report()["sts"]
    assert sts["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
    assert sts["policy"]["policy-string"] == ["version: STSv1", "mode: enforce", f"mx: {MX}", "max_age: 86400"]


def test_enforce_defers_a_host_without_starttls(world):
    world.sts("enforce")
    mx = world.mx(starttls=False)
    world.send("no starttls")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=15)
    assert mx.messages == []
    [detail] = world.report()["sts"]["failure-details"][:1]
    assert detail["result-type"] == "starttls-not-supported" and detail["receiving-mx-hostname"] == MX


def test_enforce_defers_a_certificate_for_another_name(world):
    world.sts("enforce")
    mx = world.mx(cert_name="other.example.test")
    world.send("wrong name")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=15)
    assert mx.messages == []
    assert world.report()["sts"]["summary"]["total-failure-session-count"] >= 1


def test_enforce_never_connects_to_an_mx_outside_the_policy(world):
    world.sts("enforce", mx="*.elsewhere.test")
    mx = world.mx()
    world.send("not listed")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=15)
    assert mx.peers == []  # RFC 8461 §5.1: not even a connection


def test_without_a_policy_a_wrong_certificate_is_opportunistic_tls(world):
    mx = world.mx(cert_name="other.example.test")
    world.send("no policy")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert world.report()["no-policy-found"]["summary"]["total-successful-session-count"] == 1


def test_testing_mode_delivers_and_records_the_failure(world):
    world.sts("testing")
    mx = world.mx(cert_name="other.example.test")
    world.send("testing")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert mx.messages[0]["tls"]
    sts = world.report()["sts"]
    assert sts["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    assert sts["failure-details"][0]["receiving-mx-hostname"] == MX
    # The operator's command prints the same counts (RFC 8460 §4.4 JSON) after real deliveries.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = subprocess.run([sys.executable, "-m", "mxgate", "tls-rpt", "report", "--domain", DOMAIN, "--day", day,
                          "--org", "Contoso"], capture_output=True, text=True,
                         env=dict(os.environ, MXGATE_HOME=str(world.gw.home.root)))
    assert out.returncode == 0, out.stderr
    [policy] = json.loads(out.stdout)["policies"]
    assert policy["policy"]["policy-type"] == "sts" and policy["summary"]["total-failure-session-count"] == 1
    assert policy["policy"]["policy-string"][1] == "mode: testing"


def _untrusted_cert(tmp_path, name=MX):
    """A certificate from a CA the node does not trust: only DANE can vouch for it."""
    ca = trustme.CA()
    leaf = ca.issue_cert(name)
    c, k = tmp_path / "dane.pem", tmp_path / "dane.key"
    leaf.cert_chain_pems[0].write_to_path(str(c))
    leaf.private_key_pem.write_to_path(str(k))
    return str(c), str(k), ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def _tlsa(dns, t) -> None:
    dns.add(f"_25._tcp.{MX}", "TLSA", f"{t.usage} {t.selector} {t.mtype} {t.data.hex()}")


def test_dane_ee_takes_precedence_over_mta_sts(world, tmp_path, dns):
    """A certificate no CA vouches for, pinned by an authenticated TLSA record: delivered,
    although MTA-STS enforce alone would refuse it (RFC 8461 §2: DANE wins)."""
    world.sts("enforce")
    cert, key, der = _untrusted_cert(tmp_path)
    mx = world.mx(cert=(cert, key))
    _tlsa(dns, record_for(der, 3, 1, 1))
    dns.authentic = True
    world.send("dane ee")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    tlsa = world.report()["tlsa"]
    assert tlsa["summary"]["total-successful-session-count"] == 1
    assert tlsa["policy"]["policy-string"] == [f"3 1 1 {record_for(der).data.hex()}"]


def test_dane_mismatch_defers_and_reports_tlsa_invalid(world, tmp_path, dns):
    cert, key, der = _untrusted_cert(tmp_path)
    mx = world.mx(cert=(cert, key))
    _tlsa(dns, Tlsa(3, 1, 1, b"\x00" * 32))
    dns.authentic = True
    world.send("dane mismatch")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=15)
    assert mx.messages == []
    assert world.report()["tlsa"]["failure-details"][0]["result-type"] == "tlsa-invalid"


def test_tlsa_without_the_ad_bit_is_ignored(world, tmp_path, dns):
    """RFC 7672 §2.2: an unauthenticated TLSA answer is as if there were none (here: opportunistic)."""
    cert, key, der = _untrusted_cert(tmp_path)
    mx = world.mx(cert=(cert, key))
    _tlsa(dns, Tlsa(3, 1, 1, b"\x00" * 32))  # would fail if it counted
    world.send("insecure tlsa")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert "tlsa" not in world.report()


def test_an_unsigned_zone_that_never_answers_tlsa_still_gets_mail(world, dns):
    """RFC 7672 §2.2.2: the MX host's address records are insecure (no AD), so DANE does not
    apply and no TLSA query is made; its servers' silence on TLSA cannot defer the mail."""
    mx = world.mx()
    dns.authentic = True
    dns.insecure = frozenset({MX})
    dns.silence(f"_25._tcp.{MX}", "TLSA")
    world.send("unsigned, tlsa silent")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert "tlsa" not in world.report()


def test_a_signed_host_whose_tlsa_lookup_fails_gets_no_mail(world, dns):
    """RFC 7672 §2.2: secure address records and a failed TLSA lookup — the host is not used."""
    mx = world.mx()
    dns.authentic = True
    dns.silence(f"_25._tcp.{MX}", "TLSA")
    world.send("signed, tlsa silent")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=20)
    assert mx.messages == []


def _anchor(world, dns) -> None:
    _tlsa(dns, record_for(world.ca.public_bytes(serialization.Encoding.DER), 2, 1, 1))
    dns.authentic = True


def test_dane_ta_with_the_anchor_in_the_chain_delivers(world, dns):
    _anchor(world, dns)
    mx = world.mx(cert=world.issue(MX, chain=True))
    world.send("dane ta")
    assert wait_until(lambda: mx.messages and not world.entries(), timeout=15)
    assert world.report()["tlsa"]["summary"]["total-successful-session-count"] == 1


def test_dane_ta_needs_the_mx_name_in_the_certificate(world, dns):
    _anchor(world, dns)
    mx = world.mx(cert=world.issue("other.example.test", chain=True))  # right anchor, wrong name
    world.send("dane ta wrong name")
    assert wait_until(lambda: world.deferred_with("4.7.5"), timeout=15)
    assert mx.messages == []
