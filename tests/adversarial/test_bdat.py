"""RFC 3030 CHUNKING (`BDAT <size> [LAST]`) against a real listener, from the attacker's side.

A chunk is read by its count, never scanned: "\\r\\n.\\r\\n", "QUIT" or a smuggled "MAIL FROM" inside
it are message text (adversarial.md §2). Every chunk is read off the wire, also a refused one, so
the session stays in step; a size that cannot be read ends the session (nothing after it can be
told from a command). The end of the message is DATA's end: the same checks (bare CR/LF refused),
the same size and trace, no 250 before stable storage. The session code is shared by both roles;
these run against the mailbox listener over STARTTLS, from the gateway's address.
"""

from __future__ import annotations

import asyncio
import select
import threading

import pytest

import rig
from rig import GATEWAY, RawSMTP, maildir_messages

from mxgate.smtp.framing import ChunkReader, DataReader

MSG = (b"From: a@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: chunked\r\n\r\n"
       b"line one\r\n.leading dot, not stuffed\r\n..two\r\nend\r\n")


def _open(n) -> RawSMTP:
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    assert c.greeting()[0] == 220
    c.cmd("EHLO gw.test")
    assert c.starttls()[0] == 220
    c.cmd("EHLO gw.test")
    return c


def _envelope(rcpt: str = "alice@contoso.test", sender: str = "a@fabrikam.test") -> bytes:
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode()


def _replies(c: RawSMTP, n: int) -> list[tuple[int, str]]:
    return [c.read_reply() for _ in range(n)]


def _stored(n, rcpt="alice@contoso.test") -> list[bytes]:
    return maildir_messages(n.home, rcpt)


def test_chunking_is_offered_after_ehlo_not_helo(node_factory):
    n = node_factory()
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as c:
        c.greeting()
        code, text = c.cmd("EHLO gw.test")
        assert code == 250 and "\n250-CHUNKING" in text or text.endswith("250 CHUNKING")
        code, text = c.cmd("HELO gw.test")
        assert code == 250 and "CHUNKING" not in text


def test_pipelined_mail_rcpt_bdat_last_in_one_write_stores_the_exact_message(node_factory):
    n = node_factory()
    with _open(n) as c:
        c.send(_envelope() + b"BDAT %d LAST\r\n" % len(MSG) + MSG)
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        assert c.cmd("NOOP")[0] == 250  # in step: the chunk's bytes were all data
        c.cmd("QUIT")
    [stored] = _stored(n)
    assert stored.endswith(b"\r\n\r\n" + MSG.split(b"\r\n\r\n", 1)[1]) and b"Subject: chunked\r\n" in stored


def test_several_chunks_split_anywhere_even_inside_crlf_make_one_message(node_factory):
    n = node_factory()
    split_crlf = MSG.index(b"\r\n", 30) + 1  # between a CR and its LF
    empty_line = MSG.index(b"\r\n\r\n") + 2  # between the header's last CRLF and the empty line's
    cuts = [1, 17, split_crlf, empty_line, empty_line + 3, len(MSG) - 1]
    pieces = [MSG[a:b] for a, b in zip([0] + cuts, cuts + [len(MSG)])]
    with _open(n) as c:
        c.send(_envelope())
        assert [r[0] for r in _replies(c, 2)] == [250, 250]
        for p in pieces:
            c.send(b"BDAT %d\r\n" % len(p) + p)
            code, text = c.read_reply()
            assert code == 250 and "2.0.0" in text, text
        code, text = c.cmd("BDAT 0 LAST")  # RFC 3030 §2: a zero-length LAST chunk ends the message
        assert code == 250 and "delivered" in text, text
        c.cmd("QUIT")
    [stored] = _stored(n)
    assert stored.endswith(b"\r\n\r\n" + MSG.split(b"\r\n\r\n", 1)[1])


