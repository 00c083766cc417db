"""Keeps the running node on the newest policy version (mail-flow.md §3.8: within 1 second).

Owns: a thread that polls the store's newest version number (one indexed MAX() query every
POLL_INTERVAL), and on a change loads, compiles and swaps in the new CompiledPolicy. The swap is
one attribute assignment, so a session sees either the old or the new policy, never a mix; each
SMTP transaction takes its snapshot at MAIL FROM.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from mxgate.policy.attribution import CompiledPolicy, compile_policy
from mxgate.store.policy_store import PolicyStore

log = logging.getLogger("mxgate.policy")

POLL_INTERVAL = 0.2  # seconds; leaves 0.8 s of the 1 s budget for loading and compiling


class PolicyWatcher:
    def __init__(self, store: PolicyStore, interval: float = POLL_INTERVAL):
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[CompiledPolicy], None]] = []
        pv = store.current()
        self.current: CompiledPolicy = compile_policy(pv.policy, pv.version)

    def subscribe(self, fn: Callable[[CompiledPolicy], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)

    def refresh(self) -> bool:
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # database briefly locked or unreachable: keep the old policy
                log.warning("policy refresh failed, keeping version %d: %s", self.current.version, exc)
