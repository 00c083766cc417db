"""Loop → thread → loop hand-off for blocking work (checks, the ARC seal), shared by both roles.

Owns: `CheckThreads`, a fixed set of threads fed by one queue. A job is one `SimpleQueue.put`
there and one `call_soon_threadsafe` back: no concurrent.futures Future (a Condition each), no
wrap_future chaining and no wait_for waiter (issue 19: in process, with 20 callers, ~4–8 µs of
CPU per hop against ~15 µs for `asyncio.to_thread` and 30 µs for `run_in_executor` + `wait_for`;
bench/handoffcpu.py, bench/RESULTS.md). `run()` is the awaitable form with an optional budget;
`submit()` takes work that answers its caller itself (filters/pipeline.py's `_Job`, which keeps
its own timer and can drop a job still queued).
Must not know: what the work is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("mxgate.handoff")


class CheckThreads:
    """As many threads as the loop's default executor would have (by default), started at the
    first job, so work waiting on uncached DNS answers holds no more than it did."""

    def __init__(self, count: int = min(32, (os.cpu_count() or 1) + 4), name: str = "mxgate-auth"):
        self.count = count
        self._name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.jobs = 0  # jobs handed over since start (tests count them)

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self.count:
                thread = threading.Thread(target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _run(self) -> None:
        while (job := self._work.get()) is not None:
            if job.__class__ is not tuple:  # submit()'s work: it answers its caller itself
                try:
                    job()
                except BaseException:  # noqa: BLE001 - a thread must outlive any one job
                    log.exception("hand-off job failed")
                continue
            fn, args, loop, future = job
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # the caller sees it, as from an executor
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the caller's loop is closed: nobody waits for this result
                pass

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work()` in a thread; it reports back to its loop itself."""
        if not self._threads:
            self._start()
        self.jobs += 1
        self._work.put(work)

    async def run(self, fn, args: tuple, budget: float | None, overran):
        """fn(*args) in a thread; past `budget` seconds answer `overran` and leave the thread to
        finish alone (its late result is dropped). budget None: wait for the result."""
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = loop.call_later(budget, _expire, future) if budget is not None else None
        self.jobs += 1
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
            for _ in self._threads:
                self._work.put(None)
            self._threads = []


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
