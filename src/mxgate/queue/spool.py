"""The gateway's durable queue: one file per message in named directories, like Postfix.

Owns: the spool layout, the queue-file format, crash recovery, and the in-memory index of
entry headers (never message bodies) that the relay and the queue CLI read.
Must not know: SMTP, relaying, retry arithmetic (``queue/scheduler.py``), DSN contents
(``queue/dsn.py``). Every write goes through the shared :class:`GroupCommitter`.

Layout under the spool root: ``incoming/`` (accepted, never tried), ``active/`` (claimed by
the relay), ``deferred/`` (waiting for ``next_attempt``), ``hold/`` (parked by an admin),
``corrupt/`` (failed verification; kept for inspection, never retried), ``tmp/`` (files being
written, and delivered entries' files kept for reuse; emptied on open).

Queue file: ``MXGQ1 <header JSON>\\n`` + message bytes + ``\\n#END <sha256 hex>\\n``, the
hash covering everything before the END record. Commit protocol (RFC 5321 §6.1: no 250 before
this returns): write ``tmp/`` → fdatasync → rename into the queue directory → fsync that
directory → the END record is what marks the file complete. Each rewrite (defer, partial
delivery) writes a whole new file with ``revision + 1`` and unlinks the old one only after the
new one is durable, so a crash leaves two revisions at worst; recovery keeps the highest.
A delivered entry's file (up to KEEP_SIZE) is not unlinked but renamed into ``tmp/`` (both
directories synced, so it is gone from the queue as durably as an unlink makes it) and a later
enqueue writes over it instead of creating a file: a journal-less ext4 pays up to ~1 ms of
system CPU to allocate an inode after many deletions (issue 19). Everything else is the same:
the write is synced before the rename that publishes it.

Recovery (``DiskSpool.open``): files in ``tmp/`` are deleted; a queue file without a valid END
record is a partial write that was never acknowledged, so it is deleted and logged; a file whose
checksum, header or name is wrong moves to ``corrupt/``; entries left in ``active/`` by a crash
go back to ``deferred/`` (they may be relayed twice: duplicates are allowed, loss is not).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Protocol

from mxgate.durable import GroupCommitter, MoveFile, RemoveFile, WriteFile, private_dir, sync_directory
from mxgate.handoff import CheckThreads

log = logging.getLogger(__name__)

QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")
LIVE_QUEUES = ("incoming", "active", "deferred", "hold")  # entries the index serves
DUE_QUEUES = ("incoming", "deferred")  # active is being tried; hold waits for an admin
TMP_DIR = "tmp"
MAGIC = b"MXGQ1 "
END_RE = re.compile(rb"\n#END ([0-9a-f]{64})\n\Z")
END_LEN = len(b"\n#END \n") + 64
QUEUE_ID_RE = re.compile(r"^[0-9A-F]{20}$")
COPY_CHUNK = 64 * 1024
# A message enqueued from memory is kept there until its first relay attempt reads it (issue 19:
# no read-back of the file just written, no thread hop for it): up to this many bytes each and in
# all; beyond, or after a restart, the relay reads the file as before. The file is written and
# synced before the 250 either way.
FRESH_MAX = 256 * 1024
FRESH_TOTAL = 16 * 1024 * 1024
# Delivered entries' files kept in tmp/ for reuse by the next enqueues, at most this many and
# only files up to this size (a pool for the messages in flight, not a reserve of disk space).
KEEP_MAX = 64
KEEP_SIZE = 64 * 1024
ADOPT_RETRY = 5.0  # seconds between tries to adopt a directory whose old worker still holds it
_KEEP_ON_TIE = {"hold": 3, "deferred": 2, "active": 1, "incoming": 0}  # duplicate revisions


class RcptState(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent; the relay owes the sender a DSN


class SpoolError(Exception):
    """Base of spool errors."""


class CorruptEntryError(SpoolError):
    """A queue file is complete but fails verification (checksum, header, name)."""


class PartialEntryError(SpoolError):
    """A queue file has no END record: a write that never completed."""


class StaleEntryError(SpoolError):
    """The entry changed, moved or is being changed by another task since it was read."""


@dataclass(frozen=True)
class Recipient:
    """One envelope recipient and what has happened to it so far."""

    address: str
    state: RcptState = RcptState.PENDING
    status: str | None = None  # RFC 3463 code of the last answer, e.g. "4.4.1"
    error: str | None = None  # last diagnostic, e.g. "smtp; 451 4.3.0 try later"
    remote_mta: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    """A queue file's header as read or written; the message bytes stay on disk."""

    queue_id: str
    queue: str
    sender: str
    recipients: tuple[Recipient, ...]
    arrival: float
    attempts: int
    next_attempt: float
    last_error: str | None
    meta: Mapping[str, Any]
    size: int
    revision: int
    body_offset: int

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.state is RcptState.PENDING)

    @property
    def failed(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.state is RcptState.FAILED)


