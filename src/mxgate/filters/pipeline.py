"""Runs the gateway's content checks off the event loop and combines their results into one verdict.

Owns: the order (SPF, DKIM, DNSBL, rDNS, attachments and clamd in parallel; then DMARC, which
reads SPF and DKIM; then the score, which reads everything), each check's time budget (a check
still running at its `timeout` is abandoned in its worker thread and counts as `timeout`), the
fail-open/closed rule for checks that time out or error, and `decide_message`, the pure
combination: reject beats tempfail beats quarantine beats tag.
Must not know: SMTP sessions, the spool, header stamping (server/gateway.py does that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from mxgate import metrics
from mxgate.filters import attachments, clamd, dkim, dmarc, dnsbl, rdns, score, spf
from mxgate.filters.result import ERROR, SKIP, TIMEOUT, CheckEnv, CheckResult, MessageFacts
from mxgate.policy.gateway_checks import CheckSettings
from mxgate.smtp.replies import REPLIES
from mxgate.verdict import Action, CheckAction, Verdict

log = logging.getLogger("mxgate.filters")

PARALLEL = (spf, dkim, dnsbl, rdns, attachments, clamd)
AFTER = (dmarc,)
# When several checks refuse, the reply names the first of these (the most specific reason).
PRECEDENCE = ("clamd", "attachments", "dnsbl", "dmarc", "spf", "dkim", "rdns", "score")
DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict  # ACCEPT, REJECT, TEMPFAIL or QUARANTINE
    results: dict[str, CheckResult]
    score: score.Score
    tagged: tuple[str, ...]  # checks whose action was "tag" and that fired


def with_failure_policy(result: CheckResult, cfg: CheckSettings) -> CheckResult:
    """Timeouts and errors: fail open (carry on) or closed (451, the sender retries)."""
    if result.outcome not in (ERROR, TIMEOUT):
        return result
    return dataclasses.replace(result, action=CheckAction.TEMPFAIL if cfg.fail_closed else CheckAction.OFF,
                               reason="check-tempfail")


def _reply_reason(action: str, reason: str) -> str:
    """A refusal's reply must match its action: a 4xx text for tempfail, 5xx for reject."""
    reply = REPLIES.get(reason)
    if action == "tempfail" and (reply is None or reply.code >= 500):
        return "check-tempfail"
    if action == "reject" and (reply is None or reply.code < 500):
        return "message-rejected"
    return reason


def decide_message(results: dict[str, CheckResult], sc: score.Score) -> Outcome:
    """Pure: the message's verdict from every check's result."""
    ordered = [results[n] for n in PRECEDENCE if n in results] + [r for n, r in results.items() if n not in PRECEDENCE]
    tagged = tuple(r.check for r in ordered if r.fired and r.action == CheckAction.TAG)
    for action, verdict_action in ((CheckAction.REJECT, Action.REJECT), (CheckAction.TEMPFAIL, Action.TEMPFAIL),
                                   (CheckAction.QUARANTINE, Action.QUARANTINE)):
        hit = next((r for r in ordered if r.action == action), None)
        if hit is not None:
            reason = _reply_reason(action, hit.reason) if action != CheckAction.QUARANTINE else "quarantined"
            return Outcome(Verdict(verdict_action, reason, f"{hit.check}: {hit.detail}"), results, sc, tagged)
    return Outcome(Verdict(Action.ACCEPT, "queued"), results, sc, tagged)


class Pipeline:
    """One per gateway: a bounded worker pool shared by every message's checks."""

    def __init__(self, workers: int = DEFAULT_WORKERS):
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mxgate-check")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _run_one(self, module, facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> CheckResult:
        if not cfg.enabled:
            return CheckResult(module.NAME, SKIP, detail="off")
        loop = asyncio.get_running_loop()
        try:
            with metrics.timed(module.NAME):  # a timeout or an error is observed too (its latency is the point)
                raw = await asyncio.wait_for(loop.run_in_executor(self.pool, module.gather, facts, cfg, env),
                                             cfg.timeout)
        except asyncio.TimeoutError:
            result = CheckResult(module.NAME, TIMEOUT, detail=f"no answer in {cfg.timeout:g}s")
        except Exception as exc:  # a check's bug or a library's surprise is that check's error only
            log.warning("check %s failed: %r", module.NAME, exc)
            result = CheckResult(module.NAME, ERROR, detail=f"{exc.__class__.__name__}")
        else:
            env.raw[module.NAME] = raw
            result = module.decide(raw, cfg)
        return with_failure_policy(result, cfg)

    async def run(self, facts: MessageFacts, checks: dict[str, CheckSettings], env: CheckEnv) -> Outcome:
        first = await asyncio.gather(*(self._run_one(m, facts, checks[m.NAME], env) for m in PARALLEL))
        results: dict[str, Any] = {r.check: r for r in first}
        for m in AFTER:
            results[m.NAME] = await self._run_one(m, facts, checks[m.NAME], env)
        sc_cfg = checks["score"]
        sc = score.compute(results, facts.data, sc_cfg)
        if sc_cfg.enabled:
            results["score"] = score.decide(sc, sc_cfg)
        return decide_message(results, sc)
