"""Per-IP rate limits: connections and messages per sliding window.

Owns: the counters (a deque of event times per key, trimmed as it is read) and the decision
whether one more event is allowed. No clock is read: callers pass `now`, so tests shrink time.
With `shared` (store/cluster.ClusterState) the count is the cluster's — every node on the store
counts against one limit, answered from memory and synced in the background; alone, state is per
process: a restart forgets it, which only ever lets a little more mail in (the limits are a brake
on floods, not an accounting system).
Must not know: SMTP, or what the action does.
"""

from __future__ import annotations

from collections import deque

from mxgate.filters.result import CheckResult, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "ratelimit"
MAX_KEYS = 100_000  # bound on tracked addresses; the stalest are forgotten first


class SlidingWindow:
    """At most `limit` events per `window` seconds per key."""

    def __init__(self, window: float, limit: int):
        self.window, self.limit = window, limit
        self._events: dict[str, deque[float]] = {}

    def count(self, key: str, now: float) -> int:
        events = self._events.get(key)
        if not events:
            return 0
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return 0
        return len(events)

    def hit(self, key: str, now: float) -> bool:
        """Record an event; False when it is over the limit (the refused event is not counted)."""
        if self.count(key, now) >= self.limit:
            return False
        if key not in self._events and len(self._events) >= MAX_KEYS:
            self._events.pop(next(iter(self._events)))
        self._events.setdefault(key, deque()).append(now)
        return True


class RateLimiter:
    """Connections and messages per IP, re-sized when the policy's settings change."""

    def __init__(self, shared=None) -> None:
        self.shared = shared  # store/cluster.ClusterState, or None for this process alone
        self._shape: tuple = ()
        self.connections = SlidingWindow(60.0, 0)
        self.messages = SlidingWindow(60.0, 0)

    def _sync(self, cfg: CheckSettings) -> None:
        shape = (cfg["window"], cfg["max_connections"], cfg["max_messages"])
        if shape != self._shape:  # a policy change starts fresh windows
            self._shape = shape
            self.connections = SlidingWindow(float(cfg["window"]), int(cfg["max_connections"]))
            self.messages = SlidingWindow(float(cfg["window"]), int(cfg["max_messages"]))

    def on_connect(self, ip: str, cfg: CheckSettings, now: float) -> CheckResult:
        if not cfg.enabled:
            return passed(NAME, "off")
        self._sync(cfg)
        if not self._hit("conn", self.connections, ip, now):
            return fired(NAME, cfg.action, "rate-limited",
                         f"more than {cfg['max_connections']} connections in {cfg['window']}s")
        return passed(NAME, "connection within limit")

    def on_message(self, ip: str, cfg: CheckSettings, now: float) -> CheckResult:
        if not cfg.enabled:
            return passed(NAME, "off")
        self._sync(cfg)
        if not self._hit("msg", self.messages, ip, now):
            return fired(NAME, cfg.action, "message-rate-limited",
                         f"more than {cfg['max_messages']} messages in {cfg['window']}s")
        return passed(NAME, "message within limit")

    def _hit(self, scope: str, local: SlidingWindow, ip: str, now: float) -> bool:
        if self.shared is None:
            return local.hit(ip, now)
        return self.shared.hit(scope, ip, local.limit, local.window, now)
