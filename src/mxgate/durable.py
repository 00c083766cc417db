"""Group commit: the one place where mxgate makes files durable.

Owns: the worker thread that writes, fsyncs and renames files for asyncio callers, and the
commit protocol every durable store in mxgate (Maildir, the gateway spool) goes through.
Must not know: what the files mean (mail, queue entries), SMTP replies, or any policy.

Commit protocol (RFC 5321 §6.1: once the final 250 is sent the message must not be lost, so no
caller may answer 250 before its ``await committer.commit(job)`` has returned):

1. The caller builds a job (``WriteFile``, ``MoveFile`` or ``RemoveFile``) and awaits it. The
   groups an event loop submits in one turn reach the worker together, at the end of that turn
   (one wake-up of the worker, not one per message: issue 19).
2. The worker takes every job queued at that moment (up to ``max_batch`` jobs; a group given to
   ``commit_many`` is never split) and, for each ``WriteFile``, writes ``tmp_path`` opened with
   O_CREAT|O_EXCL|O_WRONLY, then ``fdatasync``s it. One sync per file is unavoidable; with
   ``io_threads > 1`` the batch's files are written and synced in parallel, which lets the
   filesystem share one journal commit between them.
3. Stage A: it renames each written file onto ``final_path`` and performs each ``MoveFile``,
   then fsyncs every distinct directory that gained or lost a name in this stage ONCE.
   This is where group commit wins: 50 deliveries into one ``new/`` cost one directory fsync.
4. Stage B: only after stage A's directories are stable, it unlinks files that a rewrite
   superseded and each ``RemoveFile``, then fsyncs those directories once. Ordering the
   unlink after the new name is durable means a crash leaves the old version *and* the new one
   (readers resolve by revision), never neither. A ``RemoveFile`` with ``keep_as`` is a rename
   out of the way here instead of the unlink, its two directories synced alike.
5. It resolves each job's future on its event loop: ``None`` when every step of that job
   succeeded, else the first ``OSError`` it met (ENOSPC, EIO, ...). One ``call_soon_threadsafe``
   per event loop per batch settles all of that loop's groups (one wake-up, not one per message).
   A failing job removes its own tmp file and never affects the others in the batch.

A cancelled caller does not cancel its job: the file may still become durable (a duplicate on
retry is allowed by RFC 5321 §6.1; loss is not).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 256  # bounds one batch's latency; ~1 directory fsync per 256 files at most
DEFAULT_IO_THREADS = 4  # parallel write+sync in a batch: ~1.4x msg/s over 1 thread, measured here
FILE_MODE = 0o600  # mail is private to the service account
_OPEN_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
_REUSE_FLAGS = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)  # WriteFile.reuse: written over from offset 0

Writer = Callable[[BinaryIO], None]
"""Streams a file's content; runs in the committer thread, so it may block on disk reads."""


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``tmp_path`` (exclusive create), sync, rename onto ``final_path``.

    ``supersedes``: an older file this one replaces under another name; unlinked in stage B.
    ``reuse``: ``tmp_path`` is a settled file kept by ``RemoveFile(keep_as=...)`` (its content
    means nothing and no name but this one refers to it): it is overwritten from the start and
    cut to the new length instead of created, which spares the filesystem an inode allocation
    and a free per message (issue 19); gone, it is created as usual. Synced before the rename
    all the same.
    """

    tmp_path: Path
    final_path: Path
    content: Union[bytes, Writer]
    supersedes: Path | None = None
    reuse: bool = False


@dataclass(frozen=True)
class MoveFile:
    """Rename ``src`` to ``dst`` (same filesystem) and make both directory entries durable."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class RemoveFile:
    """Unlink ``path`` durably; a missing file counts as success when ``missing_ok``.

    ``keep_as``: instead of unlinking, rename ``path`` to this name (a directory whose files
    recovery deletes, e.g. a spool's ``tmp/``) for a later ``WriteFile(reuse=True)``; both
    directories are synced, so after a crash ``path`` is gone exactly as if it had been
    unlinked. A failed rename falls back to the unlink (a later reuse then finds no file)."""

    path: Path
    missing_ok: bool = True
    keep_as: Path | None = None


