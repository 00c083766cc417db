"""What the mailbox server does when DMARC fails, per the organisation's settings:
p=reject → `dmarc_reject_action` (default quarantine), p=quarantine → `dmarc_quarantine_action`
(default the Junk folder); both configurable, including an outright 550."""

from __future__ import annotations

from efkit import body, deliver, dns_section, header_lines, policy, trace_row, via_gateway
from mxgate.smtp.replies import REPLIES
from rig import maildir_messages

SPOOF_IP = "198.51.100.9"  # not in fabrikam's or woodgrove's SPF


def _spoof(author: str) -> bytes:
    return via_gateway(body(author=author), ip=SPOOF_IP, helo="spoofer.example")


def test_p_quarantine_goes_to_junk_by_default(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    assert deliver(n, _spoof("ceo@woodgrove.test"), sender="x@woodgrove.test")["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    [junk] = maildir_messages(n.home, "alice@contoso.test", "Junk")
    assert "dmarc=fail (p=quarantine pct=100) action=quarantine" in header_lines(junk, "Authentication-Results")[0]
    row = trace_row(n)
    assert row["detail"]["action"]["action"] == "junk" and row["detail"]["dmarc"]["disposition"] == "quarantine"
    assert row["status"] == "FilteredAsSpam"  # delivered, but into Junk: the trace says so


def test_p_reject_is_quarantined_by_default(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(zone))
    r = deliver(n, _spoof("ceo@fabrikam.test"))
    assert r["end"][0] == 250  # accepted and held: EXO's default, no backscatter
    assert maildir_messages(n.home, "alice@contoso.test") == []
    assert maildir_messages(n.home, "alice@contoso.test", "Junk") == []
    row = trace_row(n)
    assert (row["status"], row["reason"], row["original_ip"]) == ("Quarantined", "dmarc-policy", SPOOF_IP)


def test_actions_are_configurable(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True, org_dmarc_reject_action="reject",
                            org_dmarc_quarantine_action="deliver"), dns=dns_section(zone))
    r = deliver(n, _spoof("ceo@fabrikam.test"))
    assert r["end"][1] == str(REPLIES["dmarc-policy"])  # 550 5.7.1, text from smtp/replies.py
    assert deliver(n, _spoof("ceo@woodgrove.test"), sender="x@woodgrove.test")["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1  # p=quarantine delivered to the inbox
    n.trace.flush()
    statuses = sorted(r["status"] for r in n.trace.search(recipient="alice@contoso.test"))
    assert statuses == ["Delivered", "Rejected"]


def test_reject_action_junk(node_factory, zone):
    n = node_factory(policy(ef_skip_last_ip=True, org_dmarc_reject_action="junk"), dns=dns_section(zone))
    assert deliver(n, _spoof("ceo@fabrikam.test"))["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test", "Junk")) == 1
