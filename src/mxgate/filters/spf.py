"""SPF check on the connecting IP (RFC 7208), through auth/spf.py.

Owns: turning an SpfResult into a CheckResult: it fires on the results listed in `fire_on`
(default only `fail`: softfail is advisory and feeds the score instead); `temperror` is an error
so the fail-open/closed choice applies. Must not know: pyspf, DNS, or what the action does.
"""

from __future__ import annotations

from mxgate.auth.spf import SpfResult, check_spf
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "spf"


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> SpfResult:
    # pyspf resolves through dnspython's default resolver, installed by the gateway at start.
    return check_spf(facts.peer_ip, facts.sender, facts.helo, timeout=cfg.timeout)


def cached_on_loop(facts: MessageFacts, cfg: CheckSettings) -> bool:
    """pyspf waits only on DNS: on the loop when its answers are cached (filters/pipeline.py)."""
    return True


def decide(raw: SpfResult, cfg: CheckSettings) -> CheckResult:
    detail = f"spf={raw.result} {raw.identity}={raw.domain}"
    if raw.result == "temperror":
        return errored(NAME, detail, result=raw.result)
    if raw.result in cfg["fire_on"]:
        return fired(NAME, cfg.action, "spf-fail", detail, result=raw.result)
    return passed(NAME, detail, result=raw.result)
