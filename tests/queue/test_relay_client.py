"""Issue 19: the relay's own pipelining SMTP client (queue/smtpclient.py) against a hostile or
broken downstream. Real loopback sockets and real TLS with the test CA: a scripted server on the
test's own event loop, so every "the server waits" is a state, not a clock.

What must hold whatever the server does: each recipient's outcome follows its own RCPT reply
(2xx delivered, 4xx deferred, 5xx failed, RFC 5321 §4.2.1); the body is only written after a 354
with a recipient accepted; a session that breaks before the body is retried on a fresh
connection only when it was a pooled idle one, and after the body the recipients are deferred
(the message may have arrived: a duplicate beats a loss); bytes arrive dot-stuffed and unchanged.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from mxgate.queue.outbound import tls_context_for
from mxgate.queue.relay import POOL, RelaySettings, relay
from mxgate.queue.smtpclient import stuffed

MESSAGE = b"From: a@contoso.test\r\nTo: b@fabrikam.test\r\nSubject: x\r\n\r\nhello\r\n"


class ScriptedMx:
    """A downstream whose replies the test sets. Records, per read from the connection, the
    command lines it carried (so a pipelined group is seen arriving in one write), and each body
    exactly as sent (dot-stuffed, up to and including the terminator)."""

    def __init__(self, cert: str, key: str, *, pipelining: bool = True, chunking: bool = False):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.pipelining = pipelining
        self.chunking = chunking  # offer CHUNKING (RFC 3030): chunks are read by count into `bodies`
        self.bdat_reply = b"250 2.0.0 stored\r\n"  # the reply to BDAT LAST (with a recipient)
        self.after_chunk = "reply"  # "drop": close after reading the LAST chunk, no reply
        self.chunk_with_command: list[bool] = []  # per BDAT: the whole chunk came in the read with its command
        self.rcpt: dict[str, bytes] = {}  # address → its reply (may be several lines)
        self.mail_reply = b"250 ok\r\n"
        self.data_reply = b"354 go\r\n"
        self.after_354 = "read"  # "read": take the body; "drop": close at once after 354
        self.done_reply: bytes | None = b"250 stored\r\n"  # None: never answer the body
        self.hold_until_data = False  # withhold every reply until the DATA line arrived
        self.after_220 = b""  # plaintext sent right behind STARTTLS's 220 (CVE-2011-0411)
        self.drip: float = 0.0  # > 0: the body's reply sent one byte per this many seconds
        self.dripped = 0
        self.chunks: list[list[str]] = []
        self.bodies: list[bytes] = []
        self.commands: list[str] = []
        self.sessions = 0
        self.transports: list = []
        self.server = None

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _MxProtocol(self), "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def drop_idle(self) -> None:
        for t in self.transports:
            t.close()

    async def stop(self) -> None:
        self.drop_idle()
        self.server.close()
        await self.server.wait_closed()


class _MxProtocol(asyncio.Protocol):
    def __init__(self, mx: ScriptedMx):
        self.mx, self.buf, self.in_data, self.body, self.rcpts = mx, b"", False, b"", 0
        self.bdat: tuple[int, bool] | None = None  # (size, last) of the chunk being read
        self.held: list[bytes] | None = None  # replies withheld (hold_until_data)
        self.upgrading = False

    def connection_made(self, transport):
        self.t = transport
        self.mx.sessions += 1
        self.mx.transports.append(transport)
        self.t.write(b"220 scripted ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.upgrading:  # TLS data may arrive before start_tls() has handed us its transport
            return
        lines = []
        while not self.t.is_closing():
            if self.bdat is not None:
                take = self.buf[: self.bdat[0] - len(self.body)]
                self.body, self.buf = self.body + take, self.buf[len(take):]
                if len(self.body) < self.bdat[0]:
                    break
                (_, last), self.bdat = self.bdat, None
                if not last:
                    self.reply(b"250 2.0.0 chunk\r\n")
                    continue
                if not self.rcpts:  # RFC 3030: the chunk is read, then refused
                    self.body = b""
                    self.reply(b"503 5.5.1 no valid recipients\r\n")
                    continue
                self.mx.bodies.append(self.body)
                self.body = b""
                if self.mx.after_chunk == "drop":
                    self.t.close()
                    return
                self.reply(self.mx.bdat_reply)
                continue
            if self.in_data:
                # A lone "." right after DATA ends an empty message; else <CRLF>.<CRLF> does.
                end = 3 if not self.body and self.buf.startswith(b".\r\n") else self.buf.find(b"\r\n.\r\n") + 5
                if end == 4:
                    self.body, self.buf = self.body + self.buf, b""
                    break
                self.mx.bodies.append(self.body + self.buf[:end])
                self.body, self.buf, self.in_data = b"", self.buf[end:], False
                if self.mx.drip:
                    asyncio.get_running_loop().create_task(self.drip(self.mx.done_reply))
                elif self.mx.done_reply is not None:
                    self.reply(self.mx.done_reply)
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            line, self.buf = self.buf[:end].decode("utf-8", "replace"), self.buf[end + 2:]
            lines.append(line)
            self.mx.commands.append(line)
            if self.command(line) == "tls":
                break
        if lines:
            self.mx.chunks.append(lines)

    def reply(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            return
        self.t.write(data)
        if data.startswith(b"421"):  # RFC 5321 §3.8: the server closes after a 421
            self.t.close()

    def command(self, line: str):
        verb = line[:4].upper()
        mx = self.mx
        if verb == "EHLO":
            tls = self.t.get_extra_info("ssl_object") is not None
            ext = [b"250-scripted", b"250-SMTPUTF8"] + ([b"250-PIPELINING"] if mx.pipelining else [])
            ext += [b"250-CHUNKING"] if mx.chunking else []
            ext += [b"250 8BITMIME"] if tls else [b"250 STARTTLS"]
            self.t.write(b"\r\n".join(ext) + b"\r\n")
            self.held = [] if mx.hold_until_data and tls else None
        elif verb == "STAR":
            self.t.write(b"220 go ahead\r\n" + mx.after_220)
            self.upgrading = True
            asyncio.get_running_loop().create_task(self.upgrade())
            return "tls"
        elif verb == "MAIL":
            self.rcpts = 0
            self.reply(mx.mail_reply)
        elif verb == "RCPT":
            addr = line[9:].split(">")[0]
            answer = mx.rcpt.get(addr, b"250 ok\r\n")
            self.rcpts += answer.startswith(b"2")
            self.reply(answer)
        elif verb == "DATA":
            # A conforming server refuses DATA without a recipient; data_reply overrides that.
            answer = mx.data_reply if self.rcpts or mx.data_reply != b"354 go\r\n" else b"554 5.5.1 no recipients\r\n"
            self.reply(answer)
            if self.held is not None and mx.hold_until_data != "forever":
                held, self.held = self.held, None
                self.t.write(b"".join(held))
            if answer.startswith(b"354"):
                if mx.after_354 == "drop":
                    self.t.close()
                    return
                self.in_data = True
        elif verb == "BDAT":
            size, _, last = line[5:].partition(" ")
            self.bdat = (int(size), last.upper() == "LAST")
            mx.chunk_with_command.append(len(self.buf) >= int(size))
            if self.held is not None and mx.hold_until_data != "forever":
                held, self.held = self.held, None
                self.t.write(b"".join(held))
        elif verb == "QUIT":
            self.t.write(b"221 bye\r\n")
            self.t.close()
        else:
            self.reply(b"250 ok\r\n")

    async def drip(self, data: bytes):
        for i in range(len(data)):
            if self.t.is_closing():
                return
            self.t.write(data[i:i + 1])
            self.mx.dripped += 1
            await asyncio.sleep(self.mx.drip)

    async def upgrade(self):
        loop = asyncio.get_running_loop()
        self.t = await loop.start_tls(self.t, self, self.mx.ctx, server_side=True)
        self.mx.transports.append(self.t)
        self.upgrading = False
        self.data_received(b"")


def _settings(address: str, test_ca, **kw) -> RelaySettings:
    return RelaySettings((address,), tls_context_for("certificate_validation", test_ca["ca"]), command_timeout=5.0, **kw)


def _run(test_ca, scenario, **server):
    async def main():
        mx = ScriptedMx(test_ca["server_cert"], test_ca["server_key"], **server)
        address = await mx.start()
        try:
            return await scenario(mx, _settings(address, test_ca))
        finally:
            POOL.close_for_this_loop()
            await mx.stop()

    return asyncio.run(main())


def _states(result):
    return [(o.address, o.state, o.status) for o in result.outcomes]


@pytest.mark.parametrize("pipelining", [True, False])
def test_mixed_rcpt_replies_give_each_recipient_its_own_outcome(test_ca, pipelining):
    rcpts = ["ok@fabrikam.test", "later@fabrikam.test", "gone@fabrikam.test", "multi@fabrikam.test"]

    async def scenario(mx, settings):
        mx.rcpt = {"later@fabrikam.test": b"450 4.2.1 mailbox busy\r\n",
                   "gone@fabrikam.test": b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n",
                   "multi@fabrikam.test": b"250-first line\r\n250-2.1.5 second\r\n250 ok\r\n"}
        return mx, await relay(settings, "a@contoso.test", rcpts, MESSAGE)

    mx, result = _run(test_ca, scenario, pipelining=pipelining)
    assert _states(result) == [("ok@fabrikam.test", "delivered", "2.0.0"),
                               ("later@fabrikam.test", "deferred", "4.2.1"),
                               ("gone@fabrikam.test", "failed", "5.1.1"),
                               ("multi@fabrikam.test", "delivered", "2.0.0")]
    assert "no such user 5.1.1 really" in result.outcomes[2].diagnostic  # both lines of the reply kept
    assert mx.bodies == [stuffed(MESSAGE)] and result.tls
    group = ["MAIL FROM:<a@contoso.test>"] + [f"RCPT TO:<{r}>" for r in rcpts] + ["DATA"]
    if pipelining:  # RFC 2920 §3.1: the whole group in one write
        assert group in mx.chunks
    else:  # lock-step: every read carried exactly one command
        assert all(len(c) == 1 for c in mx.chunks) and all([g] in mx.chunks for g in group)


def test_a_server_that_answers_only_after_the_whole_group_gets_the_message(test_ca):
    """A lock-step client would wait for the MAIL reply forever: the server sends nothing until DATA."""
    async def scenario(mx, settings):
        mx.hold_until_data = True
        return await relay(settings, "a@contoso.test", ["b@fabrikam.test", "c@fabrikam.test"], MESSAGE)

    result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["delivered", "delivered"]


def test_no_data_is_sent_when_every_recipient_is_refused_and_the_session_is_reset_for_reuse(test_ca):
    async def scenario(mx, settings):
        mx.rcpt = {"x@fabrikam.test": b"550 5.1.1 no\r\n"}
        first = await relay(settings, "a@contoso.test", ["x@fabrikam.test"], MESSAGE)
        second = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        return mx, first, second

    for pipelining in (True, False):
        mx, first, second = _run(test_ca, scenario, pipelining=pipelining)
        assert _states(first) == [("x@fabrikam.test", "failed", "5.1.1")]
        assert _states(second) == [("b@fabrikam.test", "delivered", "2.0.0")]
        assert mx.bodies == [stuffed(MESSAGE)] and mx.sessions == 1  # RSET, then the same session
        assert "RSET" in mx.commands
        assert mx.commands.count("DATA") == (2 if pipelining else 1)  # lock-step: no DATA without a recipient


def test_a_354_with_no_recipient_accepted_gets_a_lone_dot_and_no_message(test_ca):
    """RFC 2920 §3.1: a server may accept DATA though it refused every RCPT; the client ends the
    (empty) message with a single dot and never writes the body."""
    async def scenario(mx, settings):
        mx.rcpt = {"x@fabrikam.test": b"550 5.1.1 no\r\n"}
        mx.data_reply = b"354 go anyway\r\n"
        return mx, await relay(settings, "a@contoso.test", ["x@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert _states(result) == [("x@fabrikam.test", "failed", "5.1.1")]
    assert mx.bodies == [b".\r\n"]


def test_a_connection_dropped_after_354_defers_and_the_next_message_uses_a_fresh_session(test_ca):
    async def scenario(mx, settings):
        mx.after_354 = "drop"
        lost = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        mx.after_354 = "read"
        again = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        return mx, lost, again

    mx, lost, again = _run(test_ca, scenario)
    assert [o.state for o in lost.outcomes] == ["deferred"] and lost.outcomes[0].status.startswith("4.")
    assert [o.state for o in again.outcomes] == ["delivered"]
    assert mx.bodies == [stuffed(MESSAGE)] and mx.sessions == 2


def test_a_body_whose_reply_is_lost_is_deferred_as_maybe_delivered_never_retried_at_once(test_ca):
    """The server took the body and then went silent: retrying on another session now would be a
    second copy for sure; the recipients are deferred (4.4.2) and the session is not reused."""
    async def scenario(mx, settings):
        mx.done_reply = None
        settings = RelaySettings(settings.hosts, settings.tls_context, command_timeout=0.3)
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert _states(result) == [("b@fabrikam.test", "deferred", "4.4.2")]
    assert len(mx.bodies) == 1 and mx.sessions == 1


def test_a_server_that_never_answers_mail_times_out_and_defers(test_ca):
    async def scenario(mx, settings):
        mx.hold_until_data = "forever"  # a server that went silent after EHLO
        settings = RelaySettings(settings.hosts, settings.tls_context, command_timeout=0.3)
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["deferred"] and mx.bodies == []
    assert "timed out" in result.outcomes[0].diagnostic


@pytest.mark.parametrize("reply", [b"hello there\r\n", b"25 ok\r\n", b"250-one\r\n451 two\r\n", b"650 nope\r\n"])
def test_a_malformed_reply_breaks_the_session_before_any_body(test_ca, reply):
    async def scenario(mx, settings):
        mx.rcpt = {"b@fabrikam.test": reply}
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["deferred"] and mx.bodies == []
    assert "malformed reply" in result.outcomes[0].diagnostic


def test_an_endless_reply_line_is_bounded(test_ca):
    async def scenario(mx, settings):
        mx.mail_reply = b"250-" + b"x" * 200_000  # never ends its line
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["deferred"] and "too long" in result.outcomes[0].diagnostic


@pytest.mark.parametrize("how", ["closed", "421"])
def test_a_broken_pooled_session_is_retried_once_on_a_fresh_connection(test_ca, how):
    async def scenario(mx, settings):
        first = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        if how == "closed":
            mx.drop_idle()  # the server ended the idle session (its timeout, a restart)
        else:
            mx.mail_reply = b"421 4.4.2 idle too long\r\n"
        second_task = asyncio.ensure_future(relay(settings, "a@contoso.test", ["c@fabrikam.test"], MESSAGE))
        if how == "421":
            while mx.commands.count("MAIL FROM:<a@contoso.test>") < 2:
                await asyncio.sleep(0)
            mx.mail_reply = b"250 ok\r\n"
        return mx, first, await second_task

    mx, first, second = _run(test_ca, scenario)
    assert [o.state for o in first.outcomes + second.outcomes] == ["delivered", "delivered"]
    assert len(mx.bodies) == 2 and mx.sessions == 2


def test_dot_stuffing_and_line_ends_reach_the_server_exactly(test_ca):
    """RFC 5321 §4.5.2: a line starting with "." gets one more; the first line too; the
    message's last line is ended before the terminator; nothing else changes."""
    message = b".first\r\n..second\r\n\r\n.\r\nx.\r\n. \r\nend"

    async def scenario(mx, settings):
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], message)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["delivered"]
    assert mx.bodies == [b"..first\r\n...second\r\n\r\n..\r\nx.\r\n.. \r\nend\r\n.\r\n"]
    unstuffed = mx.bodies[0][:-3].replace(b"\r\n..", b"\r\n.")[1:]
    assert unstuffed == message + b"\r\n"