def test_same_message_by_data_and_by_bdat_is_stored_alike_with_the_same_traced_size(node_factory):
    n = node_factory()
    body = MSG.replace(b"\r\n.", b"\r\n..")
    with _open(n) as c:
        c.send(_envelope() + b"DATA\r\n")
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 354]
        c.send(body + b".\r\n")
        assert c.read_reply()[0] == 250
        c.send(_envelope() + b"BDAT %d LAST\r\n" % len(MSG) + MSG)
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        c.cmd("QUIT")
    by_data, by_bdat = _stored(n)
    assert by_data.split(b"Subject: chunked", 1)[1] == by_bdat.split(b"Subject: chunked", 1)[1]
    # The Received field differs only in its id and time: same length, same protocol words.
    assert len(by_data) == len(by_bdat) and by_data.count(b"with ESMTPS") == by_bdat.count(b"with ESMTPS") == 1
    n.trace.flush()
    sizes = [r["size"] for r in n.trace.search(limit=10) if r.get("size")]
    assert len(sizes) == 2 and sizes[0] == sizes[1], sizes


def test_bdat_before_mail_or_rcpt_is_503_and_its_bytes_are_consumed(node_factory):
    n = node_factory()
    evil = b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\n"
    with _open(n) as c:
        c.send(b"BDAT %d LAST\r\n" % len(evil) + evil + b"NOOP\r\n")
        code, text = c.read_reply()
        assert code == 503 and "MAIL" in text, text
        assert c.read_reply()[0] == 250  # the NOOP: the smuggled commands were never read as commands
        c.send(b"MAIL FROM:<a@fabrikam.test>\r\nBDAT %d\r\n" % len(evil) + evil + b"RSET\r\n")
        assert [r[0] for r in _replies(c, 3)] == [250, 503, 250]  # no RCPT yet
        c.cmd("QUIT")
    assert _stored(n, "bob@contoso.test") == [] and _stored(n) == []
    n.trace.flush()
    assert all(r["sender"] != "ceo@bank.example" for r in n.trace.search(limit=100))


SMUGGLED = b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n"


def test_a_chunk_with_the_data_terminator_and_a_second_transaction_is_one_message(node_factory):
    n = node_factory()
    content = b"Subject: s\r\n\r\nbody\r\n.\r\n" + SMUGGLED
    with _open(n) as c:
        c.send(_envelope() + b"BDAT %d LAST\r\n" % len(content) + content)
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        assert c.cmd("NOOP")[0] == 250
        c.cmd("QUIT")
    [stored] = _stored(n)
    assert stored.endswith(b"\r\n\r\nbody\r\n.\r\n" + SMUGGLED)  # the dot lines are text, not unstuffed
    assert _stored(n, "bob@contoso.test") == []
    n.trace.flush()
    assert all(r["sender"] != "ceo@bank.example" for r in n.trace.search(limit=100))


@pytest.mark.parametrize("seq", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n"], ids=repr)
def test_bare_cr_or_lf_in_a_chunk_is_refused_like_data(node_factory, seq):
    n = node_factory()
    content = b"Subject: s\r\n\r\nbody" + seq + SMUGGLED
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 10\r\n" + content[:10] + b"BDAT %d LAST\r\n" % (len(content) - 10) + content[10:])
        replies = _replies(c, 4)
        assert [r[0] for r in replies] == [250, 250, 250, 550] and "5.6.0" in replies[3][1], replies
        assert c.cmd("NOOP")[0] == 250
        c.cmd("QUIT")
    assert _stored(n) == [] and _stored(n, "bob@contoso.test") == []


def test_a_cr_ending_the_last_chunk_is_a_bare_cr_and_a_last_line_without_crlf_gets_one(node_factory):
    n = node_factory()
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 19 LAST\r\nSubject: x\r\n\r\nbody\r")
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 550]
        c.send(_envelope() + b"BDAT 18 LAST\r\nSubject: x\r\n\r\nbody")
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        c.cmd("QUIT")
    [stored] = _stored(n)
    assert stored.endswith(b"Subject: x\r\n\r\nbody\r\n")  # as DATA would have stored it


