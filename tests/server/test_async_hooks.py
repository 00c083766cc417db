"""A role hook may answer later: SmtpSession.wait is the one wait-then-resume path (no session
subclass). Real loopback socket, a role whose RCPT answer waits on an event the test controls:
pipelined commands stay queued in order, and a hook that fails answers 451 without its text."""

from __future__ import annotations

import asyncio

from rig import read_reply, until_state
from mxgate.config.node import LimitsSection
from mxgate.server.listener import Listener, Role
from mxgate.verdict import accept, reject


class SlowRole(Role):
    name = "slow"
    hostname = "mx.slow.test"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.asked: list[str] = []

    def on_rcpt(self, s, rcpt):
        self.asked.append(str(rcpt))
        if rcpt.local == "later":
            return self._later(rcpt)
        if rcpt.local == "broken":
            return self._broken()
        return accept("recipient-ok"), None

    async def _later(self, rcpt):
        await self.release.wait()
        return reject("unknown-recipient", "asked downstream"), None

    async def _broken(self):
        raise RuntimeError("secret internal detail")


async def test_pipelined_commands_wait_for_a_late_hook_and_keep_their_order():
    role = SlowRole()
    listener = Listener(role, LimitsSection(), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    try:
        host, port = listener.addresses[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        assert (await read_reply(reader)).startswith("220")
        writer.write(b"EHLO client.test\r\n")
        assert (await read_reply(reader)).startswith("250")
        # One write, as a pipelining client sends it (RFC 2920): the second RCPT must not be
        # answered before the first, whose hook is still waiting.
        writer.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<later@x.test>\r\nRCPT TO:<now@x.test>\r\n")
        await writer.drain()
        assert (await read_reply(reader)).startswith("250 2.1.0")
        (session,) = listener.sessions
        await until_state(lambda: b"now@x.test" in session._buf)  # received, and waiting in the buffer
        assert role.asked == ["later@x.test"] and not reader._buffer  # not asked, not answered
        role.release.set()
        assert (await read_reply(reader)).startswith("550 5.1.1")
        assert (await read_reply(reader)).startswith("250 2.1.5")
        assert role.asked == ["later@x.test", "now@x.test"]
        writer.write(b"RCPT TO:<broken@x.test>\r\n")
        broken = await read_reply(reader)
        assert broken.startswith("451 4.7.0") and "secret" not in broken  # a failing hook: retry later
        writer.write(b"QUIT\r\n")
        assert (await read_reply(reader)).startswith("221")
        writer.close()
    finally:
        await listener.stop(1.0)


class SlowGreeter(Role):
    name = "slow-greeter"
    hostname = "mx.slow.test"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.connects = 0

    def on_connect(self, s):
        self.connects += 1
        return self._after_lookup()

    async def _after_lookup(self):
        await self.release.wait()
        return accept("connect-ok")


async def test_the_greeting_waits_for_a_late_connect_hook_and_a_talker_is_still_a_pregreeter():
    role = SlowGreeter()
    listener = Listener(role, LimitsSection(), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    try:
        host, port = listener.addresses[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        await until_state(lambda: role.connects == 1)
        assert not reader._buffer  # no greeting while the role looks things up
        role.release.set()
        assert (await read_reply(reader)).startswith("220 mx.slow.test")
        writer.close()
        await until_state(lambda: not listener.sessions)  # the server saw that session end
        # A client that talks while the role is still looking things up is refused as a pregreeter
        # (RFC 5321 §4.3.1) once the lookup answers.
        role.release.clear()
        reader, writer = await asyncio.open_connection(host, int(port))
        await until_state(lambda: role.connects == 2)
        writer.write(b"EHLO early.test\r\n")
        await writer.drain()
        (session,) = listener.sessions
        await until_state(lambda: bytes(session._buf).startswith(b"EHLO"))
        role.release.set()
        assert (await read_reply(reader)).startswith("554 5.5.1")
        writer.close()
    finally:
        await listener.stop(1.0)
