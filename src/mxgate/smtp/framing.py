"""Framing of the DATA phase and of BDAT chunks: end-of-data, dot-unstuffing, bare CR/LF, line and size limits.

Owns: turning the byte stream after `354` (DataReader), or the counted chunks of BDAT (RFC 3030,
ChunkReader), into message bytes, without I/O. A message ends only
at `<CRLF>.<CRLF>` (RFC 5321 §4.1.1.4); any other "end" (`\\n.\\n`, `\\r.\\r` ...) is just data,
and a bare CR or LF anywhere marks the message as refused (550 5.6.0), so a smuggled second
message (CVE-2023-51764 family) can neither start a new transaction nor be stored.

BDAT content is data by count: no terminator is looked for and nothing is unstuffed, so
"\\r\\n.\\r\\n" or "QUIT" inside a chunk is just message text. Every other rule is DataReader's own
code (`_accept`): the same bare CR/LF refusal, line and header limits and size, so a message
received by BDAT is the byte-for-byte message DATA would have received, with the same size.

Memory stays bounded: the reader hands out complete-line chunks as it goes (the caller streams
them to disk), keeps at most one partial line, and stops keeping data once the message is doomed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxgate.smtp.limits import MAX_HEADER_BLOCK, MAX_TEXT_LINE

TERMINATOR = b"\r\n.\r\n"


def has_long_line(data: bytes, max_line: int) -> bool:
    """A line (the bytes between two CRLFs, or before the first or after the last) longer than
    `max_line`. Each step finds the last CRLF within `max_line` + 2 bytes of the current line's
    start, so every line up to it is short enough and many short lines are passed in one C-speed
    search: ~2 µs for a 6 KB message where splitting it into lines took ~12."""
    end = len(data)
    start = 0
    while end - start > max_line:
        crlf = data.rfind(b"\r\n", start, start + max_line + 2)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


@dataclass
class DataResult:
    """What the end of DATA tells the session. `problem` is a reply reason or None."""

    size: int
    problem: str | None
    leftover: bytes  # bytes after the terminator (pipelined commands)


class DataReader:
    unstuff = True  # DATA only: RFC 5321 §4.5.2

    def __init__(self, max_size: int, max_line: int = MAX_TEXT_LINE, max_header: int = MAX_HEADER_BLOCK):
        self.max_size = max_size
        self.max_line = max_line
        self.max_header = max_header
        # A virtual CRLF before the first byte lets ".\r\n" at the very start end the message
        # and ".." at the start be unstuffed with the same rules as everywhere else.
        self._carry = b"\r\n"
        self._first = True
        self.size = 0
        self.problem: str | None = None
        self._header_done = False
        self._header_seen = 0
        self._ended_crlf = False  # the last accepted chunk ended in CRLF (an empty line may span chunks)

    def feed(self, data: bytes) -> tuple[bytes, DataResult | None]:
        """Return (message bytes to append, result when the terminator was seen)."""
        buf = self._carry + data
        end = buf.find(TERMINATOR)
        if end >= 0:
            chunk, self._carry = buf[: end + 2], b""
            out = self._accept(chunk)
            if self.problem is None and not self._header_done and self._header_seen > self.max_header:
                self.problem = "header-too-big"
            return out, DataResult(self.size, self.problem, bytes(buf[end + 5 :]))
        if self.problem is not None:
            # Doomed: keep only what may hold the start of the terminator.
            self._carry = buf[-4:]
            return b"", None
        cut = buf.rfind(b"\r\n", 0, max(0, len(buf) - 3))
        if cut <= 0:
            self._carry = buf
            # The line is the bytes up to its CRLF, which may sit in the last bytes kept back for a
            # terminator's start: the whole buffer is longer than the line by those (a 998-byte line
            # whose read ended just past its CRLF was refused, depending on where TCP cut the stream).
            line_end = buf.find(b"\r\n", 2)
            if (len(buf) if line_end < 0 else line_end) > self.max_line + 4:
                self.problem = "line-too-long-data"
                self._carry = buf[-4:]
            return b"", None
        self._carry = buf[cut:]
        return self._accept(buf[:cut]), None

    def _accept(self, chunk: bytes) -> bytes:
        """Check and unstuff a chunk that starts at a line boundary (with its leading CRLF)."""
        if self.problem is not None:
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            self.problem = "bare-newline"
            return b""
        if len(chunk) > self.max_line and has_long_line(chunk, self.max_line):
            self.problem = "line-too-long-data"
            return b""
        if self.unstuff:
            # RFC 5321 §4.5.2: a leading dot added by the client is removed.
            chunk = chunk.replace(b"\r\n..", b"\r\n.")
        if not self._header_done:
            # Every chunk starts with its line's leading CRLF, so an empty line is "\r\n\r\n" inside
            # it — or the CRLF ending the last chunk and the one starting this one (a read boundary
            # right after the header's last line: missed before, so a big body counted as header).
            idx = -2 if self._ended_crlf else chunk.find(b"\r\n\r\n")
            self._header_seen += max(idx, 0) if idx != -1 else len(chunk)
            self._header_done = idx != -1
            self._ended_crlf = chunk.endswith(b"\r\n")
            if self._header_seen > self.max_header:
                self.problem = "header-too-big"
                return b""
        if self._first:
            chunk = chunk[2:]
            self._first = False
        self.size += len(chunk)
        if self.size > self.max_size:
            self.problem = "message-too-big"
            return b""
        return chunk


class ChunkReader(DataReader):
    """The message bytes of a BDAT sequence (RFC 3030 §2). The session counts the chunks' bytes
    off the wire and feeds exactly those here; `finish()` after the LAST chunk. Lines are checked
    as DataReader checks them (complete lines only; a partial line waits in `_carry`, bounded)."""

    unstuff = False

    def feed_chunk(self, data: bytes) -> bytes:
        """Message bytes to append (complete lines) for `data`, part of a chunk."""
        if self.problem is not None:
            return b""  # doomed: the bytes are still counted off the wire by the session, not kept
        buf = self._carry + data
        cut = buf.rfind(b"\r\n")
        if cut <= 0:
            self._carry = buf
            if len(buf) > self.max_line + 4:
                self.problem = "line-too-long-data"
                self._carry = b""
            return b""
        self._carry = buf[cut:]
        return self._accept(buf[:cut])

    def finish(self) -> tuple[bytes, DataResult]:
        """The last bytes and the result once the LAST chunk is in. A message whose last line has
        no CRLF gets one, as DATA's terminator always supplies it, so both carry the same bytes
        (and DKIM's canonical body is the same either way, RFC 6376 §3.4.3/§3.4.4)."""
        out = b""
        if self.problem is None:
            tail = self._carry if self._carry.endswith(b"\r\n") else self._carry + b"\r\n"
            self._carry = b""
            out = self._accept(tail)
            if self.problem is None and not self._header_done and self._header_seen > self.max_header:
                self.problem = "header-too-big"
        return (out if self.problem is None else b""), DataResult(self.size, self.problem, b"")
