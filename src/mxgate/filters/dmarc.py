"""DMARC check (RFC 7489), honouring the sender domain's published policy.

Owns: choosing the action from the disposition DMARC computed (after sp= and pct=):
`reject` → the check's `action`, `quarantine` → its `quarantine_action`, `none` → recorded only.
Must not know: record discovery or alignment (auth/dmarc.py), SPF/DKIM mechanics (it reads
their gathered values from the env), or what the action does.
"""

from __future__ import annotations

import random

from mxgate.auth.dmarc import DmarcResult, evaluate_authors, policy_action, public_suffix_list_loaded
from mxgate.auth.headers import author_domains
from mxgate.auth.spf import SpfResult, spf_identity
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "dmarc"
# What DMARC sees when SPF or DKIM could not run (timed out, off): RFC 7489 treats it as no pass.
NO_SPF = SpfResult("temperror", "SPF did not run", "")


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> DmarcResult:
    spf = env.raw.get("spf") or NO_SPF
    dkim = env.raw.get("dkim") or ()
    _, spf_domain, _ = spf_identity(facts.sender, facts.helo)
    # pct= sampling needs a random draw; it is drawn here so decide_dmarc stays pure.
    # Every author domain, strictest result (RFC 7489 §6.6.1).
    return evaluate_authors(author_domains(facts.source.head), spf, spf.domain or spf_domain, dkim, env.dnsfunc,
                            sample=random.uniform(0, 100))


def cached_on_loop(facts: MessageFacts, cfg: CheckSettings) -> bool:
    """Only DNS is waited on, once the public suffix list is parsed (~40 ms, never on the loop):
    on the loop when the answers are cached (filters/pipeline.py)."""
    return public_suffix_list_loaded()


def decide(raw: DmarcResult, cfg: CheckSettings) -> CheckResult:
    detail = f"dmarc={raw.result} p={raw.policy} disposition={raw.disposition} from={raw.domain}"
    if raw.result == "temperror":
        return errored(NAME, detail, result=raw.result)
    action = policy_action(raw, on_reject=cfg.action, on_quarantine=cfg["quarantine_action"])
    if action is None:
        return passed(NAME, detail, result=raw.result, disposition=raw.disposition)
    return fired(NAME, action, "dmarc-policy", detail, result=raw.result, disposition=raw.disposition)