def test_quit_inside_a_chunk_is_data(node_factory):
    n = node_factory()
    content = b"Subject: q\r\n\r\nQUIT\r\nRSET\r\n"
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 16\r\n" + content[:16])  # the chunk ends inside "QUIT"
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        c.send(b"BDAT %d LAST\r\n" % (len(content) - 16) + content[16:])
        code, text = c.read_reply()
        assert code == 250 and "delivered" in text, text
        assert c.cmd("NOOP")[0] == 250
        c.cmd("QUIT")
    [stored] = _stored(n)
    assert stored.endswith(b"\r\n\r\nQUIT\r\nRSET\r\n")


def test_a_chunk_over_the_size_limit_is_552_consumed_and_the_transaction_needs_rset(node_factory):
    n = node_factory(mailbox={"limits": {"max_message_size": 4000}})
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 3000\r\n" + b"Subject: big\r\n\r\n" + b"x" * 2984)
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        # 3000 + 1500 > 4000: refused before a byte is kept; the 1500 bytes are read and dropped,
        # a "MAIL FROM" among them included.
        c.send(b"BDAT 1500 LAST\r\n" + (SMUGGLED + b"y" * 1500)[:1500])
        code, text = c.read_reply()
        assert code == 552 and "5.3.4" in text, text
        c.send(b"BDAT 5 LAST\r\nhello")  # RFC 3030: no more chunks for a failed transaction
        assert c.read_reply()[0] == 503
        assert c.cmd("DATA")[0] == 503
        assert c.cmd("RSET")[0] == 250
        c.send(_envelope() + b"BDAT %d LAST\r\n" % len(MSG) + MSG)  # the session goes on
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        # One chunk alone above the limit, with the next command in the same write.
        c.send(_envelope() + b"BDAT 4001 LAST\r\n" + b"z" * 4001 + b"RSET\r\n")
        assert [r[0] for r in _replies(c, 4)] == [250, 250, 552, 250]
        c.cmd("QUIT")
    assert len(_stored(n)) == 1 and _stored(n, "bob@contoso.test") == []


@pytest.mark.parametrize("arg", ["", "12x LAST", "-1", "+5", "1e3", "0x10", "99999999999999999999999",
                                 "10 LAST extra", "10 FIRST", "10\tLAST"])
