"""A cross-process "this changed" signal for the SQLite store that nobody has to poll (issue 19).

Owns: the stamp file beside the database that a writer rewrites after committing a change the
nodes must act on at once (a policy version: `announce`), and `StampWatch`, an inotify(7) watch
on the database's directory that sleeps until that file is written. PostgreSQL has NOTIFY for
this (store/notify.py). Without inotify (not Linux) `StampWatch.open` answers None and callers
keep polling.
Why: the policy watcher looked at the store every 20 ms to enforce a change within 100 ms; on
this VM each timed wake-up of a thread costs ~100 µs of CPU, ~1% of the mailbox's CPU per
message in bench P1, for changes that come a few times a day.
Must not know: what changed; callers name the channel.
"""

from __future__ import annotations

import logging
import os
import select
import struct

log = logging.getLogger("mxgate.store")

_IN_CLOSE_WRITE = 0x00000008  # <sys/inotify.h>: a file opened for writing was closed
_IN_MOVED_TO = 0x00000080  # a file was renamed into the directory
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name


def stamp_path(db_path: str, channel: str) -> str:
    """Beside the store: `<db>-<channel>.changed` (store/sqlite.py STAMP_SUFFIX for the policy's)."""
    return f"{db_path}-{channel}.changed"


def announce(db_path: str, channel: str, payload: str = "") -> None:
    """After the commit: rewrite `channel`'s stamp; closing it wakes every StampWatch on it. A
    stamp that cannot be written (read-only directory, another user's file) only delays the
    nodes to their next periodic look, so it is not the writer's error."""
    if not db_path:
        return
    path = stamp_path(db_path, channel)
    for attempt in (1, 2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload.encode())
            finally:
                os.close(fd)
            return
        except PermissionError:  # another user's stamp (a CLI run as root): ours replaces it
            if attempt == 1:
                try:
                    os.unlink(path)
                    continue
                except OSError:
                    pass
            log.debug("could not write the %s change stamp %s", channel, path)
            return
        except OSError as exc:
            log.debug("could not write the %s change stamp %s: %s", channel, path, exc)
            return


class StampWatch:
    """Waits for writes of one channel's stamp (from any process), or for `interrupt()`."""

    def __init__(self, fd: int, name: bytes):
        self._fd = fd
        self._name = name
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @classmethod
    def open(cls, db_path: str, channel: str) -> "StampWatch | None":
        """A watch on `channel`'s stamp beside `db_path`, or None where inotify is unavailable."""
        if not db_path or not hasattr(os, "pipe2"):
            return None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return None
            directory = os.path.dirname(os.path.abspath(db_path)) or "."
            if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CLOSE_WRITE | _IN_MOVED_TO) < 0:
                os.close(fd)
                return None
        except (OSError, AttributeError):  # no libc symbol (not Linux), or no descriptors left
            return None
        return cls(fd, os.fsencode(os.path.basename(stamp_path(db_path, channel))))

    def wait(self, timeout: float) -> bool:
        """True once the stamp was written (or `interrupt()` was called) within `timeout` seconds;
        writes of other files in the directory are skipped."""
        import time

        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic())
            ready, _, _ = select.select([self._fd, self._pipe_r], [], [], left)
            if self._pipe_r in ready:
                _drain(self._pipe_r)
                return True
            if self._fd in ready and self._names_written(self._fd):
                return True
            if not ready and left == 0.0:
                return False

    def _names_written(self, fd: int) -> bool:
        data = _drain(fd)
        seen, pos = False, 0
        while pos + _EVENT.size <= len(data):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0")
            seen = seen or name == self._name
            pos += _EVENT.size + length
        return seen

    def interrupt(self) -> None:
        try:
            os.write(self._pipe_w, b"x")
        except OSError:  # the pipe is full: a wake is pending anyway
            pass

    def close(self) -> None:
        for fd in (self._fd, self._pipe_r, self._pipe_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
