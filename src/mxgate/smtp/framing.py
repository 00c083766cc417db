"""Framing of the DATA phase: end-of-data, dot-unstuffing, bare CR/LF, line and size limits.

Owns: turning the byte stream after `354` into message bytes, without I/O. A message ends only
at `<CRLF>.<CRLF>` (RFC 5321 §4.1.1.4); any other "end" (`\\n.\\n`, `\\r.\\r` ...) is just data,
and a bare CR or LF anywhere marks the message as refused (550 5.6.0), so a smuggled second
message (CVE-2023-51764 family) can neither start a new transaction nor be stored.

Memory stays bounded: the reader hands out complete-line chunks as it goes (the caller streams
them to disk), keeps at most one partial line, and stops keeping data once the message is doomed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxgate.smtp.limits import MAX_HEADER_BLOCK, MAX_TEXT_LINE

TERMINATOR = b"\r\n.\r\n"


@dataclass
class DataResult:
    """What the end of DATA tells the session. `problem` is a reply reason or None."""

    size: int
    problem: str | None
    leftover: bytes  # bytes after the terminator (pipelined commands)


class DataReader:
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
            if len(buf) > self.max_line + 4:
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
        if len(chunk) > self.max_line and max(map(len, chunk.split(b"\r\n"))) > self.max_line:
            self.problem = "line-too-long-data"
            return b""
        # RFC 5321 §4.5.2: a leading dot added by the client is removed.
        chunk = chunk.replace(b"\r\n..", b"\r\n.")
        if not self._header_done:
            # Every chunk starts with its line's leading CRLF, so an empty line is "\r\n\r\n" inside it.
            idx = chunk.find(b"\r\n\r\n")
            self._header_seen += idx if idx >= 0 else len(chunk)
            self._header_done = idx >= 0
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
