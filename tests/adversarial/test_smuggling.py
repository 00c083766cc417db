"""adversarial.md §2: SMTP smuggling (CVE-2023-51764 family) against the mailbox listener.

Each variant ends its "first message" with a non-standard end-of-data sequence and smuggles a
second transaction behind it. Expected: the message is refused with 550 5.6.0 (bare CR/LF), the
smuggled MAIL FROM never becomes an envelope sender, and nothing is stored."""

from __future__ import annotations

import pytest

from rig import GATEWAY, RawSMTP, maildir_messages

SEQUENCES = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\r.\n", b"\n.\r"]


def _open(n):
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    c.greeting(); c.cmd("EHLO gw.test"); c.starttls(); c.cmd("EHLO gw.test")
    return c


@pytest.mark.parametrize("seq", SEQUENCES + [b"\r\n\x00.\r\n"], ids=lambda s: repr(s))
def test_smuggled_second_message_is_never_split(node_factory, seq):
    n = node_factory()
    c = _open(n)
    assert c.cmd("MAIL FROM:<a@fabrikam.test>")[0] == 250
    assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: s\r\n\r\nbody" + seq + b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\n"
           b"DATA\r\n\r\nsmuggled\r\n.\r\n")
    code, text = c.read_reply()
    stored_alice = maildir_messages(n.home, "alice@contoso.test")
    stored_bob = maildir_messages(n.home, "bob@contoso.test")
    if seq == b"\r\n\x00.\r\n":
        # No bare CR/LF here: one message (with a NUL line) ending at the real terminator.
        assert code == 250 and len(stored_alice) == 1 and b"smuggled" in stored_alice[0]
    else:
        assert code == 550 and "5.6.0" in text
        assert stored_alice == []
    assert stored_bob == []  # the smuggled transaction never happened
    # The session is still in sync: the next command is a command, not message data.
    assert c.cmd("NOOP")[0] == 250
    c.close()
    n.trace.flush()
    assert all(r["sender"] != "ceo@bank.example" for r in n.trace.search(limit=100))


def test_bare_lf_anywhere_in_data_is_refused(node_factory):
    n = node_factory()
    c = _open(n)
    c.cmd("MAIL FROM:<a@fabrikam.test>"); c.cmd("RCPT TO:<alice@contoso.test>"); c.cmd("DATA")
    c.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
    code, text = c.read_reply()
    assert code == 550 and "5.6.0" in text
    assert maildir_messages(n.home, "alice@contoso.test") == []


def test_dot_stuffing_is_undone(node_factory):
    n = node_factory()
    c = _open(n)
    c.cmd("MAIL FROM:<a@fabrikam.test>"); c.cmd("RCPT TO:<alice@contoso.test>"); c.cmd("DATA")
    c.send(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n.\r\n")
    assert c.read_reply()[0] == 250
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert stored.endswith(b"\r\n\r\n.leading dot\r\n..\r\n")
