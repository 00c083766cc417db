"""One SMTP server session: framing, command sequence, limits, STARTTLS, timers (RFC 5321).

Owns: the protocol — reading commands, enforcing order and limits, DATA framing and BDAT
chunks (RFC 3030, via smtp/framing.py), STARTTLS, timeouts — and writing replies from
smtp/replies.py. Policy is not decided here: each stage asks the role (mailbox, gateway,
submission) for a Verdict through the hooks of `Role`, in protocol order, as Haraka's hooks do.

Why not aiosmtpd (dependencies.md allows a switch with reasons): it buffers all of DATA in
memory (adversarial.md §7 needs streaming), has no connect hook, upgrades TLS through private
asyncio internals, and its per-command overhead capped refusals below Postfix's rate. This
module is an asyncio.Protocol with no stream layer, so a refusal costs a few function calls.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from mxgate.names import normalize_ip
from mxgate.server.tls import TlsFacts, tls_facts
from mxgate.smtp.address import Address, AddressSyntaxError, parse_path
from mxgate.smtp.framing import ChunkReader, DataReader
from mxgate.smtp.limits import MAX_COMMAND_LINE, SPILL_TO_DISK
from mxgate.smtp.message import protocol_name, received_header
from mxgate.smtp.proxy import ProxyHeaderError, parse_proxy_header
from mxgate.smtp.replies import REPLIES, Reply, reply_for
from mxgate.verdict import Action, Verdict
from mxgate.smtp.source import MessageSource

if TYPE_CHECKING:
    from mxgate.server.listener import Listener

log = logging.getLogger("mxgate.smtp")

_NOT_HELO_CHAR = re.compile(r"[^\x21-\x7e]")  # a HELO argument is printable ASCII without spaces
# Answers a role hook gives at once; anything else is asked whether it is awaitable.
_IMMEDIATE = (Verdict, tuple)
HTTP_VERBS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"CONNECT ", b"OPTIONS ", b"DELETE ", b"PATCH ")
_session_ids = itertools.count(1)
# What a MAIL or RCPT hook's failure answers (frozen values, so one each, not one per command).
_MAIL_FAILED = Verdict(Action.TEMPFAIL, "internal-error")
_RCPT_FAILED = (Verdict(Action.TEMPFAIL, "check-tempfail"), None)
_NODE_TAG = f"{os.getpid():x}"
# Replies to a long pipelined run are written every this many, so a peer that does not read them
# meets the transport's flow control (pause_writing) after a bounded backlog, not after all of them.
_FLUSH_EVERY = 256
# RFC 3030 §3: "BDAT" SP chunk-size [SP "LAST"], chunk-size 1*DIGIT. More than 15 digits (a
# petabyte) is no size a client means: read as a syntax error, so no int is ever huge.
_BDAT_ARG = re.compile(r"([0-9]{1,15})(?: +(LAST))?", re.IGNORECASE)
# RFC 1870 §3: size-value ::= 1*20DIGIT, ASCII digits (str.isdigit also takes "²", which int() refuses).
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")
# RFC 6152 §2: body-value ::= "7BIT" / "8BITMIME" (RFC 3030's BINARYMIME is not offered).
_BODY_VALUES = ("7BIT", "8BITMIME")
# RFC 3461 §4: xtext, what RFC 4954 §5's AUTH=addr-spec (or "<>") is written in.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")


def _mail_params_valid(params: dict[str, str]) -> bool:
    """MAIL's parameter values within their extensions' grammar (RFC 5321 §4.1.1.11: else 501)."""
    if "SIZE" in params and not _SIZE_VALUE.fullmatch(params["SIZE"]):
        return False
    if "BODY" in params and params["BODY"].upper() not in _BODY_VALUES:
        return False
    if "AUTH" in params and not _XTEXT.fullmatch(params["AUTH"]):
        return False
    return params.get("SMTPUTF8", "") == ""  # RFC 6531 §3.4: a keyword without a value


@dataclass
class Recipient:
    address: Address
    decision: Any  # role-specific (e.g. RcptDecision)


@dataclass
class Transaction:
    sender: Address
    params: dict[str, str]
    recipients: list[Recipient] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    bdat: str = ""  # "" no chunk yet | "open" chunks are arriving | "failed" a chunk was refused: RSET first


class MessageBody:
    """The received message bytes: in memory while small, then in a spool temp file."""

    def __init__(self, spill_dir: str | None):
        self._mem = bytearray()
        self._file = None
        self._spill_dir = spill_dir
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self._file is None and len(self._mem) + len(chunk) > SPILL_TO_DISK and self._spill_dir:
            self._file = tempfile.TemporaryFile(dir=self._spill_dir)
            self._file.write(self._mem)
            self._mem = bytearray()
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._mem += chunk

    def source(self) -> MessageSource:
        """The message to read in place (from the spool temp file when it spilled), no copy made."""
        if self._file is None:
            return MessageSource.from_bytes(bytes(self._mem))
        self._file.flush()
        return MessageSource(b"", fd=self._file.fileno(), offset=0, size=self.size)

    def getvalue(self) -> bytes:
        if self._file is None:
            return bytes(self._mem)
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = bytearray()


class SmtpSession(asyncio.Protocol):
    def __init__(self, listener: "Listener"):
        self.listener = listener
        self.role = listener.role
        self.limits = listener.limits
        self.loop = listener.loop
        self.id = f"{_NODE_TAG}-{next(_session_ids):x}"
        self.transport: asyncio.Transport | None = None
        self.peer_ip = None
        self.peer_text = ""  # str(peer_ip), made once: ipaddress formats it anew on every str()
        self.peer_port = 0
        self.local_port = 0
        self.started = time.monotonic()
        self.last_activity = self.started
        self.helo: str | None = None
        self.esmtp = False
        self.tls: TlsFacts | None = None
        self.auth_user: str | None = None
        self.txn: Transaction | None = None
        self.errors = 0
        self.role_state: dict[str, Any] = {}  # the role keeps its per-session facts here
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._mode = "greeting"  # greeting | command | data | bdat | blocked | starttls | closed | busy
        self._data: DataReader | None = None  # a ChunkReader while a BDAT sequence is open
        self._bdat_left = 0  # bytes of the current BDAT chunk still to be read off the wire
        self._bdat_total = 0  # bytes announced by this transaction's chunks so far
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None  # the chunk is read and thrown away, then this is the reply
        self._bdat_return = "command"  # the mode after the chunk ("blocked" in a refused session)
        self._hold_replies = False  # BDAT LAST: the pipelined replies go out with the message's reply
        self._body: MessageBody | None = None
        self._data_started = 0.0
        self._data_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._discarding_long_line = False
        self._sasl: Any = None  # an in-progress AUTH exchange (submission)
        self._writing_paused = False  # the peer is not reading our replies: its commands wait

    # --- connection -------------------------------------------------------------------------
    def _set_peer(self, ip, port: int) -> None:
        """The client's address (the socket's, or a trusted proxy's header) and its text, made once."""
        self.peer_ip = normalize_ip(ip)
        self.peer_text = str(self.peer_ip)
        self.peer_port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self._set_peer(peer[0], peer[1])
        self.local_port = sock[1] if len(sock) > 1 else 0
        self.proxy_ip = None
        if self.peer_ip in self.listener.trusted_proxies:
            # The real client's address arrives in a PROXY header before anything else; caps and
            # attribution apply to that address, never to the proxy's.
            self.proxy_ip = self.peer_ip
            self._mode = "proxy"
            self._arm_timer()
            return
        self._admit_and_greet()

    def _admit_and_greet(self) -> None:
        refusal = self.listener.admit(self)
        if refusal is not None:
            self._write_now(REPLIES[refusal].render())
            self.role.on_refused(self, "connect", Verdict(Action.TEMPFAIL, refusal))
            self._close()
            return
        self._arm_timer()
        if self.limits.greeting_delay > 0:
            self.loop.call_later(self.limits.greeting_delay, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        if self._mode != "greeting" or self.transport is None or self.transport.is_closing():
            return
        if self._pregreeted():
            return
        # A role may look things up before it greets (the gateway's connect-stage checks); a
        # failing lookup is never a refusal by accident.
        self.wait(self.role.on_connect(self), self._connect_answered, failed=Verdict(Action.ACCEPT, "connect-ok"))

    def _pregreeted(self) -> bool:
        if not self._buf:
            return False
        # RFC 5321 §4.3.1: the client must wait for the greeting
        self._reply(REPLIES["pregreet"])
        self.role.on_refused(self, "connect", Verdict(Action.REJECT, "pregreet"))
        self._flush()
        self._close()
        return True

    def _connect_answered(self, verdict: Verdict) -> None:
        if self._pregreeted():  # it talked while the role was looking things up
            return
        if verdict.refused:
            # RFC 5321 §3.1: a server refusing service greets with 554 and then answers 503 to
            # everything but QUIT, so the client learns why instead of seeing a dropped connection.
            self._reply(reply_for(verdict))
            self._mode = "blocked"
            self.role.on_refused(self, "connect", verdict)
        else:
            self._reply(Reply(220, "", f"{self.role.hostname} ESMTP"))
            self._mode = "command"
        self._flush()
        if self._buf:
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._mode = "closed"
        if self._timer:
            self._timer.cancel()
        if self._body:
            self._body.close()
        self.listener.release(self)
        self.role.on_disconnect(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self._mode == "closed":
            return
        if self._mode == "starttls":
            # Only the TLS layer delivers data now (plain reading was paused at STARTTLS and
            # pipelined plaintext discarded, CVE-2011-0411): keep it for after the handshake.
            self._buf += data
            return
        if self._mode == "data":
            self._data_bytes += len(data)
            self._feed_data(data)
            return
        if self._mode == "bdat":
            self._data_bytes += len(data)
            self._feed_chunk(data)  # what follows the chunk goes to _buf: the next commands
            if self._mode in ("command", "blocked"):
                self._process()
            elif len(self._buf) > 64 * 1024 and self.transport:
                self.transport.pause_reading()
            return
        self._buf += data
        if self._mode == "proxy":
            self._read_proxy_header()
            return
        if self._mode == "greeting":
            if len(self._buf) > MAX_COMMAND_LINE:
                self._close()
            return
        if self._mode != "busy":
            self._process()
        if len(self._buf) > 64 * 1024 and self.transport:
            self.transport.pause_reading()  # a handler is slow; don't buffer a flood

    def _read_proxy_header(self) -> None:
        try:
            parsed = parse_proxy_header(bytes(self._buf))
        except ProxyHeaderError as exc:
            log.info("session %s: bad PROXY header from trusted proxy %s: %s", self.id, self.peer_ip, exc)
            self._close()
            return
        if parsed is None:
            return
        del self._buf[: parsed.consumed]
        if parsed.source_ip is not None:
            self._set_peer(parsed.source_ip, parsed.source_port)
        self._mode = "greeting"
        if self._timer:
            self._timer.cancel()
        self._admit_and_greet()

    # --- command loop -----------------------------------------------------------------------
    def _process(self) -> None:
        while (self._mode in ("command", "blocked", "auth") and not self._writing_paused and self.transport
               and not self.transport.is_closing()):
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_COMMAND_LINE:
                    # Discard the rest of an over-long line, then answer once (RFC 5321 §4.5.3.1.4).
                    self._buf.clear()
                    self._discarding_long_line = True
                break
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            if self._discarding_long_line or len(line) > MAX_COMMAND_LINE:
                self._discarding_long_line = False
                if self._mode == "auth":
                    # RFC 4954 §6: a response line too long fails the AUTH command (500 5.5.6);
                    # what the client sends next is a command, never read as a SASL response.
                    self._mode = "command"
                    self._error("auth-line-too-long")
                else:
                    self._error("line-too-long")
                continue
            self._command(line.rstrip(b"\r\n") if line.endswith(b"\r\n") else line[:-1])
            if self._mode == "data" and self._buf:
                rest = bytes(self._buf)
                self._buf.clear()
                self._feed_data(rest)
            elif self._mode == "bdat" and self._buf:
                rest = bytes(self._buf)
                self._buf.clear()
                self._feed_chunk(rest)
            if len(self._out) >= _FLUSH_EVERY:
                self._flush()  # a long pipelined run: the transport's flow control sees it as it grows
        if self._hold_replies and self._mode == "busy":
            # The message of a BDAT LAST is being stored: the client is not waiting for any of
            # these replies before it can send more (it sent the whole message), so they go out
            # with the message's reply in one write (RFC 2920 §3.1 only asks for a flush before
            # the server waits for the client).
            return
        self._flush()
        if (self.transport and self._mode in ("command", "blocked", "bdat", "data") and not self._writing_paused
                and len(self._buf) < 64 * 1024):
            try:
                self.transport.resume_reading()
            except RuntimeError:
                pass

    # --- flow control (asyncio.Protocol) ----------------------------------------------------
    def pause_writing(self) -> None:
        """The peer is not reading its replies (our transport's buffer is past its high-water
        mark): read none of its commands until it does, so replies never pile up without bound
        (RFC 2920 §3.1: the client must read replies; the server need not read on meanwhile)."""
        self._writing_paused = True
        if self.transport and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._mode in ("command", "blocked", "auth", "data", "bdat"):
            self._process()  # answers what waited, then reads on

    def _command(self, raw: bytes) -> None:
        if self._mode == "auth":
            self.role.auth_continue(self, raw)
            return
        if raw.startswith(HTTP_VERBS):  # a browser or proxy probe on the SMTP port (Postfix does the same)
            self.role.on_refused(self, "command", Verdict(Action.DISCONNECT, "http-command"))
            self._close()
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error("bad-syntax")
            return
        verb, _, arg = text.partition(" ")
        # RFC 5321 §2.4: commands are ASCII; str.upper() would map "ı", "ſ", "ﬆ" onto ASCII letters
        verb = verb.upper() if verb.isascii() else ""
        if self._mode == "blocked" and verb not in ("QUIT", "BDAT"):  # a chunk is still read off the wire
            self._reply(REPLIES["blocked-after-refusal"])
            return
        handler = getattr(self, f"_cmd_{verb}", None) if verb.isalpha() else None
        if handler is None:
            self._error("unknown-command")
            return
        if "\r" in arg or "\x00" in arg:
            self._error("bad-syntax")
            return
        handler(arg.strip())

    def _error(self, reason: str) -> None:
        if not self._count_error():
            self._reply(REPLIES[reason])

    def _count_error(self) -> bool:
        """One more error in this session; at the limit answer 421 and close (True)."""
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            self._reply(REPLIES["too-many-errors"])
            self.role.on_refused(self, "command", Verdict(Action.TEMPFAIL, "too-many-errors"))
            self._flush()
            self._close()
            return True
        return False

    # --- commands ---------------------------------------------------------------------------
    def _cmd_HELO(self, arg: str, esmtp: bool = False) -> None:
        if not arg or len(arg) > 255 or _NOT_HELO_CHAR.search(arg):
            self._error("bad-helo")
            return
        verdict = self.role.on_helo(self, arg)
        if verdict.refused:
            self._reply(reply_for(verdict))
            return
        self._drop_chunks()
        self.helo, self.esmtp, self.txn = arg, esmtp, None
        if not esmtp:
            self._reply(Reply(250, "", self.role.hostname))
            return
        lines = [self.role.hostname] + self.role.ehlo_keywords(self)
        self._reply(Reply(250, "", "\n".join(lines)))

    def _cmd_EHLO(self, arg: str) -> None:
        self._cmd_HELO(arg, esmtp=True)

    def _cmd_NOOP(self, arg: str) -> None:
        self._reply(REPLIES["ok"])

    def _cmd_RSET(self, arg: str) -> None:
        self._drop_chunks()
        self.txn = None
        self._reply(REPLIES["reset"])

    def _cmd_VRFY(self, arg: str) -> None:
        self._reply(REPLIES["vrfy"])  # RFC 5321 §3.5.3: 252, never reveal the directory

    def _cmd_HELP(self, arg: str) -> None:
        self._reply(Reply(214, "2.0.0", "See RFC 5321"))

    def _cmd_QUIT(self, arg: str) -> None:
        self._reply(REPLIES["bye"])
        self._flush()
        self._close()

    def _cmd_STARTTLS(self, arg: str) -> None:
        if self.tls is not None:
            self._reply(REPLIES["tls-already-active"])
            return
        ctx = self.listener.ssl_context()
        if ctx is None or arg:
            self._reply(REPLIES["tls-unavailable"] if ctx is None else REPLIES["bad-syntax"])
            return
        self._reply(REPLIES["ready-tls"])
        self._flush()
        self._mode = "starttls"
        self._buf.clear()  # anything pipelined after STARTTLS is discarded (RFC 3207 §4.2)
        # Stop reading until the TLS layer owns the transport, so the ClientHello is not read
        # (and dropped) by this plaintext protocol in between.
        self.transport.pause_reading()
        self.listener.keep(self.loop.create_task(self._start_tls(ctx)))

    async def _start_tls(self, ctx) -> None:
        try:
            new_transport = await asyncio.wait_for(
                self.loop.start_tls(self.transport, self, ctx, server_side=True), timeout=30)
        except Exception as exc:
            log.info("session %s: TLS handshake failed: %r", self.id, exc)
            self.role.on_refused(self, "starttls", Verdict(Action.REJECT, "tls-handshake-failed", str(exc)[:200]))
            self._mode = "closed"
            if self.transport:
                self.transport.abort()
            return
        self.transport = new_transport
        # A pause the plaintext transport asked for ends with it: its resume now goes to the TLS layer.
        self._writing_paused = False
        self.tls = tls_facts(new_transport.get_extra_info("ssl_object"))
        # RFC 3207 §4.2: forget everything learnt before TLS, including the HELO name.
        self._drop_chunks()
        self.helo, self.esmtp, self.txn = None, False, None
        self._mode = "command"
        self.role.on_tls(self)
        if self._buf:
            self._process()

    def _cmd_AUTH(self, arg: str) -> None:
        self.role.auth_start(self, arg)

    def _cmd_MAIL(self, arg: str) -> None:
        if self.helo is None:
            self._reply(REPLIES["need-helo"])
            return
        if self.txn is not None:
            self._reply(REPLIES["nested-mail"])
            return
        if not arg.upper().startswith("FROM:"):
            self._error("bad-syntax")
            return
        parsed = self._parse_path_and_params(arg[5:], allow_null=True, allowed=self.role.mail_parameters)
        if parsed is None:
            return
        sender, params = parsed
        if not _mail_params_valid(params):
            self._error("bad-syntax")
            return
        if "SIZE" in params:
            if int(params["SIZE"]) > self.limits.max_message_size:
                self._refuse_mail(Verdict(Action.REJECT, "message-too-big-declared"), sender)
                return
        if not self.role.disk_ok():
            self._refuse_mail(Verdict(Action.TEMPFAIL, "disk-full"), sender)
            return
        self.wait(self.role.on_mail(self, sender, params), lambda verdict: self._mail_answered(sender, params, verdict),
                  failed=_MAIL_FAILED)

    def _mail_answered(self, sender: Address, params: dict[str, str], verdict: Verdict) -> None:
        if verdict.refused:
            self._refuse_mail(verdict, sender)
            return
        self.txn = Transaction(sender, params)
        self._reply(reply_for(verdict) if verdict.reason in REPLIES else REPLIES["sender-ok"])

    def _refuse_mail(self, verdict: Verdict, sender: Address) -> None:
        # A refused MAIL is an error, as a refused RCPT is (adversarial.md §9, Postfix's
        # smtpd_hard_error_limit): each costs a log line and a trace lookup, so a session repeating
        # one ends at the limit.
        self._refuse_at("mail", verdict, sender=sender)
        self._count_error()

    def _cmd_RCPT(self, arg: str) -> None:
        if self.txn is None:
            self._reply(REPLIES["need-mail"] if self.helo else REPLIES["need-helo"])
            return
        if self.txn.bdat:  # RFC 3030 §2: the recipients are known before the first chunk
            self._reply(REPLIES["bad-sequence"])
            return
        if not arg.upper().startswith("TO:"):
            self._error("bad-syntax")
            return
        smtputf8 = "SMTPUTF8" in self.txn.params
        parsed = self._parse_path_and_params(arg[3:], allow_null=False, allowed=(), smtputf8=smtputf8)
        if parsed is None:
            return
        rcpt, _params = parsed
        if len(self.txn.recipients) >= self.limits.max_recipients:
            self._refuse_at("rcpt", Verdict(Action.TEMPFAIL, "too-many-recipients"), rcpt=rcpt)
            return
        self.wait(self.role.on_rcpt(self, rcpt), lambda answer: self._rcpt_answered(rcpt, *answer),
                  failed=_RCPT_FAILED)

    def _rcpt_answered(self, rcpt: Address, verdict: Verdict, decision: Any) -> None:
        if self.txn is None:  # RSET cannot arrive while waiting (the session was busy); be safe anyway
            return
        if verdict.refused:
            self._refuse_at("rcpt", verdict, rcpt=rcpt)
            # A refused recipient is an error, as in Postfix (smtpd_hard_error_limit): a session
            # guessing addresses ends at the limit. "Send me separately" (452 4.5.3) is not one.
            if reply_for(verdict).enhanced != "4.5.3":
                self._count_error()
            return
        self.txn.recipients.append(Recipient(rcpt, decision))
        self._reply(REPLIES["recipient-ok"])

    # --- hooks that answer later ------------------------------------------------------------
    def wait(self, answer: Any, resume: Callable[[Any], None], *, failed: Any) -> None:
        """The one wait-then-resume path: a role hook answers now (a value) or later (an
        awaitable, e.g. an RCPT callahead or a credential check). While it waits the session is
        busy — pipelined commands stay buffered, in order — and the task is kept until done.
        `failed` is the answer when the awaitable raises (logged; its text never reaches the peer)."""
        if type(answer) in _IMMEDIATE or not inspect.isawaitable(answer):
            resume(answer)
            return
        self._mode = "busy"
        self.listener.keep(self.loop.create_task(self._resume_after(answer, resume, failed)))

    async def _resume_after(self, answer: Awaitable[Any], resume: Callable[[Any], None], failed: Any) -> None:
        try:
            value = await answer
        except Exception:
            log.exception("session %s: a role hook failed", self.id)
            value = failed
        if self._mode == "closed":
            return
        self._mode = "command"
        resume(value)
        if self._mode == "closed":
            return
        # No flush here: _process answers the commands pipelined meanwhile and sends every reply
        # in one write, and it always flushes before the session waits again (RFC 2920 §3.1).
        self._process()

    def _cmd_DATA(self, arg: str) -> None:
        if self.txn is None:
            self._reply(REPLIES["need-mail"] if self.helo else REPLIES["need-helo"])
            return
        if not self.txn.recipients:
            self._reply(REPLIES["need-rcpt"])
            return
        if self.txn.bdat:  # RFC 3030 §2: DATA and BDAT are not mixed in one transaction
            self._reply(REPLIES["bad-sequence"])
            return
        self._reply(REPLIES["start-data"])
        self._mode = "data"
        self._data = DataReader(self.limits.max_message_size)
        self._body = MessageBody(self.listener.spill_dir)
        self._data_started = time.monotonic()
        self._data_bytes = 0

    def _cmd_BDAT(self, arg: str) -> None:
        """RFC 3030: a chunk of exactly `size` bytes follows the command line; they are message
        data whatever they hold ("\\r\\n.\\r\\n", "QUIT", bare LF), never commands. Every chunk is read
        off the wire, also the refused ones, so the session stays in step with the client."""
        m = _BDAT_ARG.fullmatch(arg)
        if m is None:
            # RFC 3030 §3: only the count tells where the chunk ends and the next command begins.
            # Without it any byte that follows may be chunk data (an attacker's "MAIL FROM" among
            # them), so nothing more this client sends can be read as a command: answer and close.
            self._reply(REPLIES["bdat-syntax"])
            self.role.on_refused(self, "command", Verdict(Action.DISCONNECT, "bdat-syntax"))
            self._flush()
            self._close()
            return
        size, last, txn = int(m[1]), m[2] is not None, self.txn
        if self._mode == "blocked":
            self._start_chunk(size, REPLIES["blocked-after-refusal"])
        elif txn is None:
            self._start_chunk(size, REPLIES["need-mail"] if self.helo else REPLIES["need-helo"])
        elif not txn.recipients:
            self._start_chunk(size, REPLIES["need-rcpt"])
        elif txn.bdat == "failed":
            self._start_chunk(size, REPLIES["bdat-failed"])
        elif self._bdat_total + size > self.limits.max_message_size:
            # Known before a byte is read (adversarial.md §7): the transaction is void, and this
            # chunk is read and dropped, not kept — RFC 3030 §2 asks the server to consume it, and
            # it costs the sender its own bandwidth, bounded by the data-rate and session timers,
            # as a DATA that never ends is. The client then needs RSET (RFC 3030 §2: no more chunks).
            self._drop_chunks()
            txn.bdat = "failed"
            verdict = Verdict(Action.REJECT, "message-too-big")
            self.role.on_refused(self, "data", verdict, sender=txn.sender, recipients=txn.recipients)
            self._start_chunk(size, reply_for(verdict))
        else:
            if not txn.bdat:
                txn.bdat = "open"
                # The same reader rules and the same spool temp file as DATA (bounded memory).
                self._data = ChunkReader(self.limits.max_message_size)
                self._body = MessageBody(self.listener.spill_dir)
            self._bdat_total += size
            self._bdat_last = last
            self._start_chunk(size, None)

    def _start_chunk(self, size: int, refusal: Reply | None) -> None:
        """Read the next `size` bytes as a chunk: kept, or (with a `refusal`) dropped, then refused."""
        self._bdat_left = size
        self._bdat_refusal = refusal
        self._bdat_return = "blocked" if self._mode == "blocked" else "command"
        # RFC 5321 §4.5.3.2.6 in spirit: each chunk gets DATA's minimum rate, counted from its command.
        self._data_started = time.monotonic()
        self._data_bytes = 0
        self._mode = "bdat"
        if size == 0:
            self._chunk_done()

    def _feed_chunk(self, data: bytes) -> None:
        """Bytes off the wire while a chunk is read: the chunk's go to the message (or nowhere),
        the rest back to the command buffer."""
        left = self._bdat_left
        if len(data) > left:
            self._buf[:0] = data[left:]
            data = data[:left]
        self._bdat_left = left - len(data)
        if self._bdat_refusal is None and data:
            out = self._data.feed_chunk(data)
            if out:
                try:
                    self._body.write(out)
                except OSError:
                    self._data.problem = self._data.problem or "storage-failed"
        if self._bdat_left == 0:
            self._chunk_done()

    def _chunk_done(self) -> None:
        self._mode = self._bdat_return
        if self._bdat_refusal is not None:
            self._reply(self._bdat_refusal)
            return
        if not self._bdat_last:
            self._reply(REPLIES["chunk-ok"])
            return
        # BDAT LAST: the message ends here, and from here on it is DATA's end, the same code.
        out, result = self._data.finish()
        problem = result.problem
        if out:
            try:
                self._body.write(out)
            except OSError:
                problem = problem or "storage-failed"
        self._hold_replies = True
        self._end_message(problem)

    def _drop_chunks(self) -> None:
        """Forget an open chunk sequence (RSET, EHLO, STARTTLS, a refused chunk)."""
        if self._body is not None and self._mode != "data":
            self._body.close()
            self._body = self._data = None
        self._bdat_total = 0

    def _parse_path_and_params(self, text: str, *, allow_null: bool, allowed: tuple[str, ...],
                               smtputf8: bool = False) -> tuple[Address, dict[str, str]] | None:
        text = text.strip()
        end = text.find(">")
        if not text.startswith("<") or end < 0:
            self._error("bad-address")
            return None
        path, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(" "):
            self._error("bad-address")
            return None
        params: dict[str, str] = {}
        for item in rest.split():
            key, _, value = item.partition("=")
            if not key.isascii() or key.upper() not in allowed:
                self._error("bad-parameter")
                return None
            params[key.upper()] = value
        try:
            addr = parse_path(path, allow_null=allow_null, smtputf8=smtputf8 or "SMTPUTF8" in params)
        except AddressSyntaxError as exc:
            self._error("non-ascii-address" if exc.reason == "non-ascii" else "bad-address")
            return None
        return addr, params

    def _refuse_at(self, stage: str, verdict: Verdict, **facts: Any) -> None:
        self._reply(reply_for(verdict))
        self.role.on_refused(self, stage, verdict, **facts)

    # --- DATA -------------------------------------------------------------------------------
    def _feed_data(self, data: bytes) -> None:
        assert self._data is not None and self._body is not None
        chunk, result = self._data.feed(data)
        if chunk:
            try:
                self._body.write(chunk)
            except OSError:
                self._data.problem = self._data.problem or "storage-failed"
        if result is None:
            return
        if result.leftover:
            self._buf[:0] = result.leftover
        self._end_message(result.problem)

    def _end_message(self, problem: str | None) -> None:
        """The message is in (DATA's terminator or BDAT LAST): refuse it for a framing problem,
        or hand it to the role, whose verdict is the one reply (after stable storage)."""
        self._mode = "busy"
        txn, body = self.txn, self._body
        self._data, self._body, self.txn = None, None, None
        self._bdat_total = 0
        if problem:
            body.close()
            self._finish_message(txn, Verdict(Action.REJECT, problem))
            return
        self.listener.keep(self.loop.create_task(self._deliver(txn, body)))

    async def _deliver(self, txn: Transaction, body: MessageBody) -> None:
        try:
            verdict = await self.role.on_message(self, txn, body)
        except Exception:
            log.exception("session %s: message handling failed", self.id)
            verdict = Verdict(Action.TEMPFAIL, "internal-error", f"trace id {self.id}")
        finally:
            body.close()
        self._finish_message(txn, verdict)

    def _finish_message(self, txn: Transaction, verdict: Verdict) -> None:
        if self._mode == "closed":
            return
        if verdict.refused:
            self.role.on_refused(self, "data", verdict, sender=txn.sender, recipients=txn.recipients)
        reply = reply_for(verdict)
        if verdict.reason == "internal-error":
            reply = Reply(451, "4.3.0", f"Local error in processing (trace id {self.id})")
        self._reply(reply)
        self._mode = "command"
        self._hold_replies = False
        if self.listener.stopping:  # the message is answered; now leave, as idle sessions did
            self.shutdown()
            return
        self._flush()
        self._process()

    # --- timers -----------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        self._timer = self.loop.call_later(min(self.limits.command_timeout, 5.0), self._check_timers)

    def _check_timers(self) -> None:
        if self._mode == "closed" or self.transport is None:
            return
        now = time.monotonic()
        reason = None
        if now - self.started > self.limits.max_session_seconds:
            reason = "session-too-long"
        elif self._mode in ("data", "bdat"):
            elapsed = now - self._data_started
            if elapsed > self.limits.data_rate_grace and self._data_bytes / elapsed < self.limits.min_data_rate:
                reason = "data-too-slow"
        elif self._mode == "proxy" and now - self.started > min(self.limits.command_timeout, 10.0):
            self._close()
            return
        elif self._mode != "busy" and now - self.last_activity > self.limits.command_timeout:
            reason = "command-timeout"
        if reason:
            self._reply(REPLIES[reason])
            self.role.on_refused(self, "timeout", Verdict(Action.TEMPFAIL, reason))
            self._flush()
            if self._writing_paused and self.transport:
                self.transport.abort()  # it read none of our replies for a whole timeout: none to wait for
            self._close()
            return
        self._arm_timer()

    # --- output -----------------------------------------------------------------------------
    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.render())

    def reply(self, reason_or_reply: str | Reply) -> None:
        """For roles that answer within an exchange (AUTH challenges)."""
        self._reply(REPLIES[reason_or_reply] if isinstance(reason_or_reply, str) else reason_or_reply)

    def error(self, reason: str) -> None:
        """For roles: a refused command that counts toward the session's error limit (421 at it)."""
        self._error(reason)

    def received_header(self, *, by: str, trace_id: str, recipients: Sequence[Any], connector: str = "",
                        cipher_bits: bool = False) -> bytes:
        """Our Received field for the message this session carried (RFC 5321 §4.4; RFC 3848
        `with`), naming the one recipient when there is exactly one."""
        tls = ""
        if self.tls:
            tls = f"using {self.tls.version} with cipher {self.tls.cipher}" + (f" ({self.tls.bits} bits)" if cipher_bits else "")
        return received_header(
            helo=self.helo or "", peer_ip=self.peer_text, by=by, trace_id=trace_id, tls=tls, connector=connector,
            protocol=protocol_name(self.esmtp, self.tls is not None, self.auth_user is not None),
            recipient=str(recipients[0].address) if len(recipients) == 1 else None)

    def set_mode(self, mode: str) -> None:
        """"auth" while a SASL exchange reads raw lines (RFC 4954 §4), "command" after it."""
        self._mode = mode

    def close(self) -> None:
        """Send what is queued, then close (a role ending the session, e.g. after AUTH abuse)."""
        self._flush()
        self._close()

    def _flush(self) -> None:
        if self._out and self.transport and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _write_now(self, data: bytes) -> None:
        if self.transport:
            self.transport.write(data)

    def _close(self) -> None:
        if self._mode != "closed":
            self._mode = "closed"
        transport = self.transport
        if transport and not transport.is_closing():
            transport.close()
            if self._writing_paused or transport.get_write_buffer_size():
                # close() first sends what is left; a peer that never reads it would hold the
                # connection, and its slot, for ever. It gets one command timeout to read.
                self.loop.call_later(self.limits.command_timeout, transport.abort)

    @property
    def is_closed(self) -> bool:
        return self._mode == "closed"

    def shutdown(self) -> None:
        """Graceful stop: idle sessions get 421 now; one in DATA or delivering finishes first."""
        if self._mode in ("command", "blocked", "greeting", "auth"):
            self._reply(REPLIES["shutting-down"])
            self._flush()
            self._close()
