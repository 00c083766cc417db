"""Issue 14 at the gateway (the public MX): several authors in From are each evaluated and the
strictest DMARC result applies (RFC 7489 §6.6.1). fabrikam.test authorises the Internet client
127.0.0.77 (SPF, aligned, p=none); woodgrove.test publishes p=reject and authorises nothing."""

from __future__ import annotations

import pytest
from gwkit import gw_port
from rig import INTERNET, maildir_messages, send_message, simple_message, wait_until

from mxgate.smtp.replies import REPLIES

FROMS = {
    "two-addresses": b"From: Sender <sender@fabrikam.test>, CEO <ceo@woodgrove.test>\r\n",
    "two-fields": b"From: sender@fabrikam.test\r\nFrom: ceo@woodgrove.test\r\n",
    "broken-syntax": b"From: ceo@woodgrove.test via <sender@fabrikam.test\r\n",
}


@pytest.fixture
def zone(dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=none")
    dns.add("_dmarc.woodgrove.test", "TXT", "v=DMARC1; p=reject")
    return dns


def _send(gw, from_lines: bytes):
    data = from_lines + simple_message().split(b"\r\n", 1)[1]  # replace the single From line
    return send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                        rcpts=["alice@contoso.test"], data=data)


@pytest.mark.parametrize("name", list(FROMS))
def test_a_second_author_with_p_reject_is_refused(make_gateway, zone, name):
    gw = make_gateway()  # defaults: dmarc rejects on p=reject
    assert _send(gw, FROMS[name])["end"] == (550, str(REPLIES["dmarc-policy"]))


def test_the_single_author_control_is_delivered(make_gateway, mailbox, zone):
    gw = make_gateway()
    assert _send(gw, b"From: Sender <sender@fabrikam.test>\r\n")["end"][0] == 250
    assert wait_until(lambda: maildir_messages(mailbox.home, "alice@contoso.test"), timeout=10)
