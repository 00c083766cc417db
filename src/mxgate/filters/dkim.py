"""DKIM check (RFC 6376), through auth/dkim.py which verifies every signature.

Owns: the rule for when DKIM "fires": at least one signature failed (fail/permerror) and none
passed. An unsigned message does not fire (RFC 6376 §6.1: treat as unsigned, not as failed);
a key lookup temperror with no pass is an error (fail-open/closed applies).
Must not know: dkimpy, DNS, DMARC alignment.
"""

from __future__ import annotations

from mxgate.auth.dkim import DkimResult, verify_dkim
from mxgate.auth.headers import parse_fields
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "dkim"


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> tuple[DkimResult, ...]:
    if not any(f.name == b"dkim-signature" for f in parse_fields(facts.source.head)):
        return ()  # unsigned: the body is never read
    # dkimpy needs the whole message in memory: only HEAVY_SLOTS messages at once (memory bounded by design).
    if env.heavy is not None and not env.heavy.acquire(timeout=cfg.timeout):
        raise TimeoutError("no slot for DKIM verification")
    try:
        return verify_dkim(facts.source.read_all(), env.dnsfunc, timeout=cfg.timeout)
    finally:
        if env.heavy is not None:
            env.heavy.release()


def decide(raw: tuple[DkimResult, ...], cfg: CheckSettings) -> CheckResult:
    words = [r.result for r in raw]
    detail = " ".join(f"dkim={r.result} d={r.domain} s={r.selector}" for r in raw) or "dkim=none (unsigned)"
    summary = "pass" if "pass" in words else "none" if not words else words[0]
    if "pass" in words or not words:
        return passed(NAME, detail, result=summary)
    if any(w in ("fail", "permerror") for w in words):
        return fired(NAME, cfg.action, "dkim-fail", detail, result=summary)
    if "temperror" in words:
        return errored(NAME, detail, result="temperror")
    return passed(NAME, detail, result=summary)  # neutral: nothing to hold against the sender
