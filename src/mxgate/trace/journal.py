"""The trace's local journal: rows the database could not take, kept on disk until it can.

Owns: one append-only file of JSON lines, each append fsync'd before it returns (a trace row
is an audit record: it must survive the database's outage and this process's crash), reading
it back in order, and emptying it once replayed. Must not know the database or the row shape.

A crash mid-append leaves at most a torn last line, which was never fsync'd and is skipped on
reading. A crash between the replay's commit and `clear()` replays those rows again: a
duplicate row beats a lost one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("mxgate.trace")


class Journal:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # under the 0700 home
        if not self.path.exists():
            self._sync_create()
        self.pending = self._count()  # items waiting for the database (a metric too)

    def _sync_create(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the file's name is durable too
        finally:
            os.close(dfd)

    def _count(self) -> int:
        return sum(1 for _ in self.read())

    def append(self, items: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps(item, default=str, separators=(",", ":")) for item in items]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.pending += len(lines)

    def read(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a torn last line from a crash mid-append: never fsync'd
                log.warning("trace journal %s: skipped an incomplete line", self.path)
        return out

    def keep_from(self, index: int) -> None:
        """Drop the first `index` items (replayed): the rest is rewritten atomically."""
        rest = self.read()[index:]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, "".join(json.dumps(i, default=str, separators=(",", ":")) + "\n" for i in rest).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.pending = len(rest)

    def clear(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.pending = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
