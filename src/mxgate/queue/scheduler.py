"""Retry schedule for the gateway queue: when to try a deferred message again, and when to give up.

Owns: the backoff arithmetic and its defaults. Pure: no clock, no I/O, no randomness — the
caller passes ``now`` and stores the answer in the spool (``DiskSpool.defer``).
Must not know: the spool's files, SMTP, or why a delivery failed (a 5xx never reaches here: it
is a permanent failure and goes straight to a DSN).

Defaults follow Postfix, the reference the spec names (adversarial.md §1):
``minimal_backoff_time = 300s``, doubling, ``maximal_backoff_time = 4000s`` (~67 min),
``maximal_queue_lifetime = 5d``. RFC 5321 §4.5.4.1 asks for a retry interval of at least
30 minutes and a give-up time of at least 4-5 days; Postfix's shorter first retry is the
established practice the spec asks for, and every value is configurable (tests use seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FIRST_RETRY = 300.0  # Postfix minimal_backoff_time
MULTIPLIER = 2.0  # Postfix doubles the backoff after each failed attempt
MAX_BACKOFF = 4000.0  # Postfix maximal_backoff_time (~67 min)
MAX_AGE = 5 * 86400.0  # Postfix maximal_queue_lifetime; RFC 5321 §4.5.4.1 "at least 4-5 days"


@dataclass(frozen=True)
class RetryPolicy:
    """How a deferred message is retried. Times in seconds.

    ``warn_after``: when set, a ``delayed`` DSN (RFC 3464) is due once a message has waited
    this long (Postfix ``delay_warning_time``; off by default there too).
    """

    first_retry: float = FIRST_RETRY
    multiplier: float = MULTIPLIER
    max_backoff: float = MAX_BACKOFF
    max_age: float = MAX_AGE
    warn_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("first_retry", "max_backoff", "max_age"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"RetryPolicy.{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if self.max_backoff < self.first_retry:
            raise ValueError("RetryPolicy.max_backoff must be >= first_retry")
        if self.warn_after is not None and not (math.isfinite(self.warn_after) and self.warn_after > 0):
            raise ValueError(f"RetryPolicy.warn_after must be positive or None, got {self.warn_after!r}")


def backoff(policy: RetryPolicy, attempts: int) -> float:
    """Delay after the ``attempts``-th failed attempt: first_retry * multiplier**(n-1), capped."""
    if attempts < 1:
        return 0.0
    try:
        delay = policy.first_retry * policy.multiplier ** (attempts - 1)
    except OverflowError:  # thousands of attempts: the cap applies long before
        return policy.max_backoff
    return min(delay, policy.max_backoff)


def expires_at(policy: RetryPolicy, arrival: float) -> float:
    """The moment the message is given up (bounced with a ``failed`` DSN)."""
    return arrival + policy.max_age


def next_attempt(policy: RetryPolicy, arrival: float, attempts: int, now: float) -> float | None:
    """When to try again after ``attempts`` failed attempts, or None to give up (expired).

    The last retry is pulled in to the expiry moment so "give up after 5 days" means a final
    attempt at 5 days, not up to ``max_backoff`` later.
    """
    deadline = expires_at(policy, arrival)
    if now >= deadline:
        return None
    if attempts < 1:
        return now  # never tried: due immediately
    return min(now + backoff(policy, attempts), deadline)


def delay_warning_due(policy: RetryPolicy, arrival: float, now: float, *, already_warned: bool) -> bool:
    """Whether to send the one ``delayed`` DSN for a message still in the queue."""
    if policy.warn_after is None or already_warned:
        return False
    return now - arrival >= policy.warn_after and now < expires_at(policy, arrival)


MAX_HOST_BACKOFF = 600.0  # a host that keeps refusing is still tried every 10 minutes


@dataclass
class HostHealth:
    """Per-destination backoff: a host that refused a connection is skipped for a while.

    The delay grows once per *outage window*, not once per failed delivery: twenty deliveries
    in flight when a host goes down all fail together, and that is one outage, not twenty. A
    failure counts toward growth only when its attempt started after the previous failure was
    recorded (the attempt was a probe after the window ended); others leave the window as it is.
    Pure: callers pass the clock (``now``, ``started``) so tests need no sleeping.
    """

    base: float = 30.0
    cap: float = MAX_HOST_BACKOFF
    _down: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # host → (until, delay, failed at)

    def usable(self, host: str, now: float) -> bool:
        until = self._down.get(host, (0.0, 0.0, 0.0))[0]
        return now >= until

    def failed(self, host: str, now: float, started: float | None = None) -> None:
        """Record a failure seen at ``now`` by an attempt that began at ``started`` (default: now)."""
        until, last, failed_at = self._down.get(host, (0.0, 0.0, 0.0))
        started = now if started is None else started
        if last and started <= failed_at:
            return  # in flight when the outage was first seen: the same window
        delay = min(last * 2 if last else self.base, self.cap)
        self._down[host] = (now + delay, delay, now)

    def succeeded(self, host: str) -> None:
        self._down.pop(host, None)

    @classmethod
    def for_queue(cls, base: float, retry: RetryPolicy) -> "HostHealth":
        """A host is skipped at most as long as a message waits between retries (and 10 min)."""
        return cls(base, cap=max(base, min(MAX_HOST_BACKOFF, retry.max_backoff)))

    def delay(self, host: str) -> float:
        """The current backoff for ``host`` (0 when it is healthy): for status and tests."""
        return self._down.get(host, (0.0, 0.0, 0.0))[1]
