"""A client that pipelines commands and never reads the replies (RFC 2920 §3.1: the client must
read them; a server need not keep reading its commands meanwhile). The server must not buffer
replies without bound: once its transport's write buffer is past the high-water mark it stops
reading commands until the client reads, then answers every one, in order. A session ended
while the peer reads nothing (a timeout's 421) is aborted, not left open waiting to flush.
Real loopback sockets against a Listener; the flood is EHLO, whose reply is ~20x its command."""

from __future__ import annotations

import asyncio
import socket

from rig import read_reply
from mxgate.config.node import LimitsSection
from mxgate.server.listener import Listener, Role

EHLO = b"EHLO flood.test\r\n"


async def _wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll state while the loop serves the session (the flood takes the loop a while)."""
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def _flooding_client(listener: Listener, count: int):
    host, port = listener.addresses[0].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client reads nothing anyway
    sock.connect((host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024 * 1024)
    writer.transport.pause_reading()  # a peer that never reads its replies
    assert (await read_reply_unpaused(reader, writer)).startswith("220")
    (session,) = listener.sessions
    writer.transport.pause_reading()
    writer.write(EHLO * count)  # ~1 MB of commands, ~20 MB of replies
    return reader, writer, session


async def _greeted(listener: Listener):
    """A client connected and greeted, and its server-side session."""
    host, port = listener.addresses[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert (await read_reply(reader)).startswith("220")
    (session,) = listener.sessions
    return reader, writer, session


async def read_reply_unpaused(reader, writer) -> str:
    writer.transport.resume_reading()
    return await read_reply(reader)


async def test_replies_a_client_does_not_read_stay_bounded_and_all_arrive_once_it_reads():
    listener = Listener(Role(), LimitsSection(), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    count = 60_000
    try:
        reader, writer, session = await _flooding_client(listener, count)
        # The server stops reading the client's commands...
        assert await _wait_for(lambda: session.transport is not None and not session.transport.is_reading())
        # ...with a bounded backlog of replies (not the ~20 MB a full read would produce).
        assert session.transport.get_write_buffer_size() < 1024 * 1024
        # The client reads: every command gets its reply, in order, and the session serves on.
        writer.transport.resume_reading()
        for _ in range(count):
            assert (await read_reply(reader)).startswith("250-")
        writer.write(b"NOOP\r\n")
        assert (await read_reply(reader)).startswith("250 2.0.0")
        writer.close()
    finally:
        await listener.stop()


async def test_a_client_that_pipelines_then_quits_and_only_then_reads_gets_every_reply():
    """QUIT behind a long pipelined run: the session ends, but what it answered still reaches a
    client that reads late (close, not abort, while the peer may yet read)."""
    listener = Listener(Role(), LimitsSection(), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    count = 60_000
    try:
        reader, writer, session = await _flooding_client(listener, 0)
        writer.write(EHLO * count + b"QUIT\r\n")
        assert await _wait_for(lambda: session.transport is not None and not session.transport.is_reading())
        writer.transport.resume_reading()
        for _ in range(count):
            assert (await read_reply(reader)).startswith("250-")
        assert (await read_reply(reader)).startswith("221")
        writer.close()
    finally:
        await listener.stop()


async def test_a_session_timed_out_while_its_peer_reads_nothing_is_aborted_not_left_open():
    """RFC 5321 §4.5.3.2.7: the command timeout ends the session (421); a peer that reads nothing
    would keep a close() that waits to flush open for ever, and its connection slot with it."""
    listener = Listener(Role(), LimitsSection(command_timeout=0.5), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    try:
        reader, writer, session = await _flooding_client(listener, 60_000)
        assert await _wait_for(lambda: session.transport is not None and not session.transport.is_reading())
        assert await _wait_for(lambda: session not in listener.sessions)
        assert listener.per_ip == {}
        writer.close()
    finally:
        await listener.stop()


class _PausingTransport:
    """The real transport, except that writing STARTTLS's 220 crosses the high-water mark, as it
    does when replies the client has not read yet fill the buffer."""

    def __init__(self, inner, session) -> None:
        self.inner, self.session = inner, session

    def write(self, data: bytes) -> None:
        self.inner.write(data)
        if b"220 2.0.0" in data:
            self.session.pause_writing()

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_flow_control_of_the_plain_transport_does_not_outlive_starttls(test_ca):
    """RFC 3207 §4.2: after the handshake the session starts afresh on the TLS transport; a pause
    the plaintext transport asked for (its resume now goes to the TLS layer) must not leave the
    session reading no command for ever."""
    import ssl

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(test_ca["server_cert"], test_ca["server_key"])
    listener = Listener(Role(), LimitsSection(), ssl_context=lambda: server_ctx)
    await listener.start(["127.0.0.1:0"])
    try:
        reader, writer, session = await _greeted(listener)
        session.transport = _PausingTransport(session.transport, session)
        writer.write(b"EHLO client.test\r\nSTARTTLS\r\n")
        assert (await read_reply(reader)).startswith("250")
        assert (await read_reply(reader)).startswith("220")
        await writer.start_tls(ssl.create_default_context(cafile=test_ca["ca"]), server_hostname="localhost")
        writer.write(b"EHLO client.test\r\n")
        assert (await asyncio.wait_for(read_reply(reader), 10)).startswith("250")
        writer.close()
    finally:
        await listener.stop()


class _NeverFlushingTransport:
    """The real transport, except that close() waits for ever, as it does for a peer that never
    reads the last replies (the rest of the write buffer is never sent)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.closing = False

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing or self.inner.is_closing()

    def get_write_buffer_size(self) -> int:
        return 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_a_closed_session_whose_last_replies_are_never_read_is_released_after_a_timeout():
    listener = Listener(Role(), LimitsSection(command_timeout=0.5), ssl_context=lambda: None)
    await listener.start(["127.0.0.1:0"])
    try:
        reader, writer, session = await _greeted(listener)
        session.transport = _NeverFlushingTransport(session.transport)
        writer.write(b"QUIT\r\n")
        assert await _wait_for(lambda: session.transport.closing)
        assert await _wait_for(lambda: session not in listener.sessions, timeout=10)
        writer.close()
    finally:
        await listener.stop()
