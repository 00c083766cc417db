"""Session 10, from the sender's side: a message whose first header line starts with a space or a
tab. That line belongs to no field (RFC 5322 §2.2.3: a continuation continues the field above),
and the field above it is the one the gateway puts on top: its own Received. The mailbox's
enhanced-filtering walk trusts that field (it was written by the gateway), so the sender appended
`(fabrikam's address) by mx (Postfix); x` to it — a `;` moving the date cut, then a hop of his
choosing — and the walk read 203.0.113.7 as the original sender: SPF pass for fabrikam.test,
DMARC pass, the forgery delivered with the mailbox's own Authentication-Results vouching for it.

Both roles refuse such a message (`550 5.6.0`), so no sender text ever continues one of our
fields. End to end: a real gateway in front of a real mailbox with enhanced filtering on."""

from __future__ import annotations

import pytest
from gwkit import MAILBOX_POLICY, gw_port
from rig import GATEWAY, INTERNET, maildir_messages, send_message

from mxgate.smtp.replies import REPLIES

ORIGINAL_IP = "203.0.113.7"  # fabrikam's real outbound server: in its SPF
HEAD = b"From: ceo@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: payment\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n" \
       b"Message-ID: <c@fabrikam.test>\r\n\r\nPlease wire the money today.\r\n"
# Joined to the field above it: a `;` so the last one is the sender's, then a whole fake hop.
STEER = f" ({ORIGINAL_IP}) by mx.fabrikam.test (Postfix) with ESMTP id 1; Fri, 27 Nov 2026\r\n".encode()


def assert_refused(reply: tuple) -> None:
    assert reply[0] == 550, reply  # before: 250, and the forgery judged on 203.0.113.7
    assert reply == (550, str(REPLIES["header-continuation-first"]))


@pytest.fixture
def fabrikam(dns):
    dns.add("fabrikam.test", "TXT", f"v=spf1 ip4:{ORIGINAL_IP} -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=none")  # p=none: the gateway lets a failure through
    return dns


@pytest.mark.parametrize("lead", [b" ", b"\t"])
def test_a_first_line_continuing_the_gateways_received_is_refused(node_factory, make_gateway, fabrikam, lead):
    mailbox = node_factory(MAILBOX_POLICY + "ef_skip_last_ip = true\n", dns={"servers": [fabrikam.address], "timeout": 2.0},
                           mailbox={"non_routable": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]})
    gw = make_gateway(downstream=[f"127.0.0.1:{mailbox.port()}"], downstream_ca=str(mailbox.node.certs.ca_cert))
    r = send_message(GATEWAY, gw_port(gw), source=INTERNET, sender="ceo@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=lead + STEER[1:] + HEAD)
    assert_refused(r["end"])
    assert maildir_messages(mailbox.home, "alice@contoso.test") == []


def test_the_mailbox_refuses_it_too(node_factory):
    n = node_factory()
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="ceo@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=STEER + HEAD, ehlo="gw.contoso.test")
    assert_refused(r["end"])
    assert maildir_messages(n.home, "alice@contoso.test") == []
