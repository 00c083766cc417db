"""Session 10, from the sender's side: a DKIM signature with a body length (l=, RFC 6376 §3.5)
covers only the first l bytes of the body. An attacker who holds one genuine message from
fabrikam.test signed with l= (a newsletter, a receipt) appends his own text — or a whole MIME
part — and the signature still verifies: dkimpy calls that `pass`, DMARC aligns on it, and the
attacker's words reach the inbox under fabrikam's p=reject. RFC 6376 §8.2 names the attack;
RFC 8601 §2.7.1 has the word for "signed, but not acceptable to this ADMD": `policy`.
Through a running mailbox node, the gateway address and the loopback DNS server."""

from __future__ import annotations

import dkim as dkimpy

from efkit import body, deliver, dns_section, header_lines, policy, trace_row, via_gateway
from rig import maildir_messages

ATTACKER = "198.51.100.9"  # not in fabrikam's SPF: only DKIM can make DMARC pass
APPENDED = b"\r\nUPDATE: our bank details changed, wire the payment to IBAN XX00 0000 0000.\r\n"


def signed_with_length(message: bytes, pem: bytes) -> bytes:
    return dkimpy.sign(message, b"sel", b"fabrikam.test", pem, length=True) + message


def test_text_appended_after_a_body_length_never_passes_dmarc(node_factory, zone, keys):
    genuine = signed_with_length(body(), keys[0][0])
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, via_gateway(genuine + APPENDED, ip=ATTACKER, helo="mail.evil.example"))["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []  # fabrikam p=reject: quarantined
    row = trace_row(n)
    [dkim] = row["detail"]["dkim"]
    assert (dkim["result"], dkim["domain"]) == ("policy", "fabrikam.test")
    assert "l=" in dkim["reason"]
    assert (row["detail"]["dmarc"]["result"], row["status"], row["reason"]) == ("fail", "Quarantined", "dmarc-policy")


def test_a_body_length_covering_the_whole_body_still_passes(node_factory, zone, keys):
    """The control: the same l= signature on the message as signed passes and delivers."""
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, via_gateway(signed_with_length(body(), keys[0][0]), ip=ATTACKER, helo="mail.evil.example"))["end"][0] == 250
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    [results] = header_lines(stored, "Authentication-Results")
    assert "dkim=pass" in results and "spf=fail" in results and "dmarc=pass" in results
