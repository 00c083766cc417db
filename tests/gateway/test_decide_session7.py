"""Issue 19, session 7: decide_message without a generator per refusal kind gives the verdict,
reason, detail and tagged checks of the session 6 code on random combinations of results
(every action, fired or not, actions as words or CheckAction, checks outside PRECEDENCE)."""

from __future__ import annotations

import random

from mxgate.filters import score
from mxgate.filters.pipeline import PRECEDENCE, Outcome, _reply_reason, decide_message
from mxgate.filters.result import CheckResult
from mxgate.verdict import Action, CheckAction, Verdict

ACTIONS = [*CheckAction, "reject", "tempfail", "quarantine", "tag", "off"]
OUTCOMES = ["pass", "fire", "skip", "error", "timeout", "temperror"]
REASONS = ["spf-fail", "dkim-fail", "dmarc-policy", "malware", "blocked-attachment", "check-tempfail", "spam", "",
           "no-such-reason"]


def _session6(results, sc):
    ordered = [results[n] for n in PRECEDENCE if n in results] + [r for n, r in results.items() if n not in PRECEDENCE]
    tagged = tuple(r.check for r in ordered if r.fired and r.action == CheckAction.TAG)
    for action, verdict_action in ((CheckAction.REJECT, Action.REJECT), (CheckAction.TEMPFAIL, Action.TEMPFAIL),
                                   (CheckAction.QUARANTINE, Action.QUARANTINE)):
        hit = next((r for r in ordered if r.action == action), None)
        if hit is not None:
            reason = _reply_reason(action, hit.reason) if action != CheckAction.QUARANTINE else "quarantined"
            return Outcome(Verdict(verdict_action, reason, f"{hit.check}: {hit.detail}"), results, sc, tagged)
    return Outcome(Verdict(Action.ACCEPT, "queued"), results, sc, tagged)


def test_the_verdict_is_the_session6_one():
    rng = random.Random(7)
    sc = score.Score(0.0, (), "clean")
    names = [*PRECEDENCE, "greylist", "ratelimit", "custom"]
    for _ in range(5000):
        chosen = rng.sample(names, rng.randrange(0, len(names)))
        results = {n: CheckResult(n, rng.choice(OUTCOMES), rng.choice(REASONS), f"d{rng.randrange(9)}",
                                  rng.choice(ACTIONS)) for n in chosen}
        got, want = decide_message(results, sc), _session6(results, sc)
        assert (got.verdict, got.tagged) == (want.verdict, want.tagged), results
