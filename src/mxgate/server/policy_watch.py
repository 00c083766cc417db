"""Keeps the running node on the newest policy version (mail-flow.md §3.8: within 1 second).

Owns: a thread that polls the store's newest version number (one indexed MAX() query every
POLL_INTERVAL), and on a change loads, compiles and swaps in the new CompiledPolicy. The swap is
one attribute assignment, so a session sees either the old or the new policy, never a mix; each
SMTP transaction takes its snapshot at MAIL FROM.

On PostgreSQL the watcher also LISTENs for the NOTIFY that PolicyStore.save sends in its
transaction (store/notify.py) and refreshes at once; the polling stays as the fallback for
when the LISTEN connection is down. SQLite has no NOTIFY: there PolicyStore.save rewrites a
stamp file after its commit and the watcher sleeps on an inotify watch for it
(store/change_stamp.py), asking for the newest version when it is written and at least every
SAFETY_INTERVAL (a version written by other means, e.g. a restore). Without inotify it looks
every COMMIT_CHECK_INTERVAL whether anything was committed (store/sqlite.py CommitCounter, ~5 µs,
no query) and asks only then. Issue 19: each look was a thread wake-up, ~100 µs of CPU on this
VM, 50 a second per process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from mxgate.policy.attribution import CompiledPolicy, compile_policy
from mxgate.store.change_stamp import StampWatch
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
        self._listeners: list[Callable[[CompiledPolicy], None]] = []
        # Before the first read: a commit landing between the two is then seen as one.
        engine = store.engine
        self._commits = commit_counter(str(engine.url)) if engine is not None and engine.dialect.name == "sqlite" else None
        self._stamp = StampWatch.open(store.sqlite_file, POLICY_CHANNEL) if self._commits is not None else None
        pv = store.current()
        self.current: CompiledPolicy = compile_policy(pv.policy, pv.version)

    def subscribe(self, fn: Callable[[CompiledPolicy], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> None:
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
        if self._stamp is not None:
            self._stamp.interrupt()
        self._notify.stop()
        if self._thread:
            self._thread.join(timeout=2)
        if not (self._thread and self._thread.is_alive()):
            if self._commits is not None:
                self._commits.close()
            if self._stamp is not None:
                self._stamp.close()

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

    def _run(self) -> None:
        if self._stamp is not None:
            self._run_stamped(self._stamp)
            return
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

    def _run_stamped(self, stamp: StampWatch) -> None:
        """SQLite with inotify: asleep until a policy commit's stamp is written, or SAFETY_INTERVAL."""
        wait = SAFETY_INTERVAL
        while not self._stop.is_set():
            stamp.wait(wait)
            if self._stop.is_set():
                return
            try:
                self.refresh(self._latest())
                wait = SAFETY_INTERVAL
            except Exception as exc:  # database briefly locked: keep the old policy, ask again soon
                log.warning("policy refresh failed, keeping version %d: %s", self.current.version, exc)
                wait = self.interval  # the stamp already read must not be forgotten: query anyway
