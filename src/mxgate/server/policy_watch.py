"""Keeps the running node on the newest policy version (mail-flow.md §3.8: within 1 second).

Owns: a thread that polls the store's newest version number (one indexed MAX() query every
POLL_INTERVAL), and on a change loads, compiles and swaps in the new CompiledPolicy. The swap is
one attribute assignment, so a session sees either the old or the new policy, never a mix; each
SMTP transaction takes its snapshot at MAIL FROM.

On PostgreSQL the watcher also LISTENs for the NOTIFY that PolicyStore.save sends in its
transaction (store/notify.py) and refreshes at once; the polling stays as the fallback for
when the LISTEN connection is down. SQLite has no NOTIFY: there the watcher looks every
COMMIT_CHECK_INTERVAL whether anything was committed (store/sqlite.py CommitCounter, ~5 µs, no
query) and asks for the newest version only then, and at least every SAFETY_INTERVAL. Given the
node's event loop, those looks run there as a timer instead of in a thread of their own (issue 19:
each timed wake-up of a thread, and its GIL hand-over, cost ~100-200 µs of CPU on the bench VM,
fifty a second per process; on a busy loop a timer costs only the look). A look never waits on the
loop (the counter's connection does not wait for locks: a busy store is looked at again next
time); loading and compiling a new version runs in a thread, as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from mxgate.policy.attribution import CompiledPolicy, compile_policy
from mxgate.store.notify import POLICY_CHANNEL, ChangeListener
from mxgate.store.policy_store import LATEST_VERSION_SQL, PolicyStore
from mxgate.store.sqlite import commit_counter

log = logging.getLogger("mxgate.policy")

# seconds. Without a commit counter (PostgreSQL, when NOTIFY is down) a change is enforced within
# this plus a compile (issue 19: under 100 ms of the commit); one indexed MAX() query costs ~0.1 ms
# of CPU, so 20 a second is 0.2% of a core.
POLL_INTERVAL = 0.05
# SQLite: seconds between looks at its commit counter (a change is enforced within this plus a
# query and a compile: issue 19), and the longest between two queries whatever the counter says.
COMMIT_CHECK_INTERVAL = 0.02
SAFETY_INTERVAL = 1.0


class PolicyWatcher:
    def __init__(self, store: PolicyStore, interval: float = POLL_INTERVAL):
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._notify = ChangeListener(store.engine, (POLICY_CHANNEL,), lambda _c, _p: self._wake.set())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loading = False  # a new version is being loaded in a thread (loop mode)
        self._next_query = 0.0  # loop mode: when a look queries whatever the counter says
        self._listeners: list[Callable[[CompiledPolicy], None]] = []
        # Before the first read: a commit landing between the two is then seen as one.
        engine = store.engine
        self._commits = commit_counter(str(engine.url)) if engine is not None and engine.dialect.name == "sqlite" else None
        pv = store.current()
        self.current: CompiledPolicy = compile_policy(pv.policy, pv.version)

    def subscribe(self, fn: Callable[[CompiledPolicy], None]) -> None:
        self._listeners.append(fn)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch from a thread; on SQLite with `loop` (the node's, running), from timers on it."""
        if loop is not None and self._commits is not None:
            self._commits.never_wait()  # a look on the loop must not block it behind a lock
            self._loop, self._next_query = loop, time.monotonic() + SAFETY_INTERVAL
            self._timer = loop.call_later(COMMIT_CHECK_INTERVAL, self._look)
        else:
            self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
            self._thread.start()
        self._notify.start()

    @property
    def listening(self) -> bool:
        """True while changes arrive by NOTIFY (PostgreSQL) rather than only by polling."""
        return self._notify.connected.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._notify.stop()
        if self._thread:
            self._thread.join(timeout=2)
        if self._timer is not None:  # stop() runs on the node's loop: no look is running now
            self._timer.cancel()
            self._timer = None
        if self._commits is not None and not (self._thread and self._thread.is_alive()):
            self._commits.close()

    def refresh(self, latest: int | None = None) -> bool:
        """Load and compile the newest version if it is not the one in force; `latest` is its
        number when the caller has just read it."""
        if latest is None:
            latest = self.store.latest_version_number()
        if latest == self.current.version:
            return False
        pv = self.store.current()
        self.current = compile_policy(pv.policy, pv.version)
        log.info("policy version %d in force", pv.version)
        for fn in self._listeners:
            try:
                fn(self.current)
            except Exception:
                log.exception("policy change listener failed")
        return True

    def _latest(self) -> int | None:
        """The newest version number read on the commit counter's own connection (this thread's):
        every trace batch of every process is a commit that makes the watcher look, and through
        the engine each look cost ~0.2 ms of CPU and a pool checkout (issue 19: ~30 µs per
        message in bench P1). None without a counter: refresh() asks the store."""
        if self._commits is None:
            return None
        return self._commits.first_value(LATEST_VERSION_SQL) or 0

    def _look(self) -> None:
        """On the loop, every COMMIT_CHECK_INTERVAL: the same looks as `_run`'s; a new version
        is loaded and compiled in a thread (a compile takes milliseconds)."""
        if self._stop.is_set():
            return
        wait = COMMIT_CHECK_INTERVAL
        try:
            if not self._loading and (time.monotonic() >= self._next_query or self._commits.committed()):
                self._next_query = time.monotonic() + SAFETY_INTERVAL
                latest = self._latest()
                if latest != self.current.version:
                    self._loading = True
                    self._loop.run_in_executor(None, self._load, latest)
        except Exception as exc:  # store briefly busy or away: keep the old policy, query next time
            log.warning("policy refresh failed, keeping version %d: %s", self.current.version, exc)
            wait, self._next_query = self.interval, 0.0  # the commit that was seen is not forgotten
        self._timer = self._loop.call_later(wait, self._look)

    def _load(self, latest: int) -> None:
        """In a thread (loop mode): refresh() with the version the look read."""
        try:
            self.refresh(latest)
        except Exception as exc:
            log.warning("policy refresh failed, keeping version %d: %s", self.current.version, exc)
            self._next_query = 0.0
        finally:
            self._loading = False

    def _run(self) -> None:
        fast = COMMIT_CHECK_INTERVAL if self._commits is not None else self.interval
        wait, next_query = fast, time.monotonic() + SAFETY_INTERVAL
        while not self._stop.is_set():
            self._wake.wait(wait)  # a NOTIFY ends the wait early
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._commits is None or time.monotonic() >= next_query or self._commits.committed():
                    next_query = time.monotonic() + SAFETY_INTERVAL
                    self.refresh(self._latest())
                wait = fast
            except Exception as exc:  # database briefly locked or unreachable: keep the old policy
                log.warning("policy refresh failed, keeping version %d: %s", self.current.version, exc)
                # Retried (and logged) at the polling pace, not at every look, by a query: the
                # commit that was seen must not be forgotten.
                wait, next_query = self.interval, 0.0