Job = Union[WriteFile, MoveFile, RemoveFile]


@dataclass(frozen=True)
class CommitStats:
    """Counters since start, for tests and metrics."""

    batches: int
    jobs: int
    failures: int
    dir_syncs: int
    largest_batch: int
    wakeups: int = 0  # call_soon_threadsafe calls: at most one per event loop per batch


class CommitterClosedError(RuntimeError):
    """commit() was called before start() or after aclose() began."""


@dataclass
class _Group:
    jobs: Sequence[Job]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[BaseException | None]]


def sync_directory(path: Path) -> None:
    """fsync a directory so the names created or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


DIR_MODE = 0o700  # spools, the home and its parts: private to the service account


def private_dir(path: Path) -> Path:
    """mkdir -p with 0700 for every directory made, whatever the process umask (issue 17)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask; chmod is not
    return path


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Small files written once (keys, certificates): tmp file, fsync, rename, directory fsync."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask or an old leftover's mode
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_directory(path.parent)


def _sync_file(fd: int) -> None:
    # fdatasync flushes the data and the size needed to read it back, skipping mtime: enough
    # for a file written once. Looked up at call time so tests can count calls.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]  # a short write (signal, quota) continues where it stopped


def _open_for(job: WriteFile) -> int:
    if job.reuse:
        try:
            return os.open(job.tmp_path, _REUSE_FLAGS)
        except FileNotFoundError:
            pass  # never kept, or removed since: create it
    return os.open(job.tmp_path, _OPEN_FLAGS, FILE_MODE)


def _write_and_sync(job: WriteFile) -> None:
    fd = _open_for(job)
    try:
        if isinstance(job.content, (bytes, bytearray, memoryview)):
            _write_all(fd, job.content)  # no file object: one message is one write(2)
        else:
            with os.fdopen(fd, "wb", closefd=False) as fh:
                job.content(fh)
                fh.flush()
        if job.reuse:  # a kept file may be longer than what was written over it: cut its old tail
            os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
        _sync_file(fd)  # fdatasync: the data and the length (changed above) that reads need
    except BaseException:
        os.close(fd)
        _unlink_quietly(job.tmp_path)
        raise
    os.close(fd)


def _try_write(job: WriteFile) -> BaseException | None:
    try:
        _write_and_sync(job)
    except Exception as exc:  # a failing writer callback is that job's failure only
        return exc
    return None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Batch:
    """One batch's writes across the I/O threads: the committer waits once, not once per file."""

    __slots__ = ("outcomes", "_left", "_lock", "done")

    def __init__(self, size: int) -> None:
        self.outcomes: list[BaseException | None] = [None] * size
        self._left = size
        self._lock = threading.Lock()
        self.done = threading.Event()

    def finish(self, index: int, outcome: BaseException | None) -> None:
        self.outcomes[index] = outcome
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.done.set()


