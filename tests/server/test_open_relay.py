"""adversarial.md §4: no open relay on the mailbox server, whatever the address trick.

Run from the gateway address over TLS, so the connector admits the session and only the
recipient rules decide."""

from __future__ import annotations

import pytest

from rig import GATEWAY, RawSMTP, maildir_messages


@pytest.fixture
def session(node_factory):
    n = node_factory()
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    c.greeting()
    c.cmd("EHLO gw.test")
    c.starttls()
    c.cmd("EHLO gw.test")
    assert c.cmd("MAIL FROM:<someone@contoso.test>")[0] == 250  # a local-domain sender unlocks nothing
    yield n, c
    c.close()


@pytest.mark.parametrize("rcpt, codes, enhanced", [
    ("<user@victim.example>", (550,), "5.7.1"),
    ("<user%victim.example@contoso.test>", (550,), "5.1.1"),
    ("<@contoso.test:user@victim.example>", (550,), "5.7.1"),
    ('<"user@victim.example"@contoso.test>', (550,), "5.1.1"),
    ("<victim.example!user@contoso.test>", (550,), "5.1.1"),
    ("<user@victim.example@contoso.test>", (501, 553), ""),
    ("<user@VICTIM.EXAMPLE>", (550,), "5.7.1"),
    ("<user@[192.0.2.1]>", (550,), "5.7.1"),
    ("<user@[IPv6:2001:db8::1]>", (550,), "5.7.1"),
    ("<user@>", (501, 553), ""),
    ("<@>", (501, 553), ""),
    ("<>", (501, 553), ""),
    ("<jöhn@contoso.test>", (553,), ""),
])
def test_relay_tricks_are_refused(session, rcpt, codes, enhanced):
    _n, c = session
    code, text = c.cmd(f"RCPT TO:{rcpt}")
    assert code in codes, text
    assert enhanced in text


@pytest.mark.parametrize("rcpt", ["<alice@CONTOSO.TEST>", "<alice@contoso.test.>", "<postmaster>"])
def test_local_variants_accepted(session, rcpt):
    _n, c = session
    assert c.cmd(f"RCPT TO:{rcpt}")[0] == 250


def test_null_sender_accepted_and_postmaster_delivered(node_factory):
    n = node_factory()
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as c:
        c.greeting(); c.cmd("EHLO gw.test"); c.starttls(); c.cmd("EHLO gw.test")
        assert c.cmd("MAIL FROM:<>")[0] == 250
        assert c.cmd("RCPT TO:<postmaster>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n")
        assert c.read_reply()[0] == 250
    assert len(maildir_messages(n.home, "postmaster@contoso.test")) == 1
