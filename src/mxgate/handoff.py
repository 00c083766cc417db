"""Loop → thread → loop hand-off for blocking work (checks, the ARC seal), shared by both roles.

Owns: `CheckThreads`, a fixed set of threads fed by one queue. A job is one `SimpleQueue.put`
there and one `call_soon_threadsafe` back: no concurrent.futures Future (a Condition each), no
wrap_future chaining and no wait_for waiter (issue 19: in process, with 20 callers, ~4–8 µs of
CPU per hop against ~15 µs for `asyncio.to_thread` and 30 µs for `run_in_executor` + `wait_for`;
bench/handoffcpu.py, bench/RESULTS.md). `run()` is the awaitable form with an optional budget;
`submit()` takes work that answers its caller itself (filters/pipeline.py's `_Job`, which keeps
its own timer and can drop a job still queued).

Two ways to wake the threads. By default each job wakes a thread of its own: right for work that
runs outside the GIL in parallel (the ARC seal's RSA in OpenSSL, disk reads). With `stall` set
(the mailbox's authentication: Python under the GIL once its DNS answers are cached) the jobs one
loop turn hands over go to a shared list and ONE thread is woken for them, which goes on taking
jobs as long as there are any; a second thread is woken only when jobs have waited `stall`
seconds while no job was started (a check waiting on an uncached DNS answer). A thread per job
gained nothing under the GIL and cost a futex wake on the loop and a wake-up plus GIL hand-over
in the thread per message (issue 19: ~27 µs a wake-up on this VM; the hand-off's put was ~5% of
the mailbox's GIL samples in bench P1).
Must not know: what the work is.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("mxgate.handoff")


class CheckThreads:
    """As many threads as the loop's default executor would have (by default), started at the
    first job, so work waiting on uncached DNS answers holds no more than it did."""

    def __init__(self, count: int = min(32, (os.cpu_count() or 1) + 4), name: str = "mxgate-auth", *,
                 stall: float | None = None):
        self.count = count
        self.stall = stall  # None: a thread per job; seconds: one thread drains (module docstring)
        self._name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._drain: _Drain | None = None  # with `stall`: this set of threads' shared jobs
        self._kicks: set[asyncio.AbstractEventLoop] = set()  # loops whose end-of-turn wake is scheduled
        # Counters the tests read, exact when several loops hand over at once (`_kicks`): `next()`
        # of an itertools.count is one C call, never split by a thread switch as `+=` may be; no
        # lock on the hand-over for it. `wakeups` is counted under the drain's lock it holds anyway.
        self._handed = itertools.count()
        self.wakeups = 0  # threads woken for jobs (with `stall`)

    @property
    def jobs(self) -> int:
        """Jobs handed over since start (submit and run)."""
        return int(repr(self._handed)[6:-1])  # "count(N)": N handed over (the next value)

    def _start(self) -> None:
        with self._lock:
            if self.stall is not None and self._drain is None:
                self._drain = _Drain(self._work)
            target = self._run if self.stall is None else self._drain_jobs
            while len(self._threads) < self.count:
                thread = threading.Thread(target=target, args=(self._work, self._drain),
                                          name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _run(self, work: queue.SimpleQueue, _drain: None) -> None:
        while (job := work.get()) is not None:
            _one(job)

    def _drain_jobs(self, work: queue.SimpleQueue, drain: _Drain) -> None:
        """Woken by a token, take jobs until none is left, then wait for the next token."""
        jobs = drain.jobs
        while work.get() is not None:
            while True:
                try:
                    job = jobs.popleft()
                except IndexError:
                    with drain.lock:  # appended after the pop failed? then its wake saw us active
                        if jobs:
                            continue
                        drain.active -= 1
                    break
                drain.taken += 1
                _one(job)

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work()` in a thread; it reports back to its loop itself."""
        if not self._threads:
            self._start()
        next(self._handed)
        if self._drain is not None:
            self._drain.jobs.append(work)
            self._wake(self._drain)
            return
        self._work.put(work)

    def _queue_run(self, job: tuple, loop: asyncio.AbstractEventLoop) -> None:
        """run()'s job with `stall`: into the shared list now, one wake at the end of this turn."""
        self._drain.jobs.append(job)  # type: ignore[union-attr]
        if loop not in self._kicks:
            self._kicks.add(loop)
            loop.call_soon(self._kick, loop)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kicks.discard(loop)
        drain = self._drain
        if drain is None or not drain.jobs:
            return
        self._wake(drain)
        if not drain.watched:  # while jobs wait, look every `stall` whether any was started
            drain.watched = True
            loop.call_later(self.stall, self._watch, loop, drain, drain.taken)

    def _wake(self, drain: _Drain, more: bool = False) -> None:
        """Wake a thread when none is taking jobs (or, `more`, another one while fewer than all are)."""
        with drain.lock:
            if not drain.jobs or drain.active >= (self.count if more else 1):
                return
            drain.active += 1
            self.wakeups += 1
        drain.work.put(True)

    def _watch(self, loop: asyncio.AbstractEventLoop, drain: _Drain, taken: int) -> None:
        if not drain.jobs or drain is not self._drain:
            drain.watched = False
            return
        if drain.taken == taken:  # jobs waited `stall` and no thread took one: all are held up
            self._wake(drain, more=True)
        loop.call_later(self.stall, self._watch, loop, drain, drain.taken)

    async def run(self, fn, args: tuple, budget: float | None, overran):
        """fn(*args) in a thread; past `budget` seconds answer `overran` and leave the thread to
        finish alone (its late result is dropped). budget None: wait for the result."""
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = loop.call_later(budget, _expire, future) if budget is not None else None
        next(self._handed)
        if self._drain is not None:
            self._queue_run((fn, args, loop, future), loop)
        else:
            self._work.put((fn, args, loop, future))
        try:
            result = await future
        finally:
            if timer is not None:
                timer.cancel()
        if result is _OVERRAN:
            log.warning("%s overran its %.1fs budget", getattr(fn, "__name__", fn), budget)
            return overran
        return result

    def stop(self) -> None:
        """The threads end once the jobs queued before this are done (never waited for here).
        A later job starts a fresh set."""
        with self._lock:
            if self._drain is not None:  # jobs whose end-of-turn wake has not run yet: it would
                self._wake(self._drain)  # find the fresh set, so wake a thread for them now
            for _ in self._threads:
                self._work.put(None)  # after any wake token: a woken thread drains first
            self._threads = []
            # A later job starts a fresh set on fresh state: tokens left here are not its own.
            self._work, self._drain = queue.SimpleQueue(), None


class _Drain:
    """One set of threads' shared jobs (with `stall`): `active` threads are taking jobs."""

    __slots__ = ("work", "jobs", "lock", "active", "taken", "watched")

    def __init__(self, work: queue.SimpleQueue) -> None:
        self.work = work
        self.jobs: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.active = 0
        self.taken = 0  # jobs started (the stall watch compares it; only ever grows)
        self.watched = False


def _one(job) -> None:
    if job.__class__ is not tuple:  # submit()'s work: it answers its caller itself
        try:
            job()
        except BaseException:  # noqa: BLE001 - a thread must outlive any one job
            log.exception("hand-off job failed")
        return
    fn, args, loop, future = job
    try:
        outcome = (True, fn(*args))
    except BaseException as exc:  # the caller sees it, as from an executor
        outcome = (False, exc)
    try:
        loop.call_soon_threadsafe(_settle, future, outcome)
    except RuntimeError:  # the caller's loop is closed: nobody waits for this result
        pass


_OVERRAN = object()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(_OVERRAN)


def _settle(future: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if future.done():  # overran or cancelled meanwhile
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
