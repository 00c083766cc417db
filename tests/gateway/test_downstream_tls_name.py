"""Issue 22, point 2: the gateway's relay checks whom it talks to, not only which CA signed it.

A downstream presenting a certificate from the trusted CA but for another name is refused (the
message stays queued, deferred, nothing reaches that host); the right name is accepted; and
`[gateway] downstream_tls_name` names the certificate to expect when the host in `downstream`
is not the name in the certificate. Real TLS on loopback with the test CA (trustme)."""

from __future__ import annotations

from gwkit import Sink, gw_port, spool_count
from rig import INTERNET, send_message, simple_message, wait_until


def _send(gw, subject: str) -> None:
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(subject=subject))
    assert r["end"][0] == 250, r


def _entries(gw):
    return gw.node.roles["gateway"].sv.spool.list()


def test_downstream_with_a_certificate_for_another_name_is_refused(make_gateway, test_ca):
    impostor = Sink(*test_ca["evil.example"])  # same CA, certificate for evil.example, listening on 127.0.0.1
    try:
        gw = make_gateway(downstream=[impostor.address], downstream_ca=test_ca["ca"])
        _send(gw, "not for impostors")
        assert wait_until(lambda: any(e.attempts >= 1 for e in _entries(gw)), timeout=10)
        [entry] = _entries(gw)
        assert entry.queue == "deferred" and all(r.state.value == "pending" for r in entry.recipients)
        assert "certificate" in (entry.last_error or "").lower() or "hostname" in (entry.last_error or "").lower(), entry
        assert impostor.messages == []  # not one byte of the message went to the wrong host
    finally:
        impostor.close()


def test_downstream_with_the_right_name_is_accepted(make_gateway, test_ca):
    sink = Sink(test_ca["server_cert"], test_ca["server_key"])  # certificate names 127.0.0.1
    try:
        gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
        _send(gw, "right name")
        assert wait_until(lambda: spool_count(gw) == 0 and len(sink.messages) == 1, timeout=10)
    finally:
        sink.close()


def test_downstream_tls_name_names_the_certificate_to_expect(make_gateway, test_ca):
    """The host is an address; the certificate names the mailbox server: say which name to check."""
    named = Sink(*test_ca["evil.example"])
    try:
        gw = make_gateway(downstream=[named.address], downstream_ca=test_ca["ca"], downstream_tls_name="evil.example")
        _send(gw, "named")
        assert wait_until(lambda: spool_count(gw) == 0 and len(named.messages) == 1, timeout=10)
    finally:
        named.close()
