"""The one decision type: what a decision says should happen, and why.

Owns: `Action` (what the caller does), `Verdict` (an action with a stable kebab-case reason, used
alike in the reply, the log, the trace and the tests) and the small enums that name the other
decisions mxgate makes: `Disposition` (what the organisation wants done with an accepted
message after authentication), `CheckAction` (what a gateway check does when it fires) and
`RcptRoute` (where an accepted recipient goes).
A leaf: imports nothing from mxgate, so every layer may use it. Must not know reply text
(smtp/replies.py turns a Verdict into a reply) or who acts on a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Action(str, Enum):
    CONTINUE = "continue"
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    QUARANTINE = "quarantine"
    DISCONNECT = "disconnect"  # no reply at all (HTTP verbs on the SMTP port)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str  # stable kebab-case code
    detail: str = ""  # for log and trace, never sent to the peer

    @property
    def refused(self) -> bool:
        return self.action in (Action.REJECT, Action.TEMPFAIL, Action.DISCONNECT)


_ACCEPTS: dict[str, Verdict] = {}  # reason -> its detail-less verdict (a value: one per reason will do)


def accept(reason: str = "ok", detail: str = "") -> Verdict:
    # Several per accepted message (MAIL, RCPT, hooks, delivery): a frozen dataclass costs ~1 µs.
    if detail:
        return Verdict(Action.ACCEPT, reason, detail)
    verdict = _ACCEPTS.get(reason)
    if verdict is None:
        verdict = Verdict(Action.ACCEPT, reason)
        if len(_ACCEPTS) < 1024:  # stable reason codes: a handful; never grows with traffic
            _ACCEPTS[reason] = verdict
    return verdict


def reject(reason: str, detail: str = "") -> Verdict:
    return Verdict(Action.REJECT, reason, detail)


def tempfail(reason: str, detail: str = "") -> Verdict:
    return Verdict(Action.TEMPFAIL, reason, detail)


class Disposition(StrEnum):
    """An accepted message's fate after authentication (mail-flow.md §4.4). The values are the
    words of the policy (`dmarc_reject_action`, `dmarc_quarantine_action`) and of the trace;
    a StrEnum, so it prints and serialises as that word."""

    DELIVER = "deliver"
    JUNK = "junk"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class CheckAction(StrEnum):
    """What a gateway check does when it fires (`[gateway.<check>] action`); prints as its word."""

    REJECT = "reject"
    TEMPFAIL = "tempfail"
    QUARANTINE = "quarantine"
    TAG = "tag"
    OFF = "off"


class RcptRoute(StrEnum):
    """Where an RCPT decision sends a recipient (policy/attribution.py `RcptDecision.route`):
    a mailbox here, or on through an outbound connector; NONE when the recipient was refused."""

    LOCAL = "local"
    RELAY = "relay"
    NONE = ""
