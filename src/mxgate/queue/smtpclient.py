"""The relay's SMTP client session: one connection, replies read from our own buffer, commands pipelined.

Owns: connecting (optionally from a source address), the greeting, EHLO and its keywords,
STARTTLS (plaintext the server sent ahead of the handshake is discarded, CVE-2011-0411), and one
mail transaction — MAIL, every RCPT and DATA in one write when the server offers PIPELINING
(RFC 2920 §3.1), one command at a time when it does not — then the dot-stuffed body (RFC 5321
§4.5.2), or, when the server offers CHUNKING (RFC 3030), `BDAT <size> LAST` and the message as it
is, in the same write as MAIL and RCPT (no 354 round trip, no stuffing on our side nor dot scan on
the server's); RSET and QUIT. Every reply is awaited with the command timeout. It returns replies;
whether a reply means delivered, deferred or failed is queue/relay.py's decision.

Why not aiosmtplib: it awaits each command's reply before the next command may be written (it
drops a reply that arrives early), so a message cost four round trips and four reply parses
through its generic machinery; this is the gateway's hot path (issue 19).

Must not know: the session pool, hosts, TLS policy, outcomes (queue/relay.py).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; allow slack for broken servers, but
# never buffer an unbounded reply.
MAX_REPLY = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SmtpError(Exception):
    """The session failed: closed, timed out, or the server's bytes are not SMTP replies."""


class ReplyError(SmtpError):
    """An unexpected reply to a command that has only one good answer (greeting, EHLO, STARTTLS)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class Reply:
    code: int
    message: str  # the lines' texts joined by "\n", without the codes


@dataclass
class Transaction:
    """What one MAIL/RCPT/DATA exchange got back. `error` is set when the session broke; `body_sent`
    says whether that was after the message was written (it may then have arrived)."""

    mail: Reply | None = None
    rcpts: list[Reply] = field(default_factory=list)
    data: Reply | None = None  # the reply to DATA (354 when the body was then sent); None with BDAT
    done: Reply | None = None  # the reply after the body (to BDAT LAST when chunked)
    body_sent: bool = False
    chunked: bool = False  # sent as one BDAT LAST chunk (RFC 3030)
    error: SmtpError | None = None


def has_control(address: str) -> bool:
    """A character that would end or split a command line (CR/LF injection, CVE-2026-53533 class)."""
    return _CONTROL.search(address) is not None


def stuffed(data: bytes) -> bytes:
    """The DATA bytes of a CRLF message: a leading "." doubled on every line (RFC 5321 §4.5.2),
    a last line ended, then the terminating ".". The caller has refused bare CR/LF."""
    out = data.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


class Outgoing:
    """A message to send: its bytes as they are (CRLF only; the caller refused bare CR/LF), for
    BDAT, and its DATA form (`stuffed`), made on first use and kept for the next host or
    transaction, so a server that offers CHUNKING costs no stuffing copy at all."""

    __slots__ = ("raw", "_stuffed")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._stuffed: bytes | None = None

    @property
    def stuffed(self) -> bytes:
        if self._stuffed is None:
            self._stuffed = stuffed(self.raw)
        return self._stuffed


# Up to this size the commands and the chunk are joined into one bytes (one TLS record, one copy
# of a small message); above it they are handed over as two buffers, so a big message is not copied.
_JOIN_BELOW = 256 * 1024


class _Protocol(asyncio.Protocol):
    """Collects bytes and wakes the one reader waiting for them."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self):
        self.lost = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _timed_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(SmtpError("timed out waiting for the server's reply"))


def _envelope(sender: str, mail_params: str, recipients: list[str], encoding: str) -> tuple[bytes, list[bytes]]:
    """The MAIL command and one RCPT command per recipient (RFC 5321 §4.1.1.2, §4.1.1.3)."""
    mail = f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}\r\n".encode(encoding)
    return mail, [f"RCPT TO:<{r}>\r\n".encode(encoding) for r in recipients]


