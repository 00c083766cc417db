"""One received message as a readable source: a header block in memory, the body where it was spooled.

Owns: `MessageSource` — the (possibly rewritten) header block plus a slice of the spooled file or
of a small in-memory buffer — and reading it as chunks, as a file (each reader has its own
position: os.pread, so checks in several threads read one file at once) or, for libraries that
need it whole, as bytes. Why: a message in flight should cost about one copy of itself (issue 15);
checks, stamping and the spool read from here instead of each holding the bytes.
Must not know: SMTP sessions, MIME, or what reads it.
"""

from __future__ import annotations

import io
import os
from typing import Iterator

CHUNK = 256 * 1024


class MessageSource:
    """`head` (bytes) followed by `size` bytes of the body, from `fd` at `offset` or from `buffer`."""

    def __init__(self, head: bytes, *, fd: int | None = None, offset: int = 0, size: int = 0,
                 buffer: bytes | memoryview | None = None):
        self.head = bytes(head)
        self._fd = fd
        self._offset = offset
        self._buffer = memoryview(buffer) if buffer is not None else None
        self.body_size = len(self._buffer) if self._buffer is not None else size

    @classmethod
    def from_bytes(cls, data: bytes) -> MessageSource:
        return cls(b"", buffer=data)

    @property
    def in_memory(self) -> bool:
        """The body is a buffer, not a slice of a spool file."""
        return self._buffer is not None

    @property
    def size(self) -> int:
        return len(self.head) + self.body_size

    def with_head(self, head: bytes) -> MessageSource:
        """The same body under another header block (sanitised, or with our fields stamped on top)."""
        out = MessageSource(head, fd=self._fd, offset=self._offset, size=self.body_size)
        out._buffer = self._buffer
        return out

    def split_head(self, limit: int) -> MessageSource:
        """The same message with its header block (up to and including the blank line) as `head`,
        read from the first `limit` bytes; the body stays where it is."""
        assert not self.head, "already split"
        prefix = self._read_body(0, limit + 4)
        if prefix.startswith(b"\r\n"):
            end = 2
        else:
            found = prefix.find(b"\r\n\r\n")
            end = found + 4 if found >= 0 else len(prefix) if self.body_size <= len(prefix) else 0
        out = MessageSource(prefix[:end], fd=self._fd, offset=self._offset + end, size=self.body_size - end)
        if self._buffer is not None:
            out._buffer = self._buffer[end:]
            out.body_size = len(out._buffer)
        return out

    def _read_body(self, pos: int, n: int) -> bytes:
        n = max(0, min(n, self.body_size - pos))
        if n == 0:
            return b""
        if self._buffer is not None:
            return bytes(self._buffer[pos:pos + n])
        return os.pread(self._fd, n, self._offset + pos)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        if self.head:
            yield self.head
        pos = 0
        while pos < self.body_size:
            chunk = self._read_body(pos, size)
            if not chunk:
                raise OSError("spooled message is shorter than recorded")
            pos += len(chunk)
            yield chunk

    def open(self) -> io.BufferedReader:
        """A new binary reader over the whole message (its own position)."""
        return io.BufferedReader(_Raw(self), buffer_size=64 * 1024)

    def read_all(self) -> bytes:
        """The whole message in memory: only for libraries that need bytes (dkimpy), in a bounded slot."""
        return b"".join(self.chunks())


class _Raw(io.RawIOBase):
    def __init__(self, source: MessageSource):
        self.src = source
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        head = self.src.head
        if self.pos < len(head):
            data = head[self.pos:self.pos + len(b)]
        else:
            data = self.src._read_body(self.pos - len(head), len(b))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)