class _IoThreads:
    """Threads that write and fdatasync a batch's files in parallel (concurrent fdatasyncs share
    journal commits on ext4/xfs; serial ones each wait). A plain queue of (batch, index, job)
    instead of an executor: no Future and Condition per file, and the committer, which takes
    work from the same queue while it waits, wakes once per batch."""

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-io_{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            _take(item)

    def write_all(self, jobs: list[WriteFile]) -> list[BaseException | None]:
        batch = _Batch(len(jobs))
        for i, job in enumerate(jobs):
            self._work.put((batch, i, job))
        while not batch.done.is_set():  # only this batch is queued: the committer has one at a time
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            _take(item)
        batch.done.wait()
        return batch.outcomes

    def shutdown(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


def _take(item: tuple[_Batch, int, WriteFile]) -> None:
    batch, index, job = item
    try:
        outcome = _try_write(job)
    except BaseException as exc:  # never leave the committer waiting on a lost file
        outcome = exc
    batch.finish(index, outcome)


class GroupCommitter:
    """Batches durable file jobs in one worker thread; see the module docstring for the protocol."""

    def __init__(
        self, *, max_batch: int = DEFAULT_MAX_BATCH, io_threads: int = DEFAULT_IO_THREADS, name: str = "mxgate-commit"
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if io_threads < 1:
            raise ValueError("io_threads must be >= 1")
        self.max_batch = max_batch
        self.io_threads = io_threads
        self._pool: _IoThreads | None = None
        self._name = name
        self._cond = threading.Condition()
        self._queue: collections.deque[_Group] = collections.deque()
        # Groups submitted but not yet handed to the worker, and the loops whose hand-over is
        # scheduled (loop.call_soon). The lock keeps "running?" and the append one step, and
        # aclose's last hand-over and its closing one step.
        self._pending: list[_Group] = []
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._batches = self._jobs = self._failures = self._dir_syncs = self._largest = self._wakeups = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread. Idempotent while running."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = False
            if self.io_threads > 1 and self._pool is None:
                self._pool = _IoThreads(self.io_threads, f"{self._name}-io")
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    async def aclose(self) -> None:
        """Refuse new jobs, finish every queued one, then stop the worker."""
        with self._pending_lock:  # what was accepted is handed over, then nothing more is accepted
            groups, self._pending = self._pending, []
            with self._cond:
                self._queue.extend(groups)
                self._closing = True
                self._cond.notify_all()
                thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)
        self._thread = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    async def __aenter__(self) -> GroupCommitter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def stats(self) -> CommitStats:
        with self._cond:
            return CommitStats(self._batches, self._jobs, self._failures, self._dir_syncs, self._largest, self._wakeups)

    # -- callers ---------------------------------------------------------------------------

    async def commit(self, job: Job) -> None:
        """Make one job durable; raises the OSError that stopped it."""
        (outcome,) = await self.commit_many([job])
        if outcome is not None:
            raise outcome

    async def commit_many(self, jobs: Iterable[Job]) -> list[BaseException | None]:
        """Commit jobs in the same batch; one outcome per job (None = durable)."""
        jobs = list(jobs)
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        group = _Group(jobs, loop, loop.create_future())
        with self._pending_lock:
            if not self.running:
                raise CommitterClosedError("group committer is not running")
            self._pending.append(group)
            first = loop not in self._scheduled
            if first:
                self._scheduled.add(loop)
        if first:  # the other sessions' messages of this turn join this hand-over
            loop.call_soon(self._hand_over, loop)
        return await group.future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the worker every group submitted so far, with one notify. Waking the worker once
        per message (a futex wake and a thread switch each) was ~2% of the mailbox's CPU in
        bench P1, and the worker took the messages of one loop turn as several small batches."""
        with self._pending_lock:
            self._scheduled.discard(loop)
            groups, self._pending = self._pending, []
            if groups:
                with self._cond:
                    self._queue.extend(groups)
                    self._cond.notify()

    # -- worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing and drained
                groups = [self._queue.popleft()]
                count = len(groups[0].jobs)
                while self._queue and count + len(self._queue[0].jobs) <= self.max_batch:
                    count += len(self._queue[0].jobs)
                    groups.append(self._queue.popleft())
            try:
                outcomes = self._process([job for g in groups for job in g.jobs])
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("group commit batch failed")
                outcomes = [exc] * count
            self._resolve(groups, outcomes)

    def _resolve(self, groups: list[_Group], outcomes: list[BaseException | None]) -> None:
        # Count before waking callers: a caller that reads stats after its commit returned
        # must see its own batch (the counters lagged under load before).
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, list[BaseException | None]]]] = {}
        pos = 0
        for group in groups:
            by_loop.setdefault(group.loop, []).append((group.future, outcomes[pos : pos + len(group.jobs)]))
            pos += len(group.jobs)
        with self._cond:
            self._batches += 1
            self._jobs += len(outcomes)
            self._failures += sum(1 for o in outcomes if o is not None)
            self._largest = max(self._largest, len(outcomes))
            self._wakeups += len(by_loop)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_results, settled)
            except RuntimeError:  # the caller's loop is closed; nobody is waiting
                pass

    def _process(self, jobs: list[Job]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = [None] * len(jobs)
        writes = [i for i, job in enumerate(jobs) if isinstance(job, WriteFile)]
        if self._pool is not None and len(writes) > 1:
            for i, exc in zip(writes, self._pool.write_all([jobs[i] for i in writes])):  # type: ignore[misc]
                outcomes[i] = exc
        else:
            for i in writes:
                outcomes[i] = _try_write(jobs[i])  # type: ignore[arg-type]
        stage_a: dict[Path, list[int]] = {}
        for i, job in enumerate(jobs):  # publish new names
            if outcomes[i] is not None or isinstance(job, RemoveFile):
                continue
            try:
                if isinstance(job, WriteFile):
                    os.replace(job.tmp_path, job.final_path)
                    stage_a.setdefault(job.final_path.parent, []).append(i)
                else:
                    os.replace(job.src, job.dst)
                    stage_a.setdefault(job.dst.parent, []).append(i)
                    stage_a.setdefault(job.src.parent, []).append(i)
            except OSError as exc:
                outcomes[i] = exc
                if isinstance(job, WriteFile):
                    _unlink_quietly(job.tmp_path)
        self._sync_dirs(stage_a, outcomes)
        stage_b: dict[Path, list[int]] = {}
        for i, job in enumerate(jobs):  # retire old names, only once the new ones are stable
            if outcomes[i] is not None:
                continue
            if isinstance(job, RemoveFile):
                if job.keep_as is not None:
                    try:
                        os.replace(job.path, job.keep_as)
                    except OSError:
                        pass  # not kept: removed below as usual
                    else:
                        stage_b.setdefault(job.path.parent, []).append(i)
                        stage_b.setdefault(job.keep_as.parent, [])  # kept, not orphaned, after a crash
                        continue
                try:
                    os.unlink(job.path)
                except FileNotFoundError as exc:
                    if not job.missing_ok:
                        outcomes[i] = exc
                    continue
                except OSError as exc:
                    outcomes[i] = exc
                    continue
                stage_b.setdefault(job.path.parent, []).append(i)
            elif isinstance(job, WriteFile) and job.supersedes not in (None, job.final_path):
                try:
                    os.unlink(job.supersedes)  # type: ignore[arg-type]
                except FileNotFoundError:
                    continue
                except OSError:
                    # The new version is durable; a leftover old one is resolved by its
                    # reader (lower revision), so this is not the caller's failure.
                    log.warning("could not remove superseded file %s", job.supersedes, exc_info=True)
                    continue
                stage_b.setdefault(job.supersedes.parent, [])  # type: ignore[union-attr]
        self._sync_dirs(stage_b, outcomes)
        return outcomes

    def _sync_dirs(self, dirs: dict[Path, list[int]], outcomes: list[BaseException | None]) -> None:
        for directory, members in dirs.items():
            try:
                sync_directory(directory)
            except OSError as exc:
                for i in members:  # their names are not known to be stable
                    if outcomes[i] is None:
                        outcomes[i] = exc
            with self._cond:
                self._dir_syncs += 1


def _set_results(settled: list[tuple[asyncio.Future, list[BaseException | None]]]) -> None:
    for future, outcomes in settled:
        if not future.done():  # the caller may have been cancelled
            future.set_result(outcomes)