class SmtpClient:
    """One client session. Use `connect()`; not safe for two transactions at once (the pool
    hands a session to one relay at a time)."""

    def __init__(self, protocol: _Protocol, timeout: float) -> None:
        self._p = protocol
        self.timeout = timeout
        self.extensions: dict[str, str] = {}  # EHLO keyword (upper case) → its parameters
        self._loop = asyncio.get_running_loop()

    # --- lifetime --------------------------------------------------------------------------
    @classmethod
    async def connect(cls, host: str, port: int, *, source_address: str = "", connect_timeout: float = 10.0,
                      timeout: float = 120.0) -> "SmtpClient":
        """Connected with the 220 greeting read (connect_timeout covers both); ReplyError for another greeting."""
        loop = asyncio.get_running_loop()
        protocol = _Protocol()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: protocol, host, port,
                                                          local_addr=(source_address, 0) if source_address else None),
                                   connect_timeout)
        except asyncio.TimeoutError:
            raise SmtpError(f"timed out connecting to {host}:{port}") from None
        client = cls(protocol, timeout)
        try:
            greeting = await client._reply(connect_timeout)
        except BaseException:
            client.close()
            raise
        if greeting.code != 220:
            client.close()
            raise ReplyError(greeting.code, greeting.message)
        return client

    @property
    def is_connected(self) -> bool:
        t = self._p.transport
        return not self._p.lost and t is not None and not t.is_closing()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        t = self._p.transport
        return t.get_extra_info("ssl_object") if t is not None else None

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.abort() if self._p.lost else self._p.transport.close()
        self._p.lost = True

    async def quit(self, timeout: float = 2.0) -> None:
        """QUIT, its reply awaited at most `timeout`, then the connection closed whatever happened."""
        try:
            if self.is_connected:
                self._write(b"QUIT\r\n")
                await self._reply(timeout)
        except (SmtpError, OSError):
            pass
        finally:
            self.close()

    # --- commands --------------------------------------------------------------------------
    async def ehlo(self, name: str) -> None:
        self._write(f"EHLO {name}\r\n".encode("ascii"))
        reply = await self._reply()
        if reply.code != 250:
            raise ReplyError(reply.code, reply.message)
        extensions = {}
        for line in reply.message.split("\n")[1:]:  # the first line is the server's name
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                extensions[keyword.upper()] = params
        self.extensions = extensions

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """RFC 3207: STARTTLS, 220, the handshake (bounded by the command timeout). The caller
        sends EHLO again: what the server said before TLS no longer counts (§4.2)."""
        self._write(b"STARTTLS\r\n")
        reply = await self._reply()
        if reply.code != 220:
            raise ReplyError(reply.code, reply.message)
        self._p.buffer.clear()  # CVE-2011-0411: nothing sent in the clear may pass as a TLS-time reply
        try:
            transport = await self._loop.start_tls(self._p.transport, self._p, context, server_hostname=server_hostname,
                                                   ssl_handshake_timeout=self.timeout)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            self.close()
            raise SmtpError(f"TLS handshake failed: {exc.__class__.__name__}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self._p.transport = transport

    async def rset(self) -> bool:
        """RFC 5321 §4.1.1.5: end the transaction; True when the session can carry the next one."""
        try:
            self._write(b"RSET\r\n")
            return (await self._reply()).code == 250
        except (SmtpError, OSError):
            return False

    async def rcpt_probe(self, sender: str, address: str) -> Reply:
        """MAIL FROM:<sender> then RCPT TO:<address>, lock-step; the RCPT reply (a callahead)."""
        t = await self.transaction(sender, "", [address], None)
        if t.error is not None:
            raise t.error
        if t.mail is not None and t.mail.code // 100 != 2:
            raise ReplyError(t.mail.code, t.mail.message)
        return t.rcpts[0]

    async def transaction(self, sender: str, mail_params: str, recipients: list[str], body: bytes | Outgoing | None,
                          encoding: str = "ascii") -> Transaction:
        """One mail transaction. `body` is an Outgoing message, or `stuffed()` bytes (DATA only);
        None stops after the RCPTs (a callahead). An Outgoing to a server offering CHUNKING goes
        as `BDAT <size> LAST` (chunked_transaction); otherwise DATA. With PIPELINING, MAIL, the RCPTs and DATA go in one write and their replies
        are read in order (RFC 2920 §3.1); without, each command waits for its reply and DATA is
        only sent when a recipient was accepted. The body is only written after a 354 and when a
        recipient was accepted; a 354 with none (a server that should have said 554, RFC 2920
        §3.1) gets an empty message ended at once. Never raises for the session's trouble:
        `error` is set."""
        if isinstance(body, Outgoing):
            if self.supports("CHUNKING"):
                return await self.chunked_transaction(sender, mail_params, recipients, body.raw, encoding)
            body = body.stuffed
        t = Transaction()
        mail, rcpts = _envelope(sender, mail_params, recipients, encoding)
        try:
            if self.supports("PIPELINING"):
                self._write(b"".join([mail, *rcpts, b"DATA\r\n" if body is not None else b""]))
                t.mail = await self._reply()
                for _ in rcpts:
                    t.rcpts.append(await self._reply())
                if body is not None:
                    t.data = await self._reply()
            else:
                if not await self._envelope_in_step(t, mail, rcpts) or body is None:
                    return t
                self._write(b"DATA\r\n")
                t.data = await self._reply()
            if t.data is not None and t.data.code == 354:
                accepted = t.mail.code // 100 == 2 and any(r.code // 100 == 2 for r in t.rcpts)
                self._write(body if accepted else b".\r\n")
                t.body_sent = accepted
                t.done = await self._reply()
        except SmtpError as exc:
            t.error = exc
        except OSError as exc:
            t.error = SmtpError(f"{exc.__class__.__name__}: {exc}")
        return t

    async def _envelope_in_step(self, t: "Transaction", mail: bytes, rcpts: list[bytes]) -> bool:
        """Without PIPELINING: MAIL, then each RCPT, each waiting for its reply (RFC 5321 §3.3);
        True when the sender and at least one recipient were accepted (the message may follow)."""
        self._write(mail)
        t.mail = await self._reply()
        if t.mail.code // 100 != 2:
            return False
        for cmd in rcpts:
            self._write(cmd)
            t.rcpts.append(await self._reply())
        return any(r.code // 100 == 2 for r in t.rcpts)

    async def chunked_transaction(self, sender: str, mail_params: str, recipients: list[str], raw: bytes,
                                  encoding: str = "ascii") -> Transaction:
        """RFC 3030: the message as one `BDAT <size> LAST` chunk. With PIPELINING, MAIL, the RCPTs,
        the BDAT line and the message go in one write (§4.2; a server must read the chunk even if
        it refuses every recipient, and answers BDAT with 503 then); without, each command waits
        for its reply and BDAT is only sent when a recipient was accepted. `body_sent` is set once
        a recipient's acceptance has been read (only then can the message have been delivered)."""
        t = Transaction(chunked=True)
        mail, rcpts = _envelope(sender, mail_params, recipients, encoding)
        bdat = b"BDAT %d LAST\r\n" % len(raw)
        try:
            if self.supports("PIPELINING"):
                self._write_with(b"".join([mail, *rcpts, bdat]), raw)
                t.mail = await self._reply()
                for _ in rcpts:
                    t.rcpts.append(await self._reply())
                t.body_sent = t.mail.code // 100 == 2 and any(r.code // 100 == 2 for r in t.rcpts)
                t.done = await self._reply()
            else:
                if not await self._envelope_in_step(t, mail, rcpts):
                    return t
                self._write_with(bdat, raw)
                t.body_sent = True
                t.done = await self._reply()
        except SmtpError as exc:
            t.error = exc
        except OSError as exc:
            t.error = SmtpError(f"{exc.__class__.__name__}: {exc}")
        return t

    # --- wire ------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self.is_connected:
            raise SmtpError("connection closed by the server")
        self._p.transport.write(data)

    def _write_with(self, head: bytes, raw: bytes) -> None:
        """Commands and then a chunk, in one write: joined while small, else as two buffers."""
        if len(raw) < _JOIN_BELOW:
            self._write(head + raw)
            return
        if not self.is_connected:
            raise SmtpError("connection closed by the server")
        self._p.transport.writelines((head, raw))

    async def _reply(self, timeout: float | None = None) -> Reply:
        """The next complete reply (RFC 5321 §4.2: "xyz-" lines continue, "xyz " or "xyz" ends),
        waiting at most `timeout` (the command timeout) for all of it: a server dripping a byte
        at a time does not restart the clock."""
        p = self._p
        deadline = None
        while True:
            reply = self._parse(p.buffer)
            if reply is not None:
                return reply
            if p.lost:
                raise SmtpError("connection closed by the server")
            if len(p.buffer) > MAX_REPLY:
                self.close()
                raise SmtpError("reply too long")
            if deadline is None:
                deadline = self._loop.time() + (self.timeout if timeout is None else timeout)
            waiter = p.waiter = self._loop.create_future()
            timer = self._loop.call_at(deadline, _timed_out, waiter)
            try:
                await waiter
            except BaseException:  # timed out, or the caller gave up (a cut-through's budget): the
                self.close()       # session's state is unknown, it never carries another transaction
                raise
            finally:
                timer.cancel()
                p.waiter = None

    def _parse(self, buffer: bytearray) -> Reply | None:
        """Take one whole reply off the front of `buffer`, or None when it has not all arrived.
        Lines end in LF (a CR before it is dropped); anything that is not a reply line breaks the session."""
        start = 0
        code = None
        texts = []
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                return None
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            head = line[:3]
            sep = line[3:4]
            if len(head) != 3 or not head.isdigit() or not b"200" <= head <= b"599" or sep not in (b"", b" ", b"-") \
                    or (code is not None and int(head) != code):
                self.close()
                raise SmtpError(f"malformed reply line: {line[:80]!r}")
            code = int(head)
            texts.append(line[4:].decode("utf-8", "replace"))
            if sep != b"-":
                del buffer[:start]
                return Reply(code, "\n".join(texts))
