"""Issue 5, must-show 5: no open relay (adversarial.md §4) and SMTP smuggling (§2) through the gateway:
never split, never relayed with bare CR/LF; the bytes the downstream receives are CRLF-only and dot-stuffed."""

from __future__ import annotations

import re

import pytest
from gwkit import gw_port, spool_count
from rig import ATTACKER, INTERNET, RawSMTP, wait_until

from mxgate.smtp.replies import REPLIES

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@pytest.fixture
def gw_sink(make_gateway, sink, test_ca):
    return make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"]), sink


@pytest.mark.parametrize("rcpt,codes", [
    ("<user@victim.example>", {550}),
    ("<user%victim.example@contoso.test>", {550}),
    ("<@contoso.test:user@victim.example>", {550}),
    ('<"user@victim.example"@contoso.test>', {550}),
    ("<victim.example!user@contoso.test>", {550}),
    ("<user@victim.example@contoso.test>", {501, 553}),
    ("<bob@CONTOSO.TEST>", {250}),
    ("<user@VICTIM.EXAMPLE>", {550}),
    ("<bob@contoso.test.>", {250}),
    ("<user@[192.0.2.1]>", {550}),
    ("<user@[IPv6:2001:db8::1]>", {550}),
    ("<user@>", {501, 553}),
    ("<@>", {501, 553}),
    ("<>", {501, 553}),
    ("<postmaster>", {250}),
    ("<jürgen@contoso.test>", {553}),
])
def test_no_open_relay(make_gateway, rcpt, codes):
    gw = make_gateway()
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO attacker.test")
        assert c.cmd("MAIL FROM:<ceo@contoso.test>")[0] == 250  # a local sender unlocks nothing
        code, text = c.cmd(f"RCPT TO:{rcpt}")
        assert code in codes, (rcpt, code, text)
        if 550 in codes and code == 550:
            assert "5.7.1" in text or "5.1.1" in text


def test_relay_denied_reply_is_5_7_1(make_gateway):
    gw = make_gateway()
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<>")
        assert c.cmd("RCPT TO:<user@victim.example>") == (550, str(REPLIES["relay-denied"]))
        assert c.cmd("RCPT TO:<nobody@contoso.test>") == (550, str(REPLIES["unknown-recipient"]))


SEQS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\r.\n", b"\n.\r", b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("seq", SEQS, ids=[s.hex() for s in SEQS])
def test_smuggling_never_splits_or_relays_bare_newlines(gw_sink, seq):
    gw, sink = gw_sink
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO sender.test")
        assert c.cmd("MAIL FROM:<a@fabrikam.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: s\r\n\r\nbody" + seq + b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\n"
               b"DATA\r\n\r\nsmuggled\r\n.\r\n")
        code, text = c.read_reply()
        assert (code, text) == (550, str(REPLIES["bare-newline"])) or code == 250
        # Whatever followed must not become a second transaction.
        assert c.cmd("QUIT")[0] in (221, 503, 250, 500)
    assert wait_until(lambda: spool_count(gw) == 0, timeout=10)
    for m in sink.messages:
        assert m["sender"] != "ceo@bank.example"
        assert not BARE.search(m["raw"]), m["raw"]
    assert len([m for m in sink.messages if m["sender"] == "a@fabrikam.test"]) <= 1


def test_relayed_bytes_are_crlf_only_and_dot_stuffed(gw_sink):
    gw, sink = gw_sink
    body = b"Subject: dots\r\nFrom: a@fabrikam.test\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO sender.test")
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        c.cmd("RCPT TO:<alice@contoso.test>")
        c.cmd("DATA")
        c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert c.read_reply()[0] == 250
    assert wait_until(lambda: sink.messages, timeout=10)
    raw = sink.messages[0]["raw"]  # the wire bytes, still stuffed, up to and including "\r\n.\r\n"
    assert not BARE.search(raw)
    assert raw.endswith(b"\r\n\r\n..leading dot\r\n...two dots\r\nend\r\n.\r\n")


@pytest.mark.parametrize("seq", [b"\r\n.\r\n", b"\n.\n", b"\r.\r"], ids=["crlf-dot-crlf", "lf-dot-lf", "cr-dot-cr"])
def test_bdat_chunks_on_the_public_listener_never_split_or_relay_bare_newlines(gw_sink, seq):
    """RFC 3030 on the Internet-facing listener: a chunk is data by count. A real terminator inside
    it stays text of one message (relayed dot-stuffed to a DATA-only downstream); bare CR/LF is
    refused as with DATA; the smuggled sender never becomes an envelope sender."""
    gw, sink = gw_sink
    content = (b"Subject: s\r\nFrom: a@fabrikam.test\r\n\r\nbody" + seq +
               b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n")
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        assert "CHUNKING" in c.cmd("EHLO sender.test")[1]
        c.send(b"MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<alice@contoso.test>\r\nBDAT 30\r\n" + content[:30] +
               b"BDAT %d LAST\r\n" % (len(content) - 30) + content[30:])
        replies = [c.read_reply() for _ in range(4)]
        assert [r[0] for r in replies[:3]] == [250, 250, 250]
        if seq == b"\r\n.\r\n":
            assert replies[3][0] == 250, replies
        else:
            assert replies[3] == (550, str(REPLIES["bare-newline"]))
        assert c.cmd("NOOP")[0] == 250  # in step: nothing of the chunk was read as a command
        c.cmd("QUIT")
    assert wait_until(lambda: spool_count(gw) == 0, timeout=10)
    if seq == b"\r\n.\r\n":
        assert wait_until(lambda: sink.messages, timeout=10)
        [m] = sink.messages
        assert m["raw"].endswith(b"\r\n\r\nbody\r\n..\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\n"
                                 b"DATA\r\n\r\nsmuggled\r\n..\r\n.\r\n"), m["raw"]
    for m in sink.messages:
        assert m["sender"] != "ceo@bank.example" and not BARE.search(m["raw"])
    assert len(sink.messages) == (1 if seq == b"\r\n.\r\n" else 0)