@dataclass(frozen=True)
class RecoveryReport:
    """What ``DiskSpool.open`` found: file names discarded, moved to corrupt/, and requeued."""

    loaded: int
    discarded: tuple[str, ...]
    corrupted: tuple[str, ...]
    requeued: tuple[str, ...]


def new_queue_id(now: float) -> str:
    """20 upper-case hex digits: microseconds since the epoch, then randomness (sorts by time)."""
    return f"{int(now * 1_000_000) & (16**14 - 1):014X}{secrets.token_hex(3).upper()}"


def disk_free_ok(path: str | os.PathLike[str], min_free_bytes: int, min_free_inodes: int = 64) -> bool:
    """Whether the filesystem holding ``path`` can take more mail.

    Used to answer ``452 4.3.1`` at MAIL (RFC 3463 §3.4: mail system full) rather than accept
    and then fail to store. Filesystems without an inode limit report ``f_files == 0``.
    """
    return _free_over(os.statvfs(path), min_free_bytes, min_free_inodes)


def _free_over(st, min_free_bytes: int, min_free_inodes: int) -> bool:
    if st.f_bavail * st.f_frsize < min_free_bytes:
        return False
    return st.f_files == 0 or st.f_favail >= min_free_inodes


class DiskFree:
    """``disk_free_ok`` asked at every MAIL, with an "enough" answer reused for at most
    ``interval`` seconds (one statfs per message was a syscall per message, issue 19).

    Only a reading with at least twice the threshold free is reused, so a disk near the
    threshold is read at every MAIL; a "too full" answer and an error are never reused. The
    memo is keyed on everything that can change the answer: path and both thresholds."""

    __slots__ = ("interval", "_clock", "_statvfs", "_key", "_until")

    def __init__(self, interval: float = 0.1, clock=time.monotonic, statvfs=os.statvfs) -> None:
        self.interval = interval
        self._clock = clock
        self._statvfs = statvfs
        self._key: tuple | None = None
        self._until = 0.0

    def ok(self, path: str | os.PathLike[str], min_free_bytes: int, min_free_inodes: int = 64) -> bool:
        key = (os.fspath(path), min_free_bytes, min_free_inodes)
        now = self._clock()
        if key == self._key and now < self._until:
            return True
        self._key = None
        st = self._statvfs(path)
        if not _free_over(st, min_free_bytes, min_free_inodes):
            return False
        if _free_over(st, 2 * min_free_bytes, 2 * min_free_inodes):
            self._key, self._until = key, now + self.interval
        return True


# -- file format ------------------------------------------------------------------------------


_RCPT_FIELDS = tuple(f.name for f in dataclasses.fields(Recipient))


