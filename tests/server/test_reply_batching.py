"""Replies to pipelined commands leave in one write (RFC 2920 §3.1: a server may hold replies
while more commands are buffered), but never one the client must see first: a reply is always
sent before the session waits for input or for a hook. Real loopback sockets; the server
transport's writes are counted."""

from __future__ import annotations

import asyncio

from rig import read_reply, until_state
from mxgate.config.node import LimitsSection
from mxgate.server.listener import Listener, Role
from mxgate.verdict import accept


class GatedRole(Role):
    """MAIL and RCPT for `later@` answer when the test releases them."""

    name = "gated"
    hostname = "mx.gated.test"

    def __init__(self) -> None:
        self.mail_gate = asyncio.Event()
        self.rcpt_gate = asyncio.Event()
        self.rcpt_asked = asyncio.Event()

    def on_mail(self, s, sender, params):
        return self._mail()

    async def _mail(self):
        await self.mail_gate.wait()
        return accept("sender-ok")

    def on_rcpt(self, s, rcpt):
        if rcpt.local == "later":
            return self._rcpt()
        return accept("recipient-ok"), None

    async def _rcpt(self):
        self.rcpt_asked.set()
        await self.rcpt_gate.wait()
        return accept("recipient-ok"), None


class CountingTransport:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def _session(role):
    listener = Listener(role, LimitsSection(), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    host, port = listener.addresses[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert (await read_reply(reader)).startswith("220")
    writer.write(b"EHLO client.test\r\n")
    assert (await read_reply(reader)).startswith("250")
    (session,) = listener.sessions
    counting = session.transport = CountingTransport(session.transport)
    return listener, reader, writer, session, counting


async def test_replies_held_by_a_late_hook_leave_with_the_pipelined_ones_in_one_write():
    role = GatedRole()
    listener, reader, writer, session, counting = await _session(role)
    try:
        writer.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<now@x.test>\r\nDATA\r\n")
        await writer.drain()
        await until_state(lambda: b"DATA\r\n" in session._buf)  # both queued behind MAIL's hook
        assert counting.writes == []
        role.mail_gate.set()
        assert (await read_reply(reader)).startswith("250 2.1.0")
        assert (await read_reply(reader)).startswith("250 2.1.5")
        assert (await read_reply(reader)).startswith("354")
        assert len(counting.writes) == 1  # MAIL's 250, RCPT's 250 and the 354 together
        assert counting.writes[0].count(b"\r\n") == 3
        writer.write(b"hello\r\n.\r\nQUIT\r\n")
        writer.close()
    finally:
        await listener.stop()


async def test_a_reply_is_sent_before_the_session_waits_on_the_next_hook():
    role = GatedRole()
    listener, reader, writer, session, counting = await _session(role)
    try:
        writer.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<later@x.test>\r\n")
        await writer.drain()
        await until_state(lambda: b"later@x.test" in session._buf)
        role.mail_gate.set()
        # RCPT's hook now waits: MAIL's 250 must reach the client without waiting for it.
        assert (await read_reply(reader)).startswith("250 2.1.0")
        assert role.rcpt_asked.is_set() and not role.rcpt_gate.is_set()
        role.rcpt_gate.set()
        assert (await read_reply(reader)).startswith("250 2.1.5")
        assert len(counting.writes) == 2
        writer.close()
    finally:
        await listener.stop()


async def test_a_client_sending_one_command_at_a_time_gets_each_reply():
    role = GatedRole()
    role.mail_gate.set()
    role.rcpt_gate.set()
    listener, reader, writer, session, counting = await _session(role)
    try:
        for command, code in ((b"MAIL FROM:<a@b.test>", "250"), (b"RCPT TO:<later@x.test>", "250"),
                              (b"RCPT TO:<now@x.test>", "250"), (b"DATA", "354")):
            writer.write(command + b"\r\n")  # the next one only after this reply
            assert (await read_reply(reader)).startswith(code)
        assert len(counting.writes) == 4
        writer.close()
    finally:
        await listener.stop()


class GatedMessageRole(Role):
    """Keeps each message's bytes; a message is answered when the test releases it."""

    name = "gated-message"
    hostname = "mx.gated.test"

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.message_gate = asyncio.Event()
        self.message_asked = asyncio.Event()

    async def on_message(self, s, txn, body):
        self.message_asked.set()
        await self.message_gate.wait()
        self.stored.append(body.getvalue())
        return accept("ok")


async def test_a_pipelined_bdat_last_is_answered_in_one_write_after_its_message_and_before_the_next():
    """What the gateway's relay sends (RFC 3030 §4.2 with RFC 2920): MAIL, RCPT, BDAT LAST and the
    chunk in one write. The three replies leave together, in order, only once the message's verdict
    is in (nothing before its time); a transaction pipelined behind the chunk is answered after them."""
    role = GatedMessageRole()
    listener, reader, writer, session, counting = await _session(role)
    message = b"Subject: x\r\n\r\nline\r\n.\r\nQUIT\r\n"
    try:
        writer.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT %d LAST\r\n" % len(message) + message
                     + b"MAIL FROM:<c@d.test>\r\n")
        await writer.drain()
        await role.message_asked.wait()
        assert counting.writes == []  # MAIL's and RCPT's replies wait for the message's
        role.message_gate.set()
        replies = [await read_reply(reader) for _ in range(4)]
        assert [r[:9] for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.1.0"]
        assert len(counting.writes) == 2
        assert counting.writes[0].count(b"\r\n") == 3 and counting.writes[1].count(b"\r\n") == 1
        assert role.stored == [message]
        writer.close()
    finally:
        await listener.stop()
