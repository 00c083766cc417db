"""Issue 3, must-show 2: a certificate connector (RestrictDomainsToCertificate) with SPKI pins.

Right certificate accepted; no certificate, wrong name, another CA, expired, wrong pin refused;
two pins both accepted (renewal overlap)."""

from __future__ import annotations

import pytest

from rig import PARTNER, maildir_messages, send_message, simple_message, wait_until
from mxgate.server.tls import spki_sha256_of_file

POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[mailbox]]
address = "alice@contoso.test"

[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["*"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
tls_sender_certificate_fingerprints = [{pins}]
require_tls = true
"""


@pytest.fixture
def cert_node(node_factory, test_ca):
    def make(pins: list[str]):
        policy = POLICY.format(pins=", ".join(f'"{p}"' for p in pins))
        return node_factory(policy, mailbox={"client_ca": test_ca["ca"], "tls_cert": test_ca["server_cert"],
                                             "tls_key": test_ca["server_key"]})
    return make


def _send(node, test_ca, stem: str | None):
    cert, key = test_ca[stem] if stem else (None, None)
    try:
        return send_message("127.0.0.1", node.port(), source=PARTNER, sender="x@partner.test",
                            rcpts=["alice@contoso.test"], data=simple_message(), ca=test_ca["ca"], cert=cert, key=key)
    except (ConnectionError, OSError) as exc:  # the handshake refused the certificate
        return {"handshake_error": repr(exc)}


def _pin(test_ca, stem):
    return spki_sha256_of_file(test_ca[stem][0])


def test_right_certificate_and_pin_accepted(cert_node, test_ca):
    n = cert_node([_pin(test_ca, "gateway.partner.test")])
    r = _send(n, test_ca, "gateway.partner.test")
    assert r["end"][0] == 250, r
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1


def test_two_pins_both_accepted_for_renewal_overlap(cert_node, test_ca):
    n = cert_node([_pin(test_ca, "gateway.partner.test"), _pin(test_ca, "gateway.partner.test-renewed")])
    for stem in ("gateway.partner.test", "gateway.partner.test-renewed"):
        assert _send(n, test_ca, stem)["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 2


def test_wrong_pin_refused(cert_node, test_ca):
    n = cert_node([_pin(test_ca, "gateway.partner.test")])
    r = _send(n, test_ca, "gateway.partner.test-renewed")  # right name and CA, other key
    assert r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]


@pytest.mark.parametrize("stem", [None, "evil.example"])
def test_no_certificate_or_wrong_name_refused_at_rcpt(cert_node, test_ca, stem):
    n = cert_node([])
    r = _send(n, test_ca, stem)
    assert r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]
    assert maildir_messages(n.home, "alice@contoso.test") == []


@pytest.mark.parametrize("stem", ["gateway.partner.test-other-ca", "gateway.partner.test-expired"])
def test_other_ca_or_expired_certificate_refused(cert_node, test_ca, stem):
    n = cert_node([])
    r = _send(n, test_ca, stem)
    # The TLS handshake itself refuses the certificate; nothing can be delivered.
    assert "handshake_error" in r or r.get("rcpt", [(550, "")])[0][0] == 550, r
    assert maildir_messages(n.home, "alice@contoso.test") == []
    # The server logs the failed handshake a moment after the client sees the alert.
    def traced():
        n.trace.flush()
        return any(row["detail"].get("stage") in ("starttls", "rcpt") for row in n.trace.search(status="Rejected"))
    assert wait_until(traced, timeout=5)


def test_pin_pasted_as_openssl_base64_accepts_the_right_certificate_only(cert_node, test_ca):
    """Issue 22: the base64 SPKI pin that `openssl ... | openssl dgst -sha256 -binary | base64` prints."""
    import shutil
    import subprocess

    assert shutil.which("openssl"), "the openssl binary is needed for this test"
    pipeline = "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    pem = open(test_ca["gateway.partner.test"][0], "rb").read()
    b64 = subprocess.run(["sh", "-c", pipeline], input=pem, capture_output=True, check=True).stdout.decode().strip()
    n = cert_node([b64])
    assert _send(n, test_ca, "gateway.partner.test")["end"][0] == 250
    r = _send(n, test_ca, "gateway.partner.test-renewed")  # same name and CA, other key
    assert r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]
