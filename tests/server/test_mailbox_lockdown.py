"""Issue 3, must-show 1: the guide's test — bypass refused at RCPT, gateway over TLS delivered,
gateway in clear refused with 530; IPv6; refusal at connect."""

from __future__ import annotations

import rig
from rig import ATTACKER, GATEWAY, RawSMTP, maildir_messages, send_message, simple_message
from mxgate.smtp.replies import REPLIES


def test_bypass_from_attacker_refused_at_rcpt_and_nothing_stored(node_factory):
    n = node_factory()
    r = send_message("127.0.0.1", n.port(), source=ATTACKER, sender="ceo@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message())
    code, text = r["rcpt"][0]
    assert code == 550 and "5.7.51 TenantInboundAttribution" in text
    assert str(REPLIES["connector-attribution"]) == text
    assert "data" not in r
    assert maildir_messages(n.home, "alice@contoso.test") == []


def test_gateway_over_starttls_is_delivered_with_received_header(node_factory):
    n = node_factory()
    data = simple_message(subject="through the gateway")
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=data)
    assert r["end"][0] == 250, r
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert stored.endswith(data)
    first = stored.split(b"\r\n\t")[0]
    assert first.startswith(b"Received: from client.test ([127.0.0.10])")
    assert b"TLSv1.3" in stored or b"TLSv1.2" in stored
    assert b"connector Third-party_filter_service" in stored


def test_gateway_in_clear_text_gets_530_at_mail(node_factory):
    n = node_factory()
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(), tls=False)
    assert r["mail"][0] == 530 and "5.7.0 Must issue a STARTTLS command first" in r["mail"][1]


def test_alias_is_delivered_to_the_mailbox(node_factory):
    n = node_factory()
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="s@fabrikam.test",
                     rcpts=["Alice.Smith@CONTOSO.test"], data=simple_message())
    assert r["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1


IPV6_POLICY = rig.GUIDE_POLICY.replace('sender_ip_addresses = ["127.0.0.10"]', 'sender_ip_addresses = ["127.0.0.10", "::1"]')


def test_ipv6_peer_allowed_when_listed(node_factory):
    n = node_factory(IPV6_POLICY)
    port6 = int(n.node.listeners["mailbox"].addresses[1].rsplit(":", 1)[1])
    r = send_message("::1", port6, source="::1", sender="s@fabrikam.test", rcpts=["bob@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250


def test_ipv6_peer_refused_when_not_listed(node_factory):
    n = node_factory()
    port6 = int(n.node.listeners["mailbox"].addresses[1].rsplit(":", 1)[1])
    r = send_message("::1", port6, source="::1", sender="s@fabrikam.test", rcpts=["bob@contoso.test"],
                     data=simple_message())
    assert r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]


def test_reject_stage_connect_refuses_in_greeting_then_503_until_quit(node_factory):
    n = node_factory(mailbox={"reject_stage": "connect"})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        code, text = c.greeting()
        assert code == 554 and "5.7.51" in text
        assert c.cmd("EHLO x")[0] == 503
        assert c.cmd("MAIL FROM:<a@b.test>")[0] == 503
        assert c.cmd("QUIT")[0] == 221
    # The gateway itself is still served.
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="s@fabrikam.test", rcpts=["bob@contoso.test"],
                     data=simple_message())
    assert r["greeting"][0] == 220 and r["end"][0] == 250


def test_no_auth_on_anonymous_listener_and_pipelining_advertised(node_factory):
    n = node_factory()
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as c:
        c.greeting()
        code, text = c.cmd("EHLO x")
        assert "PIPELINING" in text and "ENHANCEDSTATUSCODES" in text and "STARTTLS" in text
        assert "AUTH" not in text
        c.starttls()
        code, text = c.cmd("EHLO x")
        assert "AUTH" not in text and "STARTTLS" not in text
        assert c.cmd("AUTH PLAIN AGF1c2VyAHBhc3M=")[0] == 500
