"""Settings of the gateway's checks: the `[gateway.<check>]` tables of the policy, with defaults.

Part of the policy (pure, below filters/): saving a policy validates these tables, and the store
that saves must not reach up into the checks that run them.

Owns: every check's keys, their defaults and why, their types and allowed values, and the
validation that makes `mxgate policy apply` refuse a bad table (exit 2). Pure: takes the
policy's GatewayPolicy, returns `CheckSettings` values or PolicyIssues.
Must not know: how a check runs (filters/<check>.py) or what its verdict does (pipeline.py).

Every check has `action` (what happens when it fires: reject, tempfail, quarantine, tag, off),
`timeout` (seconds; the check's work is stopped at this budget), `on_timeout` — what a check
that could not get an answer in time means, a timeout or a dependency's temporary error (DNS
temperror, clamd unreachable): "open" carry on as if it passed, "closed" answer 451 — and
`on_error`, separate, for a check that broke: an exception, a RecursionError, a limit of the
MIME/archive walk passed. An error is never silently "off": the default is "tempfail" (451, the
sender retries), and "reject" for attachments, whose limits a message will not stop passing on
retry; "open" exists only as an operator's explicit choice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from mxgate.errors import PolicyIssue
from mxgate.verdict import CheckAction

ACTIONS = tuple(a.value for a in CheckAction)
_ACTION_OF = {a.value: a for a in CheckAction}  # CheckAction(word) by a dict read: ~25 reads per message
ON_TIMEOUT = ("open", "closed")
ON_ERROR = ("open", "tempfail", "reject", "quarantine")
KIND = "gateway check"

# Extensions that run code when opened on common desktops; Exchange Online's default
# common-attachment filter list is the model (it blocks these and more).
BLOCKED_EXTENSIONS = ("ace", "ani", "apk", "app", "appx", "bat", "cab", "cmd", "com", "cpl", "dll", "exe",
                      "hta", "iso", "jar", "js", "jse", "lnk", "msi", "pif", "ps1", "reg", "scr", "sys",
                      "vbe", "vbs", "wsf", "wsh")

_COMMON = {"action": "tag", "timeout": 10.0, "on_timeout": "open", "on_error": "tempfail"}

# check → its defaults. A key absent here is unknown and refused.
DEFAULTS: dict[str, dict[str, Any]] = {
    # RFC 7208: results that make the check fire (softfail is advisory, so tagged via the score).
    "spf": {**_COMMON, "fire_on": ("fail",)},
    # Fires when a signature fails and none passes (an unsigned message does not fire).
    "dkim": {**_COMMON},
    # "Honour the sender's policy": p=reject failures take `action`, p=quarantine failures take
    # `quarantine_action`; p=none failures are only recorded (RFC 7489 §6.6.4 leaves it to us).
    "dmarc": {**_COMMON, "action": "reject", "quarantine_action": "quarantine"},
    # RFC 5782 lists on the connecting IP. A hit on an allow list (DNSWL) wins over block lists.
    "dnsbl": {**_COMMON, "action": "reject", "timeout": 5.0, "zones": (), "allow_zones": ()},
    # "fcrdns": the PTR name must resolve back to the IP (RFC 8601 §3 iprev); "ptr": any PTR.
    "rdns": {**_COMMON, "timeout": 5.0, "require": "fcrdns"},
    # Per connecting IP, over a sliding window: connections and messages (MAIL commands).
    "ratelimit": {**_COMMON, "action": "tempfail", "window": 60.0, "max_connections": 120, "max_messages": 300},
    # on_error "reject": a message past the walk's limits (filters/mimewalk.py) stays past them;
    # on_timeout "closed": a message that outlasts the walk's budget is never passed unread.
    "attachments": {**_COMMON, "action": "reject", "on_error": "reject", "on_timeout": "closed", "blocked_extensions": BLOCKED_EXTENSIONS,
                    "blocked_types": ("exe", "elf"), "inspect_archives": True},
    # clamd's socket: a path (UNIX socket) or "host:port" on a trusted network; "" = off.
    "clamd": {**_COMMON, "action": "reject", "timeout": 30.0, "on_timeout": "closed", "socket": ""},
    # The transparent score: rules and weights in filters/score.py; thresholds here.
    "score": {**_COMMON, "action": "reject", "timeout": 1.0, "tag_threshold": 5.0,
              "quarantine_threshold": 10.0, "reject_threshold": 15.0, "disabled_rules": ()},
    # Off by default (it delays first-time senders). Seconds: first retry accepted after
    # `delay`, within `retry_window`; a passed triplet is remembered for `pass_ttl`.
    "greylist": {**_COMMON, "action": "off", "delay": 300.0, "retry_window": 4 * 3600.0,
                 "pass_ttl": 36 * 86400.0},
}

_CHOICES = {"action": ACTIONS, "quarantine_action": ACTIONS, "on_timeout": ON_TIMEOUT, "on_error": ON_ERROR,
            "require": ("fcrdns", "ptr"), "fire_on": ("fail", "softfail", "neutral", "none", "permerror")}


@dataclass(frozen=True)
class CheckSettings:
    name: str
    values: Mapping[str, Any]

    @functools.cached_property
    def action(self) -> CheckAction:
        # The enum's own lookup goes through EnumType.__call__ (issue 19: the gateway's checks ask
        # `action`/`enabled` ~25 times a message); anything not a known word goes there as before.
        # Read once per settings object (load_checks' values are a read-only view nobody changes).
        word = self.values["action"]
        member = _ACTION_OF.get(word) if type(word) is str else None
        return member if member is not None else CheckAction(word)

    @functools.cached_property
    def enabled(self) -> bool:
        return self.action is not CheckAction.OFF

    @property
    def timeout(self) -> float:
        return float(self.values["timeout"])

    @property
    def fail_closed(self) -> bool:
        return self.values["on_timeout"] == "closed"

    @property
    def on_error(self) -> str:
        return self.values["on_error"]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def _problems(name: str, table: Mapping[str, Any]) -> list[PolicyIssue]:
    if name not in DEFAULTS:
        return [PolicyIssue(KIND, name, "", "unknown-check", f"unknown check (known: {', '.join(DEFAULTS)})")]
    defaults, out = DEFAULTS[name], []
    for key, value in table.items():
        if key not in defaults:
            out.append(PolicyIssue(KIND, name, key, "unknown-key", f"unknown key (known: {', '.join(sorted(defaults))})"))
            continue
        if not _type_ok(defaults[key], value):
            out.append(PolicyIssue(KIND, name, key, "invalid-type",
                                   f"expected {type(defaults[key]).__name__}, got {value!r}"))
            continue
        allowed = _CHOICES.get(key)
        items = value if isinstance(value, (tuple, list)) else (value,)
        if allowed and any(v not in allowed for v in items):
            out.append(PolicyIssue(KIND, name, key, "invalid-value", f"must be one of {', '.join(allowed)}"))
        if isinstance(defaults[key], (int, float)) and not isinstance(defaults[key], bool):
            if value != value:  # NaN: no comparison refuses it, and uvloop's timers raise on it
                out.append(PolicyIssue(KIND, name, key, "invalid-value", "must be a number (not nan)"))
            elif value < 0:
                out.append(PolicyIssue(KIND, name, key, "invalid-value", "must not be negative"))
    if "timeout" in table and not out and float(table["timeout"]) <= 0:
        out.append(PolicyIssue(KIND, name, "timeout", "invalid-value", "must be more than 0 seconds"))
    if name == "score" and not out:
        merged = {**defaults, **table}
        if not merged["tag_threshold"] <= merged["quarantine_threshold"] <= merged["reject_threshold"]:
            out.append(PolicyIssue(KIND, name, "tag_threshold", "threshold-order",
                                   "needs tag_threshold <= quarantine_threshold <= reject_threshold"))
    return out


def validate_gateway_checks(gateway) -> list[PolicyIssue]:
    """Issues in the policy's `[gateway.<check>]` tables (called from policy/validate.py)."""
    out: list[PolicyIssue] = []
    for name, items in gateway.checks:
        out += _problems(name, dict(items))
    return out


def load_checks(gateway) -> dict[str, CheckSettings]:
    """Every check's effective settings: defaults overlaid with the policy's table.

    A table that fails validation cannot be saved, so only a store written by hand reaches the
    fallback: the defaults, which are safe.
    """
    out = {}
    for name, defaults in DEFAULTS.items():
        table = gateway.check(name)
        values = dict(defaults) if _problems(name, table) else {**defaults, **table}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        out[name] = CheckSettings(name, MappingProxyType(values))
    return out