@pytest.mark.parametrize("bare", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\n.\n.\r\n"])
def test_bare_cr_or_lf_is_refused_not_repaired(test_ca, bare):
    async def scenario(mx, settings):
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], b"Subject: x\r\n\r\n" + bare)

    mx, result = _run(test_ca, scenario)
    assert _states(result) == [("b@fabrikam.test", "failed", "5.6.0")] and mx.sessions == 0


def test_control_characters_in_addresses_never_reach_the_wire(test_ca):
    evil = "x@fabrikam.test>\r\nRCPT TO:<evil@attacker.test"

    async def scenario(mx, settings):
        r = await relay(settings, "a@contoso.test", [evil, "b@fabrikam.test"], MESSAGE)
        s = await relay(settings, "a@contoso.test\r\nRSET", ["b@fabrikam.test"], MESSAGE)
        return mx, r, s

    mx, result, bad_sender = _run(test_ca, scenario)
    assert _states(result) == [(evil, "failed", "5.1.3"), ("b@fabrikam.test", "delivered", "2.0.0")]
    assert _states(bad_sender) == [("b@fabrikam.test", "failed", "5.1.7")]
    assert not any("evil" in c for c in mx.commands) and mx.commands.count("RSET") == 0


def test_smtputf8_is_asked_for_when_an_address_needs_it(test_ca):
    async def scenario(mx, settings):
        return mx, await relay(settings, "a@contoso.test", ["bjørn@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["delivered"]
    assert "MAIL FROM:<a@contoso.test> SMTPUTF8" in mx.commands and "RCPT TO:<bjørn@fabrikam.test>" in mx.commands


def test_the_certificate_name_is_checked(test_ca):
    async def scenario(mx, settings):
        wrong = RelaySettings(settings.hosts, tls_context_for("domain_validation", test_ca["ca"]),
                              tls_name="mail.fabrikam.test")
        return mx, await relay(wrong, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert [o.state for o in result.outcomes] == ["deferred"] and mx.bodies == []
    assert "certificate" in result.outcomes[0].diagnostic.lower()


def test_plaintext_behind_starttls_220_is_never_read_as_a_tls_reply(test_ca):
    """CVE-2011-0411, client side: a man in the middle appends replies to the clear-text 220; read
    after the handshake they would answer EHLO and MAIL. The client discards them."""
    async def scenario(mx, settings):
        mx.after_220 = b"250 injected-no-extensions\r\n550 5.7.1 injected refusal\r\n"
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert _states(result) == [("b@fabrikam.test", "delivered", "2.0.0")] and result.tls
    assert mx.bodies == [stuffed(MESSAGE)]


def test_a_reply_dripped_a_byte_at_a_time_does_not_restart_the_timeout(test_ca):
    """Slowloris from the server's side: every byte comes before the timeout, the reply never
    ends in time. The command timeout bounds the whole reply (0.5 s here, against a drip that
    would take 10 s), and the body having been sent, the recipient is deferred as maybe delivered."""
    async def scenario(mx, settings):
        mx.drip, mx.done_reply = 0.1, b"250-" + b"x" * 96 + b"\r\n250 ok\r\n"
        settings = RelaySettings(settings.hosts, settings.tls_context, command_timeout=0.5)
        return mx, await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)

    mx, result = _run(test_ca, scenario)
    assert _states(result) == [("b@fabrikam.test", "deferred", "4.4.2")]
    assert "timed out" in result.outcomes[0].diagnostic and mx.dripped < 50


# --- CHUNKING (RFC 3030) ------------------------------------------------------------------------

@pytest.mark.parametrize("pipelining", [True, False])
def test_with_chunking_the_message_goes_unstuffed_as_bdat_last_behind_mail_and_rcpt(test_ca, pipelining):
    message = b".first\r\n..second\r\n.\r\nQUIT\r\nend"  # no stuffing, no terminator, no CRLF added
    rcpts = ["ok@fabrikam.test", "later@fabrikam.test", "gone@fabrikam.test"]

    async def scenario(mx, settings):
        mx.rcpt = {"later@fabrikam.test": b"450 4.2.1 mailbox busy\r\n", "gone@fabrikam.test": b"550 5.1.1 no\r\n"}
        return mx, await relay(settings, "a@contoso.test", rcpts, message)

    mx, result = _run(test_ca, scenario, pipelining=pipelining, chunking=True)
    assert _states(result) == [("ok@fabrikam.test", "delivered", "2.0.0"), ("later@fabrikam.test", "deferred", "4.2.1"),
                               ("gone@fabrikam.test", "failed", "5.1.1")]
    assert mx.bodies == [message] and "DATA" not in mx.commands
    group = ["MAIL FROM:<a@contoso.test>"] + [f"RCPT TO:<{r}>" for r in rcpts] + [f"BDAT {len(message)} LAST"]
    if pipelining:  # RFC 3030 §4.2 with RFC 2920: commands and chunk in one write, no 354 round trip
        assert group in mx.chunks and mx.chunk_with_command == [True]
    else:
        assert all(len(c) == 1 for c in mx.chunks) and all([g] in mx.chunks for g in group)


@pytest.mark.parametrize("reply, state", [(b"554 5.6.0 refused\r\n", "failed"), (b"452 4.3.1 full\r\n", "deferred")])
def test_a_refused_bdat_last_maps_like_a_refused_end_of_data_and_the_session_is_reset(test_ca, reply, state):
    async def scenario(mx, settings):
        mx.bdat_reply = reply
        first = await relay(settings, "a@contoso.test", ["b@fabrikam.test", "c@fabrikam.test"], MESSAGE)
        mx.bdat_reply = b"250 2.0.0 stored\r\n"
        second = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        return mx, first, second

    mx, first, second = _run(test_ca, scenario, chunking=True)
    code = reply[:3].decode()
    assert [(o.state, o.status) for o in first.outcomes] == [(state, reply[4:9].decode())] * 2
    assert all(f"smtp; {code} " in o.diagnostic for o in first.outcomes)
    assert [o.state for o in second.outcomes] == ["delivered"]
    assert mx.sessions == 1 and mx.commands.count("RSET") == 1  # RFC 3030 §2: RSET after a refused chunk


@pytest.mark.parametrize("pipelining", [True, False])
def test_with_every_recipient_refused_the_chunk_is_refused_or_never_sent(test_ca, pipelining):
    async def scenario(mx, settings):
        mx.rcpt = {"x@fabrikam.test": b"550 5.1.1 no\r\n"}
        first = await relay(settings, "a@contoso.test", ["x@fabrikam.test"], MESSAGE)
        second = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        return mx, first, second

    mx, first, second = _run(test_ca, scenario, pipelining=pipelining, chunking=True)
    assert _states(first) == [("x@fabrikam.test", "failed", "5.1.1")]
    assert _states(second) == [("b@fabrikam.test", "delivered", "2.0.0")]
    assert mx.bodies == [MESSAGE] and mx.sessions == 1 and "RSET" in mx.commands
    assert sum(c.startswith("BDAT") for c in mx.commands) == (2 if pipelining else 1)


def test_a_connection_lost_after_the_chunk_defers_as_maybe_delivered(test_ca):
    async def scenario(mx, settings):
        mx.after_chunk = "drop"
        lost = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        mx.after_chunk = "reply"
        again = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        return mx, lost, again

    mx, lost, again = _run(test_ca, scenario, chunking=True)
    assert _states(lost) == [("b@fabrikam.test", "deferred", "4.4.2")]
    assert [o.state for o in again.outcomes] == ["delivered"]
    assert mx.bodies == [MESSAGE, MESSAGE] and mx.sessions == 2


def test_a_pooled_chunking_session_the_server_dropped_is_retried_on_a_fresh_one(test_ca):
    """The chunk went out with MAIL on a dead idle session: no recipient was accepted, nothing can
    have arrived, so the message goes at once on a new session (never deferred, never lost)."""
    async def scenario(mx, settings):
        first = await relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
        mx.drop_idle()
        second = await relay(settings, "a@contoso.test", ["c@fabrikam.test"], MESSAGE)
        return mx, first, second

    mx, first, second = _run(test_ca, scenario, chunking=True)
    assert [o.state for o in first.outcomes + second.outcomes] == ["delivered", "delivered"]
    assert mx.bodies == [MESSAGE, MESSAGE] and mx.sessions == 2