def _header_line(entry: QueueEntry) -> bytes:
    # Field by field, not dataclasses.asdict (a deep copy: ~10 µs per recipient, issue 19).
    rcpts = [{k: v for k in _RCPT_FIELDS if (v := getattr(r, k)) is not None} for r in entry.recipients]
    for r in rcpts:
        r["state"] = RcptState(r["state"]).value
    header = {
        "id": entry.queue_id,
        "sender": entry.sender,
        "recipients": rcpts,
        "arrival": entry.arrival,
        "attempts": entry.attempts,
        "next_attempt": entry.next_attempt,
        "last_error": entry.last_error,
        "meta": dict(entry.meta),
        "size": entry.size,
        "revision": entry.revision,
    }
    # ensure_ascii keeps the header one line whatever the caller's metadata holds.
    return MAGIC + json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def _entry_from_header(line: bytes, queue: str) -> QueueEntry:
    try:
        if not line.startswith(MAGIC):
            raise ValueError("bad magic")
        h = json.loads(line[len(MAGIC) :])
        rcpts = tuple(
            Recipient(str(r["address"]), RcptState(r["state"]), r.get("status"), r.get("error"), r.get("remote_mta"))
            for r in h["recipients"]
        )
        entry = QueueEntry(
            queue_id=str(h["id"]),
            queue=queue,
            sender=str(h["sender"]),
            recipients=rcpts,
            arrival=float(h["arrival"]),
            attempts=int(h["attempts"]),
            next_attempt=float(h["next_attempt"]),
            last_error=h["last_error"],
            meta=MappingProxyType(dict(h["meta"])),
            size=int(h["size"]),
            revision=int(h["revision"]),
            body_offset=len(line) + 1,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptEntryError(f"unreadable header: {exc}") from None
    if not rcpts or not QUEUE_ID_RE.match(entry.queue_id):
        raise CorruptEntryError("header without recipients or with a bad queue id")
    return entry


def parse_queue_file(raw: bytes, queue: str, name: str) -> QueueEntry:
    """Verify a whole queue file and return its entry; raises Partial/CorruptEntryError."""
    match = END_RE.search(raw, max(0, len(raw) - END_LEN))
    if match is None:
        raise PartialEntryError(f"{queue}/{name}: no END record")
    content = raw[: match.start()]
    if hashlib.sha256(content).hexdigest().encode("ascii") != match.group(1):
        raise CorruptEntryError(f"{queue}/{name}: checksum mismatch")
    newline = content.find(b"\n")
    if newline < 0:
        raise CorruptEntryError(f"{queue}/{name}: no header line")
    entry = _entry_from_header(content[:newline], queue)
    if entry.queue_id != name or entry.size != len(content) - newline - 1:
        raise CorruptEntryError(f"{queue}/{name}: header does not match file")
    return entry


def _writer(header: bytes, body, source: Path | None, offset: int, size: int):
    """Content callback for WriteFile: header, body (bytes, an object with ``chunks()`` — a
    smtp.source.MessageSource read from its spool file — or copied from ``source``), END."""

    def write(fh: BinaryIO) -> None:
        digest = hashlib.sha256(header)
        fh.write(header)
        if isinstance(body, (bytes, bytearray)):
            digest.update(body)
            fh.write(body)
        elif body is not None:
            for chunk in body.chunks():
                digest.update(chunk)
                fh.write(chunk)
        else:
            with open(source, "rb") as src:  # type: ignore[arg-type]
                src.seek(offset)
                left = size
                while left:
                    chunk = src.read(min(COPY_CHUNK, left))
                    if not chunk:
                        raise CorruptEntryError(f"{source} is shorter than its header says")
                    digest.update(chunk)
                    fh.write(chunk)
                    left -= len(chunk)
        fh.write(b"\n#END " + digest.hexdigest().encode("ascii") + b"\n")

    return write


# -- the spool --------------------------------------------------------------------------------


class Spool(Protocol):
    """What the runner, the gateway and the queue CLI use of a queue: the disk spool below and
    the database queue (queue/dbspool.py) both provide all of it, so no caller asks which it has."""

    root: Path  # local directory: spill files, disk-space checks, queue CLI requests
    recovery: RecoveryReport
    blocking_reads: bool  # get/due/count do I/O that must stay off the event loop

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def get(self, queue_id: str) -> QueueEntry | None: ...
    def list(self, queue: str | None = None) -> list[QueueEntry]: ...
    def count(self, queue: str | None = None) -> int: ...
    def due(self, now: float) -> list[QueueEntry]: ...
    async def open_message(self, entry: QueueEntry) -> bytes: ...
    async def enqueue(self, sender: str, recipients: Iterable[str], data: bytes,
                      meta: Mapping[str, Any] | None = None) -> QueueEntry: ...
    async def claim(self, entry: QueueEntry) -> QueueEntry: ...
    async def settle(self, entry: QueueEntry, outcomes: Iterable[Recipient], *, next_attempt: float | None = None,
                     error: str | None = None) -> QueueEntry | None: ...
    async def mark_corrupt(self, entry: QueueEntry) -> None: ...
    async def hold(self, entry: QueueEntry) -> QueueEntry: ...
    async def release(self, entry: QueueEntry) -> QueueEntry: ...
    async def remove(self, entry: QueueEntry) -> None: ...


class DiskSpool:
    """Durable queue under ``root``; open with :meth:`DiskSpool.open` (blocking recovery scan).

    Every mutating method is a coroutine that returns only once the change is durable, and
    takes the entry it was given as proof of what the caller saw: a stale entry (changed or
    moved since) or one another task is changing raises :class:`StaleEntryError`.
    """

    def __init__(self, root: Path, committer: GroupCommitter) -> None:
        self.root = root
        self.committer = committer
        self._index: dict[str, QueueEntry] = {}
        self._busy: set[str] = set()
        self.recovery = RecoveryReport(0, (), (), ())
        self.strays: list[Path] = []  # other processes' directories to adopt once their owner is gone
        self.siblings: list[Path] = []  # in the first process: the workers' directories, for /metrics
        self._adopter: asyncio.Task | None = None
        self._readers = CheckThreads(2, "mxgate-spool-read")  # issue 19: cheaper than to_thread per relay
        self._fresh: collections.OrderedDict[str, bytes] = collections.OrderedDict()  # queue id → message (FRESH_*)
        self._fresh_bytes = 0
        self._kept: list[Path] = []  # files in tmp/ that delivered entries left, for enqueue to write over
        self._keeping = 0  # removals in flight that will add one
        self._kept_names = itertools.count()  # tmp/ is emptied on open: unique for this spool's life

    @classmethod
    def open(cls, root: str | os.PathLike[str], committer: GroupCommitter) -> DiskSpool:
        """Create the directories if needed and recover; run before serving (or in a thread)."""
        spool = cls(Path(root), committer)
        spool.recovery = spool._recover()
        return spool

    blocking_reads = False  # the index is in memory

    def start(self) -> None:
        """Nothing runs in the background (the database queue renews leases), except adopting a
        stray directory whose old owner was still stopping when this process started."""
        if self.strays:
            self._adopter = asyncio.get_running_loop().create_task(self._adopt_later())
        from mxgate import metrics

        for path in self.siblings:  # the first process serves /metrics for the whole node
            metrics.watch_spool(path.name, SpoolFiles(path))

    async def stop(self) -> None:
        """Nothing to hand back: a crash-safe directory needs no goodbye."""
        from mxgate import metrics

        self._readers.stop()
        for path in self.siblings:
            metrics.unwatch_spool(path.name)
        if self._adopter:
            self._adopter.cancel()
            await asyncio.gather(self._adopter, return_exceptions=True)

    async def adopt_strays(self, name: str, processes: int) -> int:
        """In process 0: adopt every directory of queue `name` whose worker index is not below
        `processes` (the node now runs fewer); ones still owned are kept in `strays` for later."""
        from mxgate.errors import ConfigError

        moved = 0
        self.strays = []
        for index, path in process_spools(self.root.parent, name):
            if index < processes:
                continue
            try:
                n = await self.adopt(path)
            except ConfigError:  # its old worker is still stopping: try again from start()
                self.strays.append(path)
                continue
            if n:
                log.warning("spool %s: adopted %d entries of %s (no process runs worker %d now)", self.root, n,
                            path, index)
            moved += n
        return moved

    async def _adopt_later(self) -> None:
        from mxgate.errors import ConfigError

        while self.strays:
            await asyncio.sleep(ADOPT_RETRY)
            for path in list(self.strays):
                try:
                    n = await self.adopt(path)
                except ConfigError:
                    continue
                except OSError as exc:
                    log.warning("spool %s: cannot adopt %s yet: %s", self.root, path, exc)
                    continue
                self.strays.remove(path)
                log.warning("spool %s: adopted %d entries of %s", self.root, n, path)

    # -- reading ---------------------------------------------------------------------------

    def path_of(self, entry: QueueEntry) -> Path:
        return self.root / entry.queue / entry.queue_id

    def get(self, queue_id: str) -> QueueEntry | None:
        return self._index.get(queue_id)

    def list(self, queue: str | None = None) -> list[QueueEntry]:
        """Entries by arrival, optionally of one queue directory."""
        found = (e for e in self._index.values() if queue is None or e.queue == queue)
        return sorted(found, key=lambda e: (e.arrival, e.queue_id))

    def count(self, queue: str | None = None) -> int:
        return len(self._index) if queue is None else sum(1 for e in self._index.values() if e.queue == queue)

    def due(self, now: float) -> list[QueueEntry]:
        """Entries to try now (incoming/deferred, next_attempt <= now), oldest due first."""
        found = [
            e
            for e in self._index.values()
            if e.queue in DUE_QUEUES and e.next_attempt <= now and e.queue_id not in self._busy
        ]
        return sorted(found, key=lambda e: (e.next_attempt, e.arrival, e.queue_id))

    def read_message(self, entry: QueueEntry) -> bytes:
        """The message bytes, verified against the END checksum (blocking)."""
        raw = self.path_of(entry).read_bytes()
        parsed = parse_queue_file(raw, entry.queue, entry.queue_id)
        return raw[parsed.body_offset : parsed.body_offset + parsed.size]

    async def open_message(self, entry: QueueEntry) -> bytes:
        """The message bytes for relaying: the copy kept since enqueue for a first attempt, else
        read off the event loop."""
        data = self._forget_fresh(entry.queue_id)
        if data is not None and entry.revision == 1 and len(data) == entry.size:
            return data
        return await self._readers.run(self.read_message, (entry,), None, None)

    def _keep_fresh(self, queue_id: str, data: bytes) -> None:
        if len(data) > FRESH_MAX:
            return
        while self._fresh and self._fresh_bytes + len(data) > FRESH_TOTAL:  # the oldest go back to disk reads
            self._fresh_bytes -= len(self._fresh.popitem(last=False)[1])
        self._fresh[queue_id] = data
        self._fresh_bytes += len(data)

    def _forget_fresh(self, queue_id: str) -> bytes | None:
        data = self._fresh.pop(queue_id, None)
        if data is not None:
            self._fresh_bytes -= len(data)
        return data

    # -- writing ---------------------------------------------------------------------------

    async def enqueue(
        self,
        sender: str,
        recipients: Iterable[str],
        data,
        meta: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> QueueEntry:
        """Store a new message in ``incoming/``; returns once durable (the caller may say 250).

        ``data``: bytes, or a MessageSource streamed from where it was spooled (no copy in memory)."""
        now = time.time() if now is None else now
        rcpts = tuple(Recipient(a) for a in recipients)
        if not rcpts:
            raise ValueError("a queue entry needs at least one recipient")
        entry = QueueEntry(
            queue_id=new_queue_id(now), queue="incoming", sender=sender, recipients=rcpts, arrival=now,
            attempts=0, next_attempt=now, last_error=None, meta=MappingProxyType(dict(meta or {})),
            size=data.size if hasattr(data, "chunks") else len(data), revision=1, body_offset=0,
        )
        header = _header_line(entry)  # TypeError here names unserialisable metadata
        entry = dataclasses.replace(entry, body_offset=len(header))
        # From memory (bytes, or a source whose body is buffered) and small: one copy kept for the relay.
        kept = (bytes(data) if isinstance(data, (bytes, bytearray)) else
                b"".join(data.chunks()) if entry.size <= FRESH_MAX and getattr(data, "in_memory", False) else None)
        reused = self._kept.pop() if self._kept else None  # this write's alone from here on
        await self.committer.commit(
            WriteFile(reused or self._tmp_path(entry), self.path_of(entry),
                      _writer(header, data if kept is None else kept, None, 0, 0), reuse=reused is not None)
        )
        self._index[entry.queue_id] = entry
        if kept is not None:
            self._keep_fresh(entry.queue_id, kept)
        return entry

    async def settle(
        self,
        entry: QueueEntry,
        outcomes: Iterable[Recipient],
        *,
        next_attempt: float | None = None,
        error: str | None = None,
    ) -> QueueEntry | None:
        """Record one delivery attempt's per-recipient outcomes in a single durable rewrite.

        Each outcome replaces the pending recipient of the same address: DELIVERED, FAILED, or
        PENDING again (deferred: then ``next_attempt`` is required, ``attempts`` grows and the
        entry moves to ``deferred/``). With no recipient left pending the file is removed and
        None returned — so build and enqueue the DSN for FAILED recipients *before* settling.
        """
        outcomes = {o.address: o for o in outcomes}
        pending = set(entry.pending)
        unknown = set(outcomes) - pending
        if unknown:
            raise ValueError(f"not pending recipients of {entry.queue_id}: {sorted(unknown)}")
        rcpts = tuple(outcomes.get(r.address, r) if r.state is RcptState.PENDING else r for r in entry.recipients)
        deferred = [o for o in outcomes.values() if o.state is RcptState.PENDING]
        if deferred and next_attempt is None:
            raise ValueError("deferring recipients needs next_attempt")
        async with self._claim(entry):
            self._forget_fresh(entry.queue_id)
            if not any(r.state is RcptState.PENDING for r in rcpts):
                await self._remove_keeping(entry)
                del self._index[entry.queue_id]
                return None
            new = dataclasses.replace(entry, recipients=rcpts, revision=entry.revision + 1)
            if deferred:
                new = dataclasses.replace(
                    new,
                    queue=entry.queue if entry.queue == "hold" else "deferred",
                    attempts=entry.attempts + 1,
                    next_attempt=next_attempt,
                    last_error=error or deferred[0].error,
                )
            return await self._rewrite(entry, new)

    async def defer(
        self, entry: QueueEntry, rcpts: Iterable[str], error: str, next_attempt: float,
        *, status: str | None = None, remote_mta: str | None = None,
    ) -> QueueEntry:
        """Try ``rcpts`` again at ``next_attempt`` (from ``scheduler.next_attempt``)."""
        outcomes = [Recipient(a, RcptState.PENDING, status, error, remote_mta) for a in rcpts]
        result = await self.settle(entry, outcomes, next_attempt=next_attempt, error=error)
        assert result is not None  # deferred recipients stay pending
        return result

    async def mark_delivered(self, entry: QueueEntry, rcpts: Iterable[str]) -> QueueEntry | None:
        return await self.settle(entry, [Recipient(a, RcptState.DELIVERED) for a in rcpts])

    async def mark_failed(
        self, entry: QueueEntry, rcpts: Iterable[str], error: str,
        *, status: str = "5.0.0", remote_mta: str | None = None,
    ) -> QueueEntry | None:
        return await self.settle(entry, [Recipient(a, RcptState.FAILED, status, error, remote_mta) for a in rcpts])

    async def claim(self, entry: QueueEntry) -> QueueEntry:
        """Move to ``active/`` while the relay tries it, so ``due()`` stops offering it.

        A plain rename here on the loop, not a committer job, and not made durable (issue 19:
        two directory fsyncs, ~50 µs of CPU and ~250 µs of the committer's time each, and a
        thread hand-off per relayed message): after a crash recovery tries an entry again
        whether it is found in ``active/`` or still where it was, so either name is correct,
        and rename(2) leaves the file under one of them. What follows the attempt (a removal
        or a rewrite) is durable as before."""
        async with self._claim(entry):
            new = dataclasses.replace(entry, queue="active")
            if new.queue != entry.queue:
                os.replace(self.path_of(entry), self.path_of(new))
            self._index[entry.queue_id] = new
            return new

    async def hold(self, entry: QueueEntry) -> QueueEntry:
        return await self._move(entry, "hold")

    async def release(self, entry: QueueEntry) -> QueueEntry:
        """Back from ``hold/`` to ``deferred/``; it is tried at its recorded next_attempt."""
        if entry.queue != "hold":
            raise StaleEntryError(f"{entry.queue_id} is not on hold")
        return await self._move(entry, "deferred")

    async def mark_corrupt(self, entry: QueueEntry) -> None:
        """Set aside an entry whose file failed verification (e.g. ``read_message`` raised)."""
        await self._move(entry, "corrupt")
        self._index.pop(entry.queue_id, None)
        self._forget_fresh(entry.queue_id)

    async def remove(self, entry: QueueEntry) -> None:
        async with self._claim(entry):
            await self.committer.commit(RemoveFile(self.path_of(entry)))
            del self._index[entry.queue_id]
            self._forget_fresh(entry.queue_id)

    # -- internals -------------------------------------------------------------------------

    def _tmp_path(self, entry: QueueEntry) -> Path:
        return self.root / TMP_DIR / f"{entry.queue_id}.{entry.revision}.{secrets.token_hex(4)}"

    async def _remove_keeping(self, entry: QueueEntry) -> None:
        """Remove a settled entry's file durably, keeping it in tmp/ for a later enqueue when the
        pool has room and the file is small (RemoveFile.keep_as)."""
        if len(self._kept) + self._keeping >= KEEP_MAX or entry.body_offset + entry.size + END_LEN > KEEP_SIZE:
            await self.committer.commit(RemoveFile(self.path_of(entry)))
            return
        keep = self.root / TMP_DIR / f"kept.{next(self._kept_names)}"
        self._keeping += 1
        try:
            await self.committer.commit(RemoveFile(self.path_of(entry), keep_as=keep))
        finally:
            self._keeping -= 1
        self._kept.append(keep)  # only once durable and no name in a queue refers to it

    def _claim(self, entry: QueueEntry) -> _EntryGuard:
        return _EntryGuard(self, entry)

    async def _rewrite(self, old: QueueEntry, new: QueueEntry) -> QueueEntry:
        header = _header_line(new)
        new = dataclasses.replace(new, body_offset=len(header))
        writer = _writer(header, None, self.path_of(old), old.body_offset, old.size)
        await self.committer.commit(
            WriteFile(self._tmp_path(new), self.path_of(new), writer, supersedes=self.path_of(old))
        )
        self._index[new.queue_id] = new
        return new

    async def _move(self, entry: QueueEntry, queue: str) -> QueueEntry:
        async with self._claim(entry):
            new = dataclasses.replace(entry, queue=queue)
            if new.queue != entry.queue:
                await self.committer.commit(MoveFile(self.path_of(entry), self.path_of(new)))
            self._index[entry.queue_id] = new
            return new

    async def adopt(self, stray: str | os.PathLike[str]) -> int:
        """Take over the directory of a worker process the node no longer runs (restarted with
        fewer `[node] workers`): its entries, recovered first, move into this spool with their
        queue ids, attempts and revisions. Each move is one rename made durable in both
        directories, so after a crash every file is in exactly one spool: never lost, never
        doubled. ConfigError when a process still owns `stray`. Returns how many entries moved."""
        stray = Path(stray)
        fd = lock_spool(stray)
        try:
            other = await asyncio.to_thread(DiskSpool.open, stray, self.committer)
            entries = [e for e in other.list() if e.queue_id not in self._index]
            await asyncio.gather(*(self.committer.commit(MoveFile(other.path_of(e), self.path_of(e))) for e in entries))
            for e in entries:
                self._index[e.queue_id] = e
            for path in (stray / "corrupt").iterdir():  # kept for inspection, beside this spool's own
                os.replace(path, self.root / "corrupt" / f"{stray.name}.{path.name}")
            sync_directory(self.root / "corrupt")
            left = other.count()
            if left > len(entries):  # the same queue id in both (never made by new_queue_id in practice)
                log.warning("spool %s: %d entries left in place (their ids exist in %s)", stray, left - len(entries),
                            self.root)
            return len(entries)
        finally:
            os.close(fd)

    def _recover(self) -> RecoveryReport:
        for name in (*QUEUES, TMP_DIR):
            private_dir(self.root / name)
        sync_directory(self.root)
        for leftover in (self.root / TMP_DIR).iterdir():  # unfinished writes, never acknowledged
            leftover.unlink()
        discarded: list[str] = []
        corrupted: list[str] = []
        best: dict[str, QueueEntry] = {}
        losers: list[QueueEntry] = []
        for queue in LIVE_QUEUES:
            for path in sorted((self.root / queue).iterdir()):
                label = f"{queue}/{path.name}"
                try:
                    if not QUEUE_ID_RE.match(path.name):  # not ours: keep it, out of the way
                        raise CorruptEntryError("not a queue file name")
                    entry = parse_queue_file(path.read_bytes(), queue, path.name)
                except PartialEntryError:
                    log.warning("spool recovery: discarding partial queue file %s", label)
                    path.unlink()
                    discarded.append(label)
                    continue
                except (CorruptEntryError, IsADirectoryError) as exc:
                    log.warning("spool recovery: moving %s to corrupt/: %s", label, exc)
                    os.replace(path, self.root / "corrupt" / f"{queue}.{path.name}.{secrets.token_hex(3)}")
                    corrupted.append(label)
                    continue
                current = best.get(entry.queue_id)
                rank = (entry.revision, _KEEP_ON_TIE[queue])
                if current is None or rank > (current.revision, _KEEP_ON_TIE[current.queue]):
                    if current is not None:
                        losers.append(current)
                    best[entry.queue_id] = entry
                else:
                    losers.append(entry)
        for old in losers:  # a crash between a rewrite's rename and its unlink
            self.path_of(old).unlink()
        requeued: list[str] = []
        for qid, entry in best.items():
            if entry.queue == "active":  # in flight at the crash: try again
                moved = dataclasses.replace(entry, queue="deferred")
                os.replace(self.path_of(entry), self.path_of(moved))
                best[qid] = moved
                requeued.append(qid)
        for name in QUEUES:
            sync_directory(self.root / name)
        self._index = best
        return RecoveryReport(len(best), tuple(discarded), tuple(corrupted), tuple(requeued))


# -- one spool per process --------------------------------------------------------------------
#
# A node runs `[node] workers` processes. Each keeps its own directory of a queue — `<name>` for
# process 0, `<name>-w<N>` for worker N — with its own lock and its own runner (like Postfix's one
# queue manager per queue): no two processes ever rewrite the same files, so the single-writer
# commit protocol above needs no inter-process coordination, and a worker started again with the
# same index recovers its own directory. A directory whose index the node no longer runs
# (restarted with fewer workers) is adopted by process 0 (`DiskSpool.adopt`). Readers that show
# or act on a queue (queue CLI, admin centre, metrics) cover every directory through
# `process_spools`.

RUNNER_LOCK = "gateway.lock"  # one flock per spool directory (historical name, every queue uses it)
_WORKER_DIR = re.compile(r"-w([1-9][0-9]{0,5})\Z")


def process_spool(spool_dir: str | os.PathLike[str], name: str, worker: int) -> Path:
    """The directory of queue `name` that process `worker` (0 = the first) owns."""
    return Path(spool_dir) / (f"{name}-w{worker}" if worker else name)


def process_spools(spool_dir: str | os.PathLike[str], name: str) -> list[tuple[int, Path]]:
    """Every existing directory of queue `name`, as (process index, path), process 0 first."""
    base = Path(spool_dir)
    found = [(0, base / name)] if (base / name).is_dir() else []
    try:
        children = list(base.iterdir())
    except FileNotFoundError:
        return found
    for path in children:
        if path.name.startswith(name + "-w") and path.is_dir():
            m = _WORKER_DIR.search(path.name)
            if m and path.name[: m.start()] == name:
                found.append((int(m.group(1)), path))
    return sorted(found)


def lock_spool(root: str | os.PathLike[str]) -> int:
    """One runner per spool directory (two would deliver the same entries): refuse, never wait."""
    from mxgate.errors import ConfigError

    fd = os.open(Path(root) / RUNNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{root}: another running mxgate process owns this queue (same --home)") from None
    return fd


def spool_owned(root: str | os.PathLike[str]) -> bool:
    """Whether a running process holds this directory's lock (then only it may rewrite the files)."""
    lock = Path(root) / RUNNER_LOCK
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def entries_on_disk(root: str | os.PathLike[str]) -> list[QueueEntry]:
    """A spool's entries read from its files in place (no recovery, nothing changed): what a
    process that does not own the directory may look at. Newest revision of each, by arrival."""
    best: dict[str, QueueEntry] = {}
    for queue in LIVE_QUEUES:
        try:
            names = os.listdir(Path(root) / queue)
        except FileNotFoundError:
            continue
        for name in names:
            if not QUEUE_ID_RE.match(name):
                continue
            try:
                e = parse_queue_file((Path(root) / queue / name).read_bytes(), queue, name)
            except (SpoolError, OSError):
                continue  # being rewritten right now, or partial: recovery's business
            if e.queue_id not in best or e.revision > best[e.queue_id].revision:
                best[e.queue_id] = e
    return sorted(best.values(), key=lambda e: (e.arrival, e.queue_id))


async def open_process_spool(spool_dir: str | os.PathLike[str], name: str, worker: int, processes: int,
                             committer: GroupCommitter) -> tuple[DiskSpool, int]:
    """This process's directory of queue `name`, locked (the fd: close it to release) and
    recovered; process 0 also adopts the directories of workers the node no longer runs."""
    root = process_spool(spool_dir, name, worker)
    private_dir(root)
    lock_fd = lock_spool(root)
    try:
        spool = await asyncio.to_thread(DiskSpool.open, root, committer)
        if worker == 0:
            await spool.adopt_strays(name, processes)
            spool.siblings = [process_spool(spool_dir, name, i) for i in range(1, processes)]
    except BaseException:
        os.close(lock_fd)
        raise
    return spool, lock_fd


class SpoolFiles:
    """Read-only view of a spool directory another process owns (metrics, admin centre)."""

    blocking_reads = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def list(self, queue: str | None = None) -> list[QueueEntry]:
        return [e for e in entries_on_disk(self.root) if queue is None or e.queue == queue]

    def get(self, queue_id: str) -> QueueEntry | None:
        return next((e for e in entries_on_disk(self.root) if e.queue_id == queue_id), None)


class _EntryGuard:
    """Refuses stale or concurrently changed entries for the duration of one operation."""

    def __init__(self, spool: Spool, entry: QueueEntry) -> None:
        self.spool, self.entry = spool, entry

    async def __aenter__(self) -> None:
        qid = self.entry.queue_id
        current = self.spool._index.get(qid)
        if current is None or current.revision != self.entry.revision or current.queue != self.entry.queue:
            raise StaleEntryError(f"{qid} changed since it was read")
        if qid in self.spool._busy:
            raise StaleEntryError(f"{qid} is being changed by another task")
        self.spool._busy.add(qid)

    async def __aexit__(self, *exc: object) -> None:
        self.spool._busy.discard(self.entry.queue_id)
