"""DKIM check (RFC 6376), through auth/dkim.py which verifies every signature.

Owns: the rule for when DKIM "fires": at least one signature failed (fail/permerror) and none
passed. An unsigned message does not fire (RFC 6376 §6.1: treat as unsigned, not as failed);
a key lookup temperror with no pass is an error (fail-open/closed applies).
Must not know: dkimpy, DNS, DMARC alignment.
"""

from __future__ import annotations

from mxgate.auth.dkim import DkimResult, verify_dkim
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "dkim"


def signatures(facts: MessageFacts) -> int:
    """How many DKIM-Signature fields the message carries (its header fields parsed once, facts.fields)."""
    return sum(1 for f in facts.fields if f.name == b"dkim-signature")


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> tuple[DkimResult, ...]:
    if not signatures(facts):
        return ()  # unsigned: the body is never read
    # dkimpy needs the whole message in memory: only HEAVY_SLOTS messages at once (memory bounded by design).
    if env.heavy is not None and not env.heavy.acquire(timeout=cfg.timeout):
        raise TimeoutError("no slot for DKIM verification")
    try:
        return verify_dkim(facts.source.read_all(), env.dnsfunc, timeout=cfg.timeout)
    finally:
        if env.heavy is not None:
            env.heavy.release()


# On the event loop (filters/pipeline.py) only a short message held in memory with few signatures:
# each signature canonicalises and hashes the message in Python, and a sender chooses how many.
LOOP_MESSAGE_MAX = 64 * 1024
LOOP_SIGNATURES = 2
WHOLE_MESSAGE = True  # gather holds the whole message: in a worker it takes a memory slot (env.heavy)


def cached_on_loop(facts: MessageFacts, cfg: CheckSettings) -> bool:
    """Verification waits only on DNS (the key records), tried on the loop from the cache
    (filters/pipeline.py) when the message is short, held in memory and signed at most
    LOOP_SIGNATURES times. Issue 19: verifying in a worker cost more in the hand-off and the GIL
    hand-overs with the busy loop than the verification of a usual message; a large or
    many-times-signed one still goes to a worker, so no sender can hold the loop for long.
    An unsigned message reads neither DNS nor its body: on the loop at any size."""
    count = signatures(facts)
    if not count:
        return True
    source = facts.source
    return source.in_memory and source.size <= LOOP_MESSAGE_MAX and count <= LOOP_SIGNATURES


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