def test_a_size_that_cannot_be_read_is_501_and_the_session_ends(node_factory, arg):
    n = node_factory()
    with _open(n) as c:
        c.send(_envelope())
        _replies(c, 2)
        c.send(f"BDAT {arg}\r\n".encode() + b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@contoso.test>\r\n")
        code, text = c.read_reply()
        assert code == 501, text
        assert c.closed()  # nothing after an unknown count can be told from a command
    n.trace.flush()
    assert all(r["sender"] != "ceo@bank.example" for r in n.trace.search(limit=100))


def test_rset_between_chunks_voids_the_message(node_factory):
    n = node_factory()
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 20\r\n" + MSG[:20] + b"RSET\r\nBDAT %d LAST\r\n" % (len(MSG) - 20) + MSG[20:])
        assert [r[0] for r in _replies(c, 5)] == [250, 250, 250, 250, 503]
        c.send(_envelope() + b"BDAT %d LAST\r\n" % len(MSG) + MSG)
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        c.cmd("QUIT")
    [stored] = _stored(n)  # only the second
    assert stored.endswith(MSG.split(b"\r\n\r\n", 1)[1])


def test_data_or_rcpt_after_bdat_in_one_transaction_is_503(node_factory):
    n = node_factory()
    with _open(n) as c:
        c.send(_envelope() + b"BDAT 20\r\n" + MSG[:20])
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        assert c.cmd("DATA")[0] == 503
        assert c.cmd("RCPT TO:<bob@contoso.test>")[0] == 503
        c.send(b"BDAT %d LAST\r\n" % (len(MSG) - 20) + MSG[20:])  # the sequence itself is still open
        assert c.read_reply()[0] == 250
        c.cmd("QUIT")
    assert len(_stored(n)) == 1 and _stored(n, "bob@contoso.test") == []


def test_no_250_to_bdat_last_until_the_directory_fsync_returned(node_factory, dns, monkeypatch):
    """DATA's durability test (server/test_hot_path.py), by BDAT LAST."""
    import mxgate.durable as durable

    n = node_factory(dns={"servers": [dns.address]})
    entered, release = threading.Event(), threading.Event()
    real_sync = durable.sync_directory

    def held_sync(path):
        if path.name == "new":
            entered.set()
            assert release.wait(20)
        real_sync(path)

    monkeypatch.setattr(durable, "sync_directory", held_sync)
    with _open(n) as c:
        try:
            c.send(_envelope() + b"BDAT %d LAST\r\n" % len(MSG) + MSG)
            assert entered.wait(20)
            for _ in range(3):
                n.call(asyncio.sleep(0))
            poller = select.poll()
            poller.register(c.sock, select.POLLIN)
            pending = c.sock.pending() if hasattr(c.sock, "pending") else 0
            # Not even the MAIL and RCPT replies: they go out with the message's, in one write.
            assert not poller.poll(0) and not pending
        finally:
            release.set()
        assert [r[0] for r in _replies(c, 3)] == [250, 250, 250]
        c.cmd("QUIT")
    assert len(_stored(n)) == 1


@pytest.mark.parametrize("envelope", [True, False], ids=["kept", "refused-and-discarded"])
def test_a_chunk_trickling_below_the_minimum_rate_ends_the_session_as_data_does(node_factory, envelope):
    """RFC 5321 §4.5.3.2.6 in spirit: each chunk, kept or read only to be dropped, gets DATA's minimum rate."""
    n = node_factory(mailbox={"limits": {"data_rate_grace": 0.5, "min_data_rate": 10_000, "command_timeout": 1.0}})
    with _open(n) as c:
        if envelope:
            c.send(_envelope())
            assert [r[0] for r in _replies(c, 2)] == [250, 250]
        c.send(b"BDAT 1000000 LAST\r\nSubject: slow\r\n")
        code, text = c.read_reply()  # nothing more sent
        assert code == 421 and "rate" in text.lower(), text
        assert c.closed()
    assert _stored(n) == []


def test_a_chunk_sent_to_a_session_refused_at_connect_is_read_not_obeyed(node_factory):
    """RFC 5321 §3.1: after a 554 greeting everything but QUIT gets 503; a BDAT's bytes are still
    read by count, so a QUIT inside them is data and the 503s stay in step."""
    from rig import ATTACKER

    n = node_factory(mailbox={"reject_stage": "connect"})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        assert c.greeting()[0] == 554
        c.send(b"BDAT 12\r\nQUIT\r\nRSET\r\nNOOP\r\n")
        assert [r[0] for r in _replies(c, 2)] == [503, 503]
        assert c.cmd("QUIT")[0] == 221


# --- the reader, without a socket --------------------------------------------------------------

def test_an_empty_line_split_across_reads_ends_the_header_for_data_too():
    """A read that ended right after the header's last CRLF, with body bytes behind it, hid the
    empty line from the header count, so a body over 100 KB was refused as "header too big"."""
    body = (b"y" * 900 + b"\r\n") * 200
    r = DataReader(10**7)
    r.feed(b"Subject: x\r\n\r\nBBBB")
    _, result = r.feed(b"B\r\n" + body + b".\r\n")
    assert result.problem is None and result.size == len(b"Subject: x\r\n\r\nBBBBB\r\n" + body)
    c = ChunkReader(10**7)
    c.feed_chunk(b"Subject: x\r\n\r\nBBBB")
    c.feed_chunk(b"B\r\n" + body)
    _, result = c.finish()
    assert result.problem is None


def test_chunk_reader_applies_data_rules_without_unstuffing():
    c = ChunkReader(10**7)
    out = c.feed_chunk(b"Subject: x\r\n\r\n..a\r\n.\r\nb") + c.finish()[0]
    assert out == b"Subject: x\r\n\r\n..a\r\n.\r\nb\r\n"
    long = ChunkReader(10**7)
    long.feed_chunk(b"Subject: x\r\n\r\n" + b"a" * 1200)
    assert long.finish()[1].problem == "line-too-long-data"
    empty = ChunkReader(10**7)
    assert empty.finish() [1].size == 0


# --- our relay client against our own server ---------------------------------------------------

def test_the_relay_client_sends_bdat_last_to_our_mailbox_and_the_message_arrives_exactly(node_factory, monkeypatch):
    from mxgate.queue.outbound import tls_context_for
    from mxgate.queue.relay import POOL, RelaySettings, relay
    from mxgate.queue.smtpclient import SmtpClient

    chunked = []
    real = SmtpClient.chunked_transaction

    async def spy(self, *args, **kwargs):
        chunked.append(self.supports("PIPELINING"))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SmtpClient, "chunked_transaction", spy)
    n = node_factory()
    settings = RelaySettings((f"127.0.0.1:{n.port()}",), tls_context_for("encryption_only", None),
                             source_address=GATEWAY, helo="gw.contoso.test")
    message = MSG + b".\r\n" + SMUGGLED

    async def twice():
        first = await relay(settings, "a@fabrikam.test", ["alice@contoso.test", "nobody@contoso.test"], message)
        second = await relay(settings, "a@fabrikam.test", ["alice@contoso.test"], message)  # the pooled session
        POOL.close_for_this_loop()
        return first, second

    first, second = asyncio.run(twice())
    assert [o.state for o in first.outcomes] == ["delivered", "failed"] and first.tls
    assert [o.state for o in second.outcomes] == ["delivered"]
    assert chunked == [True, True]
    stored = _stored(n)
    assert len(stored) == 2 and all(s.endswith(b"\r\n\r\n" + message.split(b"\r\n\r\n", 1)[1]) for s in stored)
    assert _stored(n, "bob@contoso.test") == []


