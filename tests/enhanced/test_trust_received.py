"""Issue 14, from the attacker's side, through a running mailbox node, the gateway address
127.0.0.10 and the loopback DNS server: the hop the mailbox trusts (`ef_skip_last_ip`) was
written by an MTA about a client at 198.51.100.9, which put fabrikam's authorised address
203.0.113.7 into every field it chooses (HELO, EHLO, account...). Judged on the HELO, SPF and
DMARC would pass and the forgery would reach the inbox; judged on the real peer it fails
fabrikam's p=reject. A hop whose peer cannot be read stops the walk: a forged header below it
naming 203.0.113.7 is never believed."""

from __future__ import annotations

import pytest

from efkit import ORIGINAL_IP, body, deliver, dns_section, policy, received, trace_row
from rig import GATEWAY, maildir_messages

ATTACKER = "198.51.100.9"
TAIL = "by gw.contoso.test {by} id 1qA-0001;\r\n\tFri, 27 Nov 2026 12:00:01 +0000"

# (family, the trusted hop's Received value about the attacker's connection)
STEERED = [
    ("exim", f"from [{ATTACKER}] (helo=[{ORIGINAL_IP}])\r\n\t" + TAIL.format(by="with esmtp (Exim 4.96)")),
    ("qmail", f"from unknown (HELO [{ORIGINAL_IP}]) ({ATTACKER})\r\n\t" + TAIL.format(by="with SMTP")),
    ("communigate", f"from [{ATTACKER}] (account x@{ORIGINAL_IP} HELO [{ORIGINAL_IP}])\r\n\t"
                    + TAIL.format(by="(CommuniGate Pro SMTP 6.3) with ESMTPSA")),
    ("gmx", f"from evil.example (EHLO [{ORIGINAL_IP}]) [{ATTACKER}]\r\n\t" + TAIL.format(by="(mp033) with SMTP")),
    ("postfix", f"from x (unknown [{ORIGINAL_IP}]) (unknown [{ATTACKER}])\r\n\t"
                + TAIL.format(by="(Postfix) with ESMTP")),
]


def _forgery(top: str) -> bytes:
    return f"Received: {top}\r\n".encode() + body()


@pytest.mark.parametrize("family,top", STEERED, ids=[s[0] for s in STEERED])
def test_a_helo_literal_never_becomes_the_original_sender(node_factory, zone, family, top):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, _forgery(top))["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []  # fabrikam p=reject: quarantined
    row = trace_row(n)
    assert row["original_ip"] == ATTACKER and row["detail"]["authenticated_ip"] == ATTACKER
    assert (row["detail"]["spf"]["result"], row["detail"]["dmarc"]["result"]) == ("fail", "fail")
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")


UNREADABLE = [
    ("bare-helo", f"from mail.example HELO {ORIGINAL_IP}\r\n\t" + TAIL.format(by="with SMTP")),
    ("helo-opens-a-comment", f"from a (b [{ORIGINAL_IP}]) (c (unknown [{ATTACKER}])\r\n\t"
                             + TAIL.format(by="(Postfix) with ESMTP")),
    ("postfix-without-tcp-info", f"from [{ORIGINAL_IP}]\r\n\t" + TAIL.format(by="(Postfix) with ESMTP")),
]


@pytest.mark.parametrize("name,top", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_an_unreadable_trusted_hop_stops_the_walk_end_to_end(node_factory, zone, name, top):
    below = received(ORIGINAL_IP, "mail.fabrikam.test", by="relay.example")  # forged by the sender
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, f"Received: {top}\r\n".encode() + below + body())["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    row = trace_row(n)
    ef = row["detail"]["enhanced_filtering"]
    assert (ef["status"], ef["rule"], ef["header_index"]) == ("stopped", "unreadable-trusted-hop", 0)
    assert "no header from it down is believed" in ef["explanation"]
    assert row["original_ip"] == "" and row["detail"]["authenticated_ip"] == GATEWAY
    assert row["detail"]["spf"]["result"] == "fail" and row["status"] == "Quarantined"


def test_a_readable_hop_still_finds_the_real_sender(node_factory, zone):
    """The control: the same trusted hop, written about fabrikam's real server, passes."""
    top = f"from mail.fabrikam.test ([{ORIGINAL_IP}]:4321 helo=mail.fabrikam.test)\r\n\t" \
          + TAIL.format(by="with esmtps (Exim 4.96)")
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, _forgery(top))["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1
    row = trace_row(n)
    assert row["original_ip"] == ORIGINAL_IP and row["detail"]["spf"]["result"] == "pass"


# The envelope sender is the client's to choose, and Exim records it after `by`
# (`(envelope-from <path>)`, RFC 5321 §4.4 leaves room for it): a quoted local part (RFC 5321
# §4.1.2 qtextSMTP: spaces, parentheses, `by`) can close Exim's comment and write a whole fake
# `(fabrikam's address) by mx (Postfix)` clause after the real `by`. Read as the hop, SPF would
# pass for fabrikam.test at 203.0.113.7, aligned with the From: the p=reject forgery delivered.
STEERING_SENDER = f'"x) ({ORIGINAL_IP}) by mx.fabrikam.test (Postfix) (y"@fabrikam.test'


def test_an_envelope_sender_after_by_never_becomes_the_original_sender(node_factory, zone):
    top = (f"from [{ATTACKER}] (helo=evil.example)\r\n\tby gw.contoso.test with esmtp (Exim 4.96)\r\n\t"
           f"(envelope-from <{STEERING_SENDER}>)\r\n\tid 1qA-0001 for alice@contoso.test;\r\n\t"
           "Fri, 27 Nov 2026 12:00:01 +0000")
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, _forgery(top), sender=STEERING_SENDER)["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []  # fabrikam p=reject: quarantined
    row = trace_row(n)
    ef = row["detail"]["enhanced_filtering"]  # the hop's structure is in doubt: the walk stops there
    assert (ef["status"], ef["rule"], ef["header_index"]) == ("stopped", "unreadable-trusted-hop", 0)
    assert row["original_ip"] == "" and row["detail"]["authenticated_ip"] == GATEWAY
    assert (row["detail"]["spf"]["result"], row["detail"]["dmarc"]["result"]) == ("fail", "fail")
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")
