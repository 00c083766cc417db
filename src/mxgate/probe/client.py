"""The probe's SMTP dialogue: greeting, EHLO, STARTTLS, MAIL, RCPT, optional DATA, QUIT.

Owns: the order of commands, reading (multiline) replies, and turning what the server said into
one `ProbeResult` (outcome + stage + code) with a timed transcript. Works against any RFC 5321
server — nothing here knows mxgate's policies or reply texts.

Must not know: sockets, PROXY headers or TLS internals (`wire.py`), how results are printed
(`render.py`), or what the user expected (`expect.py`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from typing import Literal

from mxgate.names import parse_hostport
from mxgate.probe.wire import TlsInfo, Wire, WireError, proxy_v1_header, proxy_v2_header, tls_context

Outcome = Literal["accept", "reject", "tempfail", "error"]
Stage = Literal["connect", "ehlo", "starttls", "mail", "rcpt", "data", "done"]

DEFAULT_PORT = 25  # RFC 5321 §4.5.4.2 (MX relay); submission would be 587
# RFC 5321 §4.2: "xyz-text" continues a multiline reply, "xyz text" or "xyz" ends it.
REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|\r?\n|$)")
# RFC 3463 §2 / RFC 2034 §4: class.subject.detail, class must match the reply's first digit.
ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
# Keep long generated or user bodies readable in the transcript.
MAX_TRANSCRIPT_BODY_LINES = 20


@dataclass(frozen=True)
class ProbeOptions:
    host: str
    port: int = DEFAULT_PORT
    mail_from: str = "probe@mxgate.invalid"
    rcpt_to: tuple[str, ...] = ()
    send: bool = False
    ehlo: str = "mxgate-probe.invalid"  # RFC 2606 .invalid: never a real name
    starttls: Literal["auto", "require", "off"] = "auto"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_servername: str | None = None  # SNI and name checked against --ca; default: host
    source_address: str | None = None
    proxy_source: str | None = None  # "ADDR" or "ADDR:PORT" / "[v6]:PORT"
    proxy_version: Literal[1, 2] = 1
    timeout: float = 10.0
    subject: str = "mxgate probe"
    body: str | None = None


@dataclass(frozen=True)
class TranscriptLine:
    t: float  # seconds since the probe started
    direction: Literal["C", "S", "*"]  # client, server, note
    text: str


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # text after "xyz-"/"xyz ", one per line

    @property
    def enhanced(self) -> str | None:
        m = ENHANCED.match(self.lines[0]) if self.lines else None
        return m.group(0) if m and m.group(1) == str(self.code)[0] else None

    @property
    def text(self) -> str:
        return " / ".join(self.lines)


@dataclass(frozen=True)
class RcptRefusal:
    address: str
    code: int
    enhanced: str | None
    reply: str


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    stage: Stage
    code: int | None
    enhanced: str | None
    reply: str
    transcript: tuple[TranscriptLine, ...]
    tls: TlsInfo | None
    duration: float
    accepted_rcpts: tuple[str, ...] = ()
    refused_rcpts: tuple[RcptRefusal, ...] = ()


class _Refused(Exception):
    """The server ended the attempt at `stage` with `reply` (4xx/5xx or unexpected code)."""

    def __init__(self, stage: Stage, reply: Reply) -> None:
        self.stage, self.reply = stage, reply


class _Failed(Exception):
    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class _Session:
    opts: ProbeOptions
    started: float = field(default_factory=time.monotonic)
    lines: list[TranscriptLine] = field(default_factory=list)
    wire: Wire | None = None
    accepted: list[str] = field(default_factory=list)
    refused: list[RcptRefusal] = field(default_factory=list)
    # TLS 1.3 lets the server reject our client certificate after the client considers the
    # handshake done; the failure shows on the first read inside TLS and belongs to STARTTLS.
    tls_unconfirmed: bool = False

    def note(self, direction: str, text: str) -> None:
        self.lines.append(TranscriptLine(round(time.monotonic() - self.started, 6), direction, text))

    async def send(self, stage: Stage, line: str) -> None:
        await self.write(stage, line, line.encode("utf-8") + b"\r\n")

    async def write(self, stage: Stage, shown: str, data: bytes) -> None:
        assert self.wire is not None
        self.note("C", shown)
        try:
            await self.wire.write(data)
        except WireError as exc:
            raise self._failure(stage, exc) from None

    def _failure(self, stage: Stage, exc: WireError) -> "_Failed":
        if self.tls_unconfirmed and not exc.timed_out:
            return _Failed("starttls", f"{exc} right after the TLS handshake "
                                       "(was the client certificate refused?)")
        return _Failed("starttls" if exc.tls else stage, str(exc))

    async def reply(self, stage: Stage) -> Reply:
        """Read one (possibly multiline) reply; malformed lines are an error, not a guess."""
        assert self.wire is not None
        code, texts = None, []
        while True:
            try:
                raw = await self.wire.read_line()
            except WireError as exc:
                raise self._failure(stage, exc) from None
            self.tls_unconfirmed = False
            shown = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            self.note("S", shown)
            m = REPLY_LINE.match(raw)
            if m is None or (code is not None and int(m.group(1)) != code):
                raise _Failed(stage, f"malformed reply line: {shown!r}")
            code = int(m.group(1))
            texts.append(shown[4:])
            if m.group(2) != b"-":
                return Reply(code, tuple(texts))

    async def command(self, stage: Stage, line: str, ok: tuple[int, ...]) -> Reply:
        await self.send(stage, line)
        r = await self.reply(stage)
        if r.code not in ok:
            raise _Refused(stage, r)
        return r


async def run_probe(opts: ProbeOptions) -> ProbeResult:
    """Run one SMTP attempt and classify it; never raises for anything the network does."""
    s = _Session(opts)
    outcome: Outcome = "accept"
    stage: Stage = "done"
    final: Reply | None = None
    message = ""
    try:
        try:
            s.wire = await Wire.open(opts.host, opts.port, timeout=opts.timeout, note=s.note,
                                     source_address=opts.source_address)
        except WireError as exc:
            raise _Failed("connect", str(exc)) from None
        final = await _dialogue(s)
    except _Refused as r:
        stage, final = r.stage, r.reply
        outcome = "reject" if r.reply.code >= 500 else "tempfail" if r.reply.code >= 400 else "error"
        await _quit(s)
    except _Failed as f:
        outcome, stage, message = "error", f.stage, str(f)
        s.note("*", f"error: {message}")
    finally:
        if s.wire is not None:
            await s.wire.close()
    if final is not None and not message:
        message = final.text
    return ProbeResult(
        outcome=outcome, stage=stage,
        code=final.code if final and outcome != "error" else None,
        enhanced=final.enhanced if final and outcome != "error" else None,
        reply=message, transcript=tuple(s.lines),
        tls=s.wire.tls if s.wire else None,
        duration=round(time.monotonic() - s.started, 6),
        accepted_rcpts=tuple(s.accepted), refused_rcpts=tuple(s.refused))


async def _dialogue(s: _Session) -> Reply:
    opts = s.opts
    assert s.wire is not None
    if opts.proxy_source:
        header = _proxy_header(opts, s.wire)
        shown = (header.decode("ascii").rstrip("\r\n") if opts.proxy_version == 1
                 else f"PROXY v2 header ({len(header)} bytes) claiming {opts.proxy_source}")
        await s.write("connect", shown, header)
    greeting = await s.reply("connect")
    if greeting.code != 220:  # RFC 5321 §3.1: 554 = no service; 4xx = try later
        raise _Refused("connect", greeting)
    extensions = await _ehlo(s)
    if opts.starttls != "off":
        offered = "STARTTLS" in extensions
        if not offered and opts.starttls == "require":
            raise _Failed("starttls", "server does not offer STARTTLS")
        if offered and await _starttls(s):
            await _ehlo(s)  # RFC 3207 §4.2: forget everything learnt in clear text
    await s.command("mail", f"MAIL FROM:<{opts.mail_from}>", (250,))
    last: Reply | None = None
    for rcpt in opts.rcpt_to:
        await s.send("rcpt", f"RCPT TO:<{rcpt}>")
        r = await s.reply("rcpt")
        if r.code in (250, 251):  # RFC 5321 §4.2.2: 251 = will forward
            s.accepted.append(rcpt)
            last = r
        else:
            s.refused.append(RcptRefusal(rcpt, r.code, r.enhanced, r.text))
    if s.refused:
        # A partial refusal is still a refusal: the probe reports the first hard one (else the
        # first soft one) and does not send, so the verdict is never "half accepted".
        worst = next((x for x in s.refused if x.code >= 500), s.refused[0])
        raise _Refused("rcpt", Reply(worst.code, (worst.reply,)))
    if not opts.rcpt_to:
        s.note("*", "no recipients given: stopping after MAIL")
    if not opts.send or not opts.rcpt_to:
        await _quit(s)
        return last or Reply(250, ("MAIL accepted",))
    await s.command("data", "DATA", (354,))
    await _send_message(s)
    done = await s.reply("data")
    if done.code != 250:
        raise _Refused("data", done)
    await _quit(s)
    return done


async def _ehlo(s: _Session) -> set[str]:
    await s.send("ehlo", f"EHLO {s.opts.ehlo}")
    r = await s.reply("ehlo")
    if r.code in (500, 502):  # RFC 5321 §3.2: EHLO not understood → fall back to HELO
        await s.command("ehlo", f"HELO {s.opts.ehlo}", (250,))
        return set()
    if r.code != 250:
        raise _Refused("ehlo", r)
    return {line.split(" ", 1)[0].upper() for line in r.lines[1:]}


async def _starttls(s: _Session) -> bool:
    assert s.wire is not None
    await s.send("starttls", "STARTTLS")
    r = await s.reply("starttls")
    if r.code != 220:
        if s.opts.starttls == "require":
            raise _Failed("starttls", f"STARTTLS refused: {r.code} {r.text}")
        s.note("*", "STARTTLS refused; continuing in clear text (starttls=auto)")
        return False
    try:
        ctx = tls_context(s.opts.ca_file, s.opts.client_cert, s.opts.client_key)
    except (OSError, ValueError) as exc:
        raise _Failed("starttls", f"cannot load TLS files: {exc}") from None
    name = s.opts.tls_servername or s.opts.host
    try:
        stale = await s.wire.start_tls(ctx, name)
    except WireError as exc:
        raise _Failed("starttls", str(exc)) from None
    s.tls_unconfirmed = True
    if stale:
        shown = stale.decode("utf-8", "backslashreplace")
        s.note("*", f"discarded {len(stale)} bytes the server sent before the TLS handshake "
                    f"(CVE-2011-0411 injection): {shown!r}")
    tls = s.wire.tls
    assert tls is not None
    s.note("*", f"TLS {tls.version} {tls.cipher}; certificate {tls.subject} issued by {tls.issuer}"
                f"{'' if tls.verified else ' (not verified)'}")
    return True


async def _send_message(s: _Session) -> None:
    assert s.wire is not None
    lines = build_message(s.opts)
    for i, line in enumerate(lines):
        if i < MAX_TRANSCRIPT_BODY_LINES:
            s.note("C", line)
    if len(lines) > MAX_TRANSCRIPT_BODY_LINES:
        s.note("*", f"... {len(lines) - MAX_TRANSCRIPT_BODY_LINES} more message lines")
    # RFC 5321 §4.5.2: dot-stuff; every line ends in CRLF, the message ends with CRLF.CRLF.
    payload = b"".join(("." + ln if ln.startswith(".") else ln).encode("utf-8") + b"\r\n"
                       for ln in lines)
    await s.write("data", ".", payload + b".\r\n")


def build_message(opts: ProbeOptions) -> list[str]:
    """The generated test message as lines without terminators (bare CR/LF never survive)."""
    domain = opts.ehlo if "." in opts.ehlo else "mxgate-probe.invalid"
    body = opts.body if opts.body is not None else (
        "This is a test message sent by an SMTP probe to verify mail flow.\n"
        "It can be deleted.\n")
    head = [
        f"From: <{opts.mail_from}>",
        f"To: {', '.join(f'<{r}>' for r in opts.rcpt_to)}",
        f"Subject: {opts.subject}",
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {make_msgid(domain=domain)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    return head + re.split(r"\r\n|\r|\n", body.rstrip("\r\n"))


async def _quit(s: _Session) -> None:
    """RFC 5321 §4.1.1.10: say goodbye; a server that already hung up is not an error."""
    if s.wire is None:
        return
    try:
        await s.send("done", "QUIT")
        await s.reply("done")
    except _Failed:
        pass


def _proxy_header(opts: ProbeOptions, wire: Wire) -> bytes:
    try:
        return build_proxy_header(opts, wire.sockname, wire.peername)
    except ValueError as exc:
        raise _Failed("connect", f"bad --proxy-source {opts.proxy_source!r}: {exc}") from None


def build_proxy_header(opts: ProbeOptions, sockname: tuple, peername: tuple) -> bytes:
    """The PROXY header claiming `opts.proxy_source` (port: ours unless given) to the real peer."""
    src, sport = parse_hostport(opts.proxy_source or "", sockname[1])
    build = proxy_v1_header if opts.proxy_version == 1 else proxy_v2_header
    return build(src, peername[0], sport, peername[1])
