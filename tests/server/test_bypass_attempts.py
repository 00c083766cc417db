"""adversarial.md §5: lock-down bypass attempts on the mailbox server; none may deliver."""

from __future__ import annotations

import pytest

import rig
from rig import ATTACKER, GATEWAY, RawSMTP, maildir_messages, send_message, simple_message

IPV6_GATEWAY_POLICY = rig.GUIDE_POLICY.replace('sender_ip_addresses = ["127.0.0.10"]',
                                               'sender_ip_addresses = ["127.0.0.10", "2001:db8::10"]')


def _refused_at_rcpt(r) -> bool:
    return r["rcpt"] and r["rcpt"][0][0] == 550 and "5.7.51" in r["rcpt"][0][1]


def test_ipv6_attacker_refused_when_gateway_range_is_elsewhere(node_factory):
    n = node_factory(IPV6_GATEWAY_POLICY)
    port6 = int(n.node.listeners["mailbox"].addresses[1].rsplit(":", 1)[1])
    r = send_message("::1", port6, source="::1", sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert _refused_at_rcpt(r)


def test_ipv4_mapped_peer_matches_as_ipv4():
    from mxgate.policy.attribution import attribute_by_ip, compile_policy
    from mxgate.policy.document import load_toml

    compiled = compile_policy(load_toml(rig.GUIDE_POLICY), 1)
    assert attribute_by_ip(compiled, "::ffff:127.0.0.10") == {"third-party filter service"}
    assert attribute_by_ip(compiled, "::ffff:127.0.0.66") == frozenset()


def test_proxy_header_from_untrusted_peer_is_not_believed(node_factory):
    n = node_factory()
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        c.greeting()
        code, _ = c.cmd("PROXY TCP4 127.0.0.10 127.0.0.1 40000 25")
        assert code == 500
        c.cmd("EHLO x"); c.starttls(); code, ehlo = c.cmd("EHLO x")
        assert "XCLIENT" not in ehlo and "XFORWARD" not in ehlo
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        code, text = c.cmd("RCPT TO:<alice@contoso.test>")
        assert code == 550 and "5.7.51" in text


def test_forged_helo_local_sender_and_received_headers_change_nothing(node_factory):
    n = node_factory()
    forged = (b"Received: from gw.contoso.test ([127.0.0.10]) by mx.contoso.test with ESMTPS; Fri, 27 Nov 2026 12:00:00 +0000\r\n"
              + simple_message())
    r = send_message("127.0.0.1", n.port(), source=ATTACKER, sender="ceo@contoso.test", rcpts=["alice@contoso.test"],
                     data=forged, ehlo="gw.mxgate.test")
    assert _refused_at_rcpt(r)
    assert maildir_messages(n.home, "alice@contoso.test") == []


def test_gateway_in_clear_text_refused(node_factory):
    n = node_factory()
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message(), tls=False)
    assert r["mail"][0] == 530


TWO_DOMAINS = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"
[[accepted_domain]]
name = "contoso.test"
[[accepted_domain]]
name = "fabrikam-corp.test"
[[mailbox]]
address = "alice@contoso.test"
[[mailbox]]
address = "carol@fabrikam-corp.test"
[[inbound_connector]]
name = "Contoso gateway"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.10"]
restrict_domains_to_ip_addresses = true
associated_accepted_domains = ["contoso.test"]
[[inbound_connector]]
name = "Fabrikam gateway"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.11"]
restrict_domains_to_ip_addresses = true
associated_accepted_domains = ["fabrikam-corp.test"]
"""


def test_gateway_ip_for_a_domain_outside_its_associated_domains_is_refused(node_factory):
    n = node_factory(TWO_DOMAINS)
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="a@x.test", rcpts=["carol@fabrikam-corp.test"],
                     data=simple_message())
    assert _refused_at_rcpt(r)
    ok = send_message("127.0.0.1", n.port(), source=rig.GATEWAY2, sender="a@x.test", rcpts=["carol@fabrikam-corp.test"],
                      data=simple_message())
    assert ok["end"][0] == 250


def test_recipients_with_different_outcomes_need_two_transactions(node_factory):
    n = node_factory(TWO_DOMAINS.replace('sender_ip_addresses = ["127.0.0.11"]', 'sender_ip_addresses = ["127.0.0.10"]'))
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as c:
        c.greeting(); c.cmd("EHLO x"); c.starttls(); c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@x.test>")
        assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<carol@fabrikam-corp.test>")
        assert code == 452 and "4.5.3" in text


SENDER_PATTERNS = rig.GUIDE_POLICY.replace('sender_domains = ["*"]', 'sender_domains = ["*.fabrikam.test"]')


@pytest.mark.parametrize("sender, refused", [
    ("a@fabrikam.test", True), ("a@eu.fabrikam.test", True), ("a@other.test", False), ("a@notfabrikam.test", False)])
def test_sender_domain_patterns_decide_which_mail_is_restricted(node_factory, sender, refused):
    n = node_factory(SENDER_PATTERNS)
    r = send_message("127.0.0.1", n.port(), source=ATTACKER, sender=sender, rcpts=["alice@contoso.test"],
                     data=simple_message(), tls=True)
    assert _refused_at_rcpt(r) is refused


def test_disabled_connector_restricts_nothing_and_admits_nobody(node_factory):
    n = node_factory(rig.GUIDE_POLICY + "enabled = false\n")
    r = send_message("127.0.0.1", n.port(), source=ATTACKER, sender="a@x.test", rcpts=["alice@contoso.test"],
                     data=simple_message(), tls=False)
    assert r["end"][0] == 250  # no lock-down in force: this is what verify would flag


LONGEST_PREFIX = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"
[[accepted_domain]]
name = "contoso.test"
[[mailbox]]
address = "alice@contoso.test"
[[inbound_connector]]
name = "Whole loopback partner"
sender_domains = ["*.partner.test"]
sender_ip_addresses = ["127.0.0.0/8"]
restrict_domains_to_ip_addresses = true
[[inbound_connector]]
name = "Gateway"
sender_domains = ["fabrikam.test"]
sender_ip_addresses = ["127.0.0.10/32"]
restrict_domains_to_ip_addresses = true
"""


def test_longest_prefix_wins(node_factory):
    n = node_factory(LONGEST_PREFIX)
    # 127.0.0.10 matches the /32 "Gateway" only, so mail from *.partner.test (restricted to the /8
    # connector) is refused from it, while any other loopback host matches the /8 connector.
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="a@x.partner.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert _refused_at_rcpt(r)
    r = send_message("127.0.0.1", n.port(), source=rig.PARTNER, sender="a@x.partner.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250
