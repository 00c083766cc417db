"""Issue 5, must-show 1: Internet sender 127.0.0.77 → gateway 127.0.0.10 → mailbox server (connector
restricted to 127.0.0.10, TLS required) → Maildir, with the gateway's stamps and a valid ARC seal."""

from __future__ import annotations

from gwkit import gw_port, spool_count
from rig import INTERNET, maildir_messages, send_message, simple_message, wait_until

from mxgate.auth.arc import validate_arc
from mxgate.auth.dns import dnsfunc_for, make_resolver
from mxgate.smtp.replies import REPLIES


def test_internet_to_gateway_to_mailbox_with_stamps_and_arc(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = make_gateway()
    data = simple_message(subject="end to end")
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=data)
    assert r["end"] == (250, str(REPLIES["relayed"])), r  # cut-through: the mailbox server took it before our 250
    assert wait_until(lambda: maildir_messages(mailbox.home, "alice@contoso.test"), timeout=10)
    [stored] = maildir_messages(mailbox.home, "alice@contoso.test")
    assert stored.endswith(data)
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    # The mailbox server's Received names the gateway address and its connector (lock-down passed).
    assert "([127.0.0.10])" in head and "connector Third-party_filter_service" in head
    # The gateway's own Received, with the Internet peer and its TLS details.
    assert "from client.test ([127.0.0.77])" in head and "by gw.contoso.test (mxgate)" in head
    assert "using TLSv1.3" in head or "using TLSv1.2" in head
    # Our Authentication-Results (the mailbox server keeps it under -Original, RFC 8601 §5) and the seal.
    assert "gw.mxgate.test; spf=pass smtp.mailfrom=fabrikam.test" in head
    assert "ARC-Authentication-Results: i=1; gw.mxgate.test;" in head
    assert "ARC-Seal: i=1;" in head and "d=mxgate.test" in head
    arc = validate_arc(stored, dnsfunc_for(make_resolver([dns.address], 2.0)))
    assert arc.status == "pass", arc
    assert arc.sealers == ("mxgate.test",)
    assert "arc=pass" in head  # the mailbox server's own check agreed
    # The gateway's verdict stamps reach the mailbox through the locked connector.
    assert "X-MXGate-Spam-Score:" in head and "X-MXGate-Spam-Verdict:" in head
    assert wait_until(lambda: spool_count(gw) == 0)
    gw.trace.flush()
    rows = gw.trace.search(recipient="alice@contoso.test")
    assert rows and rows[0]["status"] == "Delivered"


def test_arc_validation_fails_when_the_key_is_not_published(make_gateway, mailbox, dns):
    gw = make_gateway()
    dns.remove("mxgate-gw._domainkey.mxgate.test")
    send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                 rcpts=["bob@contoso.test"], data=simple_message())
    assert wait_until(lambda: maildir_messages(mailbox.home, "bob@contoso.test"), timeout=10)
    [stored] = maildir_messages(mailbox.home, "bob@contoso.test")
    assert validate_arc(stored, dnsfunc_for(make_resolver([dns.address], 2.0))).status == "fail"
