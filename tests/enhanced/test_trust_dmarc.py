"""Issue 14, DMARC from the attacker's side through a running mailbox node: the issue's own
example `From: a <x@example.org>, b <y@example.com>` (example.com p=reject) must not reach the
inbox; several From fields neither; an IDN author is looked up by its A-label."""

from __future__ import annotations

import pytest

from efkit import ORIGINAL_IP, body, deliver, dns_section, header_lines, policy, trace_row, via_gateway
from mxgate.quarantine.store import QuarantineStore
from rig import maildir_messages


@pytest.fixture
def authors(zone):
    zone.add("example.org", "TXT", f"v=spf1 ip4:{ORIGINAL_IP} -all")
    zone.add("_dmarc.example.org", "TXT", "v=DMARC1; p=none")
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    zone.add("xn--bcher-kva.example", "TXT", "v=spf1 -all")
    zone.add("_dmarc.xn--bcher-kva.example", "TXT", "v=DMARC1; p=quarantine")
    return zone


def _message(from_lines: str) -> bytes:
    return via_gateway(body().replace(b"From: ceo@fabrikam.test\r\n", from_lines.encode("utf-8")))


@pytest.mark.parametrize("from_lines", [
    "From: a <x@example.org>, b <y@example.com>\r\n",
    "From: a <x@example.org>\r\nFrom: b <y@example.com>\r\n",
], ids=["two-addresses", "two-fields"])
def test_a_p_reject_co_author_never_reaches_the_inbox(node_factory, authors, from_lines):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(authors))
    assert deliver(n, _message(from_lines), sender="x@example.org")["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    row = trace_row(n)
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")
    dmarc = row["detail"]["dmarc"]
    assert (dmarc["result"], dmarc["disposition"], dmarc["domain"]) == ("fail", "reject", "example.com")
    assert dmarc["authors"] == ["example.org", "example.com"] and "strictest" in dmarc["reason"]
    [item] = QuarantineStore(n.node.engine).list()
    stored = QuarantineStore(n.node.engine).get(item["id"])["body"]
    [ar] = header_lines(stored, "Authentication-Results")
    assert "dmarc=fail" in ar and "header.from=example.com" in ar


def test_the_single_author_control_is_delivered(node_factory, authors):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(authors))
    assert deliver(n, _message("From: a <x@example.org>\r\n"), sender="x@example.org")["end"][0] == 250
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1
    assert trace_row(n)["detail"]["dmarc"]["result"] == "pass"


def test_an_idn_author_is_judged_by_its_a_label_policy(node_factory, authors):
    n = node_factory(policy(ef_skip_last_ip=True), dns=dns_section(authors))
    msg = _message("From: =?utf-8?q?B=C3=BCcher?= <info@B\u00fccher.example>\r\n")  # RFC 6532 UTF-8 header
    assert deliver(n, msg, sender="x@example.org")["end"][0] == 250
    row = trace_row(n)
    dmarc = row["detail"]["dmarc"]
    assert (dmarc["result"], dmarc["domain"], dmarc["policy"]) == ("fail", "xn--bcher-kva.example", "quarantine")
    assert len(maildir_messages(n.home, "alice@contoso.test", "Junk")) == 1
