"""The values the gateway's checks exchange: the facts they read and the result each returns.

Owns: `MessageFacts` (what was gathered about one message: peer, HELO, envelope, bytes, TLS),
`CheckEnv` (the I/O handles a check may use: resolver, TXT lookup, earlier results) and
`CheckResult` (one check's outcome, with a stable reason code for the reply and the trace).
Must not know: SMTP sessions, the spool, or how results combine (pipeline.py).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from mxgate.auth.headers import parse_fields
from mxgate.verdict import CheckAction

# Outcomes. "fire": the check found what it looks for and its action applies. "error" and
# "timeout": the check could not decide; its `on_error` / `on_timeout` setting applies.
# "temperror": a dependency did not answer (DNS temperror, clamd unreachable): like a timeout.
PASS, FIRE, SKIP, ERROR, TIMEOUT, TEMPERROR = "pass", "fire", "skip", "error", "timeout", "temperror"


class BudgetExceeded(TimeoutError):
    """The message's check budget ran out (or the node is stopping): the work stops here."""


class Budget:
    """One message's time budget, checked inside the work (the MIME walk, archive inflation) so a
    check that overruns stops instead of running on in its worker after the verdict."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self.deadline = clock() + seconds
        self._stopped = False  # set once, from the loop; read by the worker (a bool: no Event per check)

    def restart(self) -> None:
        """Start counting now: time spent queued for a worker is not the work's time."""
        self.deadline = self._clock() + self.seconds

    def cancel(self) -> None:
        self._stopped = True

    @property
    def cancelled(self) -> bool:
        return self._stopped

    def check(self) -> None:
        if self._stopped or self._clock() > self.deadline:
            raise BudgetExceeded("check budget exhausted")


_local = threading.local()


def current_budget() -> Budget | None:
    """The budget of the check running in this worker thread (set by the pipeline), if any."""
    return getattr(_local, "budget", None)


def run_with_budget(budget: Budget, fn, *args):
    """Run fn(*args) in this thread with `budget` as current_budget() (a blocking check polls it)."""
    _local.budget = budget
    try:
        return fn(*args)
    finally:
        _local.budget = None


@dataclass(frozen=True)
class MessageFacts:
    peer_ip: str
    helo: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    source: Any  # smtp.source.MessageSource (head = header block up to and including the blank line): what arrived after DATA, sanitised (CRLF only), read from the spool file
    tls: str = ""  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", "" in clear

    @functools.cached_property
    def fields(self) -> tuple:
        """The header block's fields (auth/headers.parse_fields), parsed once for every check that
        reads them (kept in the instance: a frozen dataclass's fields are untouched)."""
        return parse_fields(self.source.head)


@dataclass
class CheckEnv:
    resolver: Any  # dns.resolver.Resolver with a bounded lifetime
    dnsfunc: Any  # auth.dns.TxtLookup for dkimpy / DMARC
    raw: dict[str, Any] = field(default_factory=dict)  # earlier checks' gathered values (DMARC reads SPF/DKIM)
    walk: Any = None  # filters.mimewalk.Walk: the one MIME walk every content check reads
    walk_error: BaseException | None = None  # the walk stopped at a limit or an error: content checks error too
    budget: Budget | None = None  # the message's budget; checks that loop look at it
    heavy: Any = None  # threading.Semaphore: slots for work that needs the whole message in memory (dkimpy)


@dataclass(frozen=True)
class CheckResult:
    check: str
    outcome: str  # PASS | FIRE | SKIP | ERROR | TIMEOUT | TEMPERROR
    reason: str = ""  # reply reason code (smtp/replies.py) when the check fires
    detail: str = ""  # for the trace and logs; never sent to the peer
    action: CheckAction = CheckAction.OFF  # the action that applies (the configured one when fired)
    facts: Mapping[str, Any] = field(default_factory=dict)  # what score rules read (e.g. {"result": "fail"})

    @property
    def fired(self) -> bool:
        return self.outcome == FIRE

    def as_trace(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "action": self.action, "reason": self.reason, "detail": self.detail[:300]}


def fired(check: str, cfg_action: str | CheckAction, reason: str, detail: str, **facts: Any) -> CheckResult:
    return CheckResult(check, FIRE, reason, detail, CheckAction(cfg_action), facts)


def passed(check: str, detail: str = "", **facts: Any) -> CheckResult:
    return CheckResult(check, PASS, "", detail, CheckAction.OFF, facts)


def errored(check: str, detail: str, **facts: Any) -> CheckResult:
    """A dependency's temporary failure (DNS temperror, scanner unreachable): on_timeout applies."""
    return CheckResult(check, TEMPERROR, "check-tempfail", detail, CheckAction.OFF, facts)


def checks_header(results: Mapping[str, CheckResult]) -> str:
    """The X-MXGate-Checks value: `name=word[/action]` per check. For the authentication checks
    the word is their RFC 8601 result (the one Authentication-Results states, e.g. `dkim=none` for
    an unsigned message, not the check's `pass`), so the two headers never contradict each other."""
    parts = []
    for name, r in results.items():
        word = r.facts.get("result") if isinstance(r.facts.get("result"), str) else None
        parts.append(f"{name}={word or r.outcome}" + (f"/{r.action}" if r.fired else ""))
    return " ".join(parts)
