"""The values the gateway's checks exchange: the facts they read and the result each returns.

Owns: `MessageFacts` (what was gathered about one message: peer, HELO, envelope, bytes, TLS),
`CheckEnv` (the I/O handles a check may use: resolver, TXT lookup, earlier results) and
`CheckResult` (one check's outcome, with a stable reason code for the reply and the trace).
Must not know: SMTP sessions, the spool, or how results combine (pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from mxgate.verdict import CheckAction

# Outcomes. "fire": the check found what it looks for and its action applies. "error" and
# "timeout": the check could not decide; fail-open/closed applies (settings.on_timeout).
PASS, FIRE, SKIP, ERROR, TIMEOUT = "pass", "fire", "skip", "error", "timeout"


@dataclass(frozen=True)
class MessageFacts:
    peer_ip: str
    helo: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    data: bytes  # exactly what arrived after DATA (CRLF only: the session refuses bare CR/LF)
    tls: str = ""  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", "" in clear


@dataclass
class CheckEnv:
    resolver: Any  # dns.resolver.Resolver with a bounded lifetime
    dnsfunc: Any  # auth.dns.TxtLookup for dkimpy / DMARC
    raw: dict[str, Any] = field(default_factory=dict)  # earlier checks' gathered values (DMARC reads SPF/DKIM)


@dataclass(frozen=True)
class CheckResult:
    check: str
    outcome: str  # PASS | FIRE | SKIP | ERROR | TIMEOUT
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
    return CheckResult(check, ERROR, "check-tempfail", detail, CheckAction.OFF, facts)


def checks_header(results: Mapping[str, CheckResult]) -> str:
    """The X-MXGate-Checks value: `name=word[/action]` per check. For the authentication checks
    the word is their RFC 8601 result (the one Authentication-Results states, e.g. `dkim=none` for
    an unsigned message, not the check's `pass`), so the two headers never contradict each other."""
    parts = []
    for name, r in results.items():
        word = r.facts.get("result") if isinstance(r.facts.get("result"), str) else None
        parts.append(f"{name}={word or r.outcome}" + (f"/{r.action}" if r.fired else ""))
    return " ".join(parts)

