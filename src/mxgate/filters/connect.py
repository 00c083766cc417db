"""Checks at connect (postscreen-style): DNSBL and reverse DNS of the client, looked up when the
connection opens, before the greeting.

Owns: which checks may run at connect (CONNECT_CHECKS), turning their gathered lookups into a
cacheable value and back (the cluster caches it per address for `ttl` seconds, store/cluster.py),
and `decide_connect`, the pure rule: a check whose configured action is reject refuses the
connection (before the greeting, or at every RCPT); any other outcome is handed to the DATA-phase
decision as that check's result, so it is not looked up twice. Lookups that failed or timed out
are not cached and not handed on: the DATA-phase check runs again with its own failure policy.
Must not know: SMTP sessions or reply text, or where the cache lives.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mxgate.filters import dnsbl, rdns
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts
from mxgate.policy.gateway_checks import CheckSettings

CONNECT_CHECKS = {"dnsbl": dnsbl, "rdns": rdns}


def gather(name: str, ip: str, cfg: CheckSettings, env: CheckEnv) -> Any:
    """The check's own lookup for `ip` (blocking: run it in a worker thread)."""
    return CONNECT_CHECKS[name].gather(MessageFacts(ip, "", "", (), b"", ""), cfg, env)


def cacheable(name: str, raw: Any) -> bool:
    """A lookup worth remembering: one that got an answer (a listing, or a definite absence)."""
    if name == "dnsbl":
        return not raw.errors
    return raw.status != "temperror"


def to_json(raw: Any) -> dict:
    return asdict(raw)


def from_json(name: str, data: dict) -> Any:
    if name == "dnsbl":
        return dnsbl.DnsblLookup(tuple(tuple(x) for x in data["listed"]), tuple(tuple(x) for x in data["allowed"]),
                                 tuple(data["errors"]))
    return rdns.RdnsLookup(data["status"], tuple(data["names"]), data.get("detail", ""))


def decide_connect(raws: dict[str, Any], checks: dict[str, CheckSettings]) -> tuple[CheckResult | None, dict[str, CheckResult]]:
    """(the result that refuses the connection or None, every check's result for the DATA phase).
    Pure; the policy in force decides, so a cached lookup follows a policy change at once."""
    results = {name: CONNECT_CHECKS[name].decide(raw, checks[name]) for name, raw in raws.items()
               if checks[name].enabled}
    refusing = next((results[n] for n in ("dnsbl", "rdns") if n in results
                     and results[n].fired and results[n].action == "reject"), None)
    return refusing, results
