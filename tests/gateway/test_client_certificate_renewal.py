"""Issue 21: the gateway's client certificate renews in place, and the certificate connector's
pin-renewal overlap (docs/operations.md "Certificates") is what keeps mail flowing.

The mailbox server's certificate connector pins the gateway's key. The operator adds the new
key's pin beside the old one, the gateway's certificate is renewed with the new key (picked up
without a restart), then the old pin is removed: nothing is refused at any step. A key the
connector does not pin is refused (550 5.7.51) and the message bounces: the overlap is needed."""

from __future__ import annotations

import os
import shutil

import pytest

import rig
from gwkit import spool_count
from rig import INTERNET, maildir_messages, send_message, simple_message, wait_until
from mxgate.server.tls import spki_sha256_of_file
from mxgate.smtp.replies import REPLIES

POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[mailbox]]
address = "alice@contoso.test"

[[inbound_connector]]
name = "Gateway by certificate"
sender_domains = ["*"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
tls_sender_certificate_fingerprints = [{pins}]
require_tls = true
"""


def _policy(*pins: str) -> str:
    return POLICY.format(pins=", ".join(f'"{p}"' for p in pins))


def _install(pair, live) -> None:
    for src, name in zip(pair, ("cert.pem", "key.pem")):
        shutil.copyfile(src, live / f".{name}")
        os.replace(live / f".{name}", live / name)


def _apply(node, policy: str) -> None:
    version = rig.apply_policy(node.home, policy)
    assert wait_until(lambda: node.node.watcher.current.version == version, timeout=10)


@pytest.fixture
def pinned_mailbox(node_factory, test_ca):
    old = spki_sha256_of_file(test_ca["gateway.partner.test"][0])
    return node_factory(_policy(old), mailbox={"client_ca": test_ca["ca"], "tls_cert": test_ca["server_cert"],
                                               "tls_key": test_ca["server_key"]})


def test_gateway_client_certificate_renewal_with_pin_overlap(make_gateway, pinned_mailbox, test_ca, tmp_path):
    live = tmp_path / "gw-live"
    live.mkdir()
    _install(test_ca["gateway.partner.test"], live)
    gw = make_gateway(downstream=[f"127.0.0.1:{pinned_mailbox.port()}"], downstream_ca=test_ca["ca"],
                      client_cert=str(live / "cert.pem"), client_key=str(live / "key.pem"))
    old_pin = spki_sha256_of_file(test_ca["gateway.partner.test"][0])
    new_pin = spki_sha256_of_file(test_ca["gateway.partner.test-renewed"][0])
    assert old_pin != new_pin  # the renewal brings a new key, so the pin changes

    def send(subject: str, code: int = 250) -> dict:
        r = send_message("127.0.0.10", gw.port("gateway"), source=INTERNET, sender="s@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=simple_message(subject=subject))
        assert r["end"][0] == code, r
        return r

    def delivered() -> int:
        return len(maildir_messages(pinned_mailbox.home, "alice@contoso.test"))

    def mailbox_refusals() -> list[dict]:
        return [r for r in pinned_mailbox.trace.search(status="Rejected") if r["reason"] == "connector-attribution"]

    send("before renewal")
    assert wait_until(lambda: delivered() == 1 and spool_count(gw) == 0, timeout=15)

    # 1. The overlap first: the mailbox server's connector accepts the old and the new key.
    _apply(pinned_mailbox, _policy(old_pin, new_pin))
    send("during the overlap, old key")
    assert wait_until(lambda: delivered() == 2 and spool_count(gw) == 0, timeout=15)

    # 2. The ACME client renews the gateway's certificate: the next relay presents it, no restart.
    _install(test_ca["gateway.partner.test-renewed"], live)
    assert gw.node.check_certificates()["gateway-client"] == "reloaded"
    send("during the overlap, new key")
    assert wait_until(lambda: delivered() == 3 and spool_count(gw) == 0, timeout=15)

    # 3. The old pin goes once every gateway serves the new certificate.
    _apply(pinned_mailbox, _policy(new_pin))
    send("after the overlap")
    assert wait_until(lambda: delivered() == 4 and spool_count(gw) == 0, timeout=15)
    assert mailbox_refusals() == []

    # Why the order matters: a key the connector does not pin is refused with 550 5.7.51, and the
    # sender is refused at DATA by the gateway's cut-through relay (a bounce from its own server,
    # not a retry; without cut-through the gateway's DSN).
    _install(test_ca["gateway.partner.test"], live)  # its pin was removed in step 3
    assert gw.node.check_certificates()["gateway-client"] == "reloaded"
    r = send("unpinned key", code=550)
    assert r["end"] == (550, str(REPLIES["downstream-policy"]))
    assert wait_until(lambda: len(mailbox_refusals()) == 1, timeout=15)
    assert "5.7.51" in mailbox_refusals()[0]["detail"]["reply"] and delivered() == 4
    gw.trace.flush()
    assert [(r["status"], r["reason"]) for r in gw.trace.search(status="Rejected")] == [("Rejected", "downstream-policy")]