def test_a_big_message_by_bdat_is_spooled_to_disk_and_arrives_exactly(node_factory, monkeypatch):
    """1.5 MB: past SPILL_TO_DISK on the server (the chunk streams to the spool temp file, as
    DATA's body does) and past the client's join size (commands and message as two buffers)."""
    from mxgate.queue.outbound import tls_context_for
    from mxgate.queue.relay import POOL, RelaySettings, relay
    from mxgate.server import session as session_module
    from mxgate.smtp.limits import SPILL_TO_DISK

    spilled = []
    real_write = session_module.MessageBody.write

    def write(self, chunk):
        real_write(self, chunk)
        spilled.append(self._file is not None)

    n = node_factory()
    line = b"0123456789" * 7 + b"\r\n"
    message = b"Subject: big\r\nFrom: a@fabrikam.test\r\n\r\n" + line * (1_500_000 // len(line))
    assert len(message) > SPILL_TO_DISK
    settings = RelaySettings((f"127.0.0.1:{n.port()}",), tls_context_for("encryption_only", None),
                             source_address=GATEWAY, helo="gw.contoso.test")

    async def once():
        result = await relay(settings, "a@fabrikam.test", ["alice@contoso.test"], message)
        POOL.close_for_this_loop()
        return result

    monkeypatch.setattr(session_module.MessageBody, "write", write)
    result = asyncio.run(once())
    assert [o.state for o in result.outcomes] == ["delivered"]
    assert spilled and spilled[-1]  # the body went to the spool temp file
    [stored] = _stored(n)
    assert stored.endswith(b"\r\n\r\n" + message.split(b"\r\n\r\n", 1)[1])
