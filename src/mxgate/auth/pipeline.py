"""Enhanced filtering and authentication of one message on the mailbox server (mail-flow.md §4).

Owns: the MailboxRole hook (`Authenticator`) that gathers the facts of an accepted transaction
(peer IP, HELO, envelope sender, the connector chosen at RCPT, the recipients), runs the
skip-list walk, runs SPF/DKIM/ARC and then DMARC off the event loop with time budgets, asks the
pure `decide_auth_action` what the organisation wants done, and acts: cleans the header block,
stamps `Authentication-Results` and the `X-MXGate-*` skip-list headers, and sets the folder,
quarantine reason or refusal on the `MessageContext` together with what the trace shows.

Must not know: how any standard is evaluated (auth/spf.py, dkim.py, dmarc.py, arc.py), how a
Received header is spelled (auth/received.py), reply text (smtp/replies.py), where quarantined
messages are kept (quarantine/store.py) or how Maildir delivery works.

Why DKIM and ARC are verified on the bytes as received, before header hygiene: renaming an
upstream `Authentication-Results` changes bytes a signer may have covered, and neither check
reads any result header's *claims*. The claims are what must never be believed (adversarial.md
§6): they are removed/renamed before anything is stored, and no decision here reads them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any, Sequence


from mxgate import metrics
from mxgate.auth.arc import ArcResult, arc_override, trusted_sealer_results, validate_arc
from mxgate.auth.dkim import DkimResult, verify_dkim
from mxgate.auth.dmarc import DmarcResult, evaluate_authors, policy_action
from mxgate.auth.dns import dnsfunc_for, install_default_resolver, make_resolver
from mxgate.auth.headers import (GATEWAY_STAMPS, author_domains, fold_header, header_from_domain, line_ending,
                                 sanitize_inbound_headers)
from mxgate.auth.received import received_values
from mxgate.auth.results import HEADER_NAME, format_authentication_results
from mxgate.auth.skiplist import SkipListResult, SkipListSettings, ef_applies, find_original_sender
from mxgate.auth.spf import SpfResult, check_spf, spf_identity
from mxgate.handoff import CheckThreads
from mxgate.smtp import message as msg
from mxgate.verdict import Disposition, reject

log = logging.getLogger("mxgate.auth")

SKIP_LISTED_HEADER = "X-MXGate-SkipListedInternetSender"  # detection succeeded (§4.6)
EXTERNAL_ORIGINAL_HEADER = "X-MXGate-ExternalOriginalInternetSender"  # ... and was applied
JUNK_FOLDER = "Junk"
# Whole-stage budgets on top of the per-lookup timeout: SPF may need up to 10 DNS-querying
# terms (RFC 7208 §4.6.4), DKIM one key per signature, ARC one key per set. A stage that
# overruns reports temperror (ARC: fail) and the message goes on; the thread finishes alone.
STAGE_LOOKUPS = 4
# Seconds checks may wait, with no check started meanwhile, before another thread is woken for
# them (mxgate/handoff.py `stall`): a cached message's checks take well under a millisecond.
CHECK_STALL = 0.02
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
# Authenticators whose resolver is (or was) dnspython's default, and the default before them.
_INSTALLED: list["Authenticator"] = []
_BASE: list[Any] = [None]

# Stable reasons of `decide_auth_action` (the trace and the golden tests use them).
R_ON_PREMISES = "internal-on-premises"
R_DMARC_PASS = "dmarc-pass"
R_NO_FAILURE = "dmarc-not-failed"  # none / temperror / permerror: never act on these
R_POLICY_NONE = "dmarc-fail-policy-none"
R_ARC_OVERRIDE = "arc-trusted-sealer"
R_DMARC_POLICY = "dmarc-policy"


@dataclass(frozen=True)
class AuthAction:
    """What to do with the message, and why (the reason is stable, the detail for the trace)."""

    action: Disposition
    reason: str
    detail: str = ""


def decide_auth_action(dmarc: DmarcResult, arc: ArcResult, *, trusted_sealers: Sequence[str],
                       reject_action: str, quarantine_action: str, internal: bool = False) -> AuthAction:
    """Pure: the organisation's answer to a DMARC outcome (mail-flow.md §4.4, issue 4).

    A failure is acted on only as far as the sender's own published disposition asks (after
    sp= and pct=); the organisation maps p=reject → `reject_action` (default quarantine, as
    EXO does) and p=quarantine → `quarantine_action` (default junk). temperror never acts:
    a DNS hiccup must not lose mail (RFC 7489 §6.6.3 leaves it to the receiver).
    """
    if internal:
        return AuthAction(Disposition.DELIVER, R_ON_PREMISES, "session attributed to an on-premises connector")
    if dmarc.result == "pass":
        return AuthAction(Disposition.DELIVER, R_DMARC_PASS, f"aligned by {dmarc.aligned_by}")
    if dmarc.result != "fail":
        return AuthAction(Disposition.DELIVER, R_NO_FAILURE, f"dmarc={dmarc.result}")
    action = policy_action(dmarc, on_reject=reject_action, on_quarantine=quarantine_action)
    if action is None:
        return AuthAction(Disposition.DELIVER, R_POLICY_NONE, dmarc.reason)
    override = arc_override(arc, trusted_sealers, dmarc.domain, dmarc.adkim, dmarc.aspf)
    if override.applies:
        # RFC 8617 §7.2: a trusted intermediary vouches for the aligned pass it recorded before
        # it changed the message; the trace names the ARC set and the result relied on.
        return AuthAction(Disposition.DELIVER, R_ARC_OVERRIDE,
                          f"DMARC p={dmarc.disposition} overridden: {override.explanation}")
    unused = f"; {override.explanation}" if override.sealer else ""
    return AuthAction(Disposition(action), R_DMARC_POLICY,
                      f"DMARC {dmarc.disposition} for {dmarc.domain}: {dmarc.reason}{unused}")


def stamp_value(ip: str, helo: str | None) -> str:
    """`ip=[x];domain=<helo>` as EXO writes its skip-list headers; the HELO is peer-chosen."""
    domain = _HELO_SAFE.sub("", (helo or "").strip())[:255] or "unknown"
    return f"ip=[{ip}];domain={domain}"


@dataclass(frozen=True)
class AuthFacts:
    """Everything the hook learnt; becomes the trace detail and the Authentication-Results."""

    connecting_ip: str
    auth_ip: str
    auth_helo: str
    walk: SkipListResult
    ef_in_scope: bool
    ef_applied: bool
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult
    from_domain: str | None
    ef_test_mode: bool = False  # the connector's ef_test_mode: detect and stamp, never judge by it
    results_from: str = ""  # the trusted ARC set whose recorded SPF/DKIM/DMARC were taken, if any


class Authenticator:
    """The MailboxRole hook. Holds the resolver (the node's `[dns] servers`) and the node's
    non-routable set; `await authenticator(ctx)` authenticates one message."""

    def __init__(self, *, servers: Sequence[str], timeout: float, non_routable: Sequence[str], cache_size: int = 0,
                 resolver=None):
        self.timeout = float(timeout)
        # The node's shared resolver, or one of the same kind (configured servers or the system's).
        self.resolver = resolver or make_resolver(list(servers), timeout=self.timeout, cache_size=cache_size)
        self.dnsfunc = dnsfunc_for(self.resolver, timeout=self.timeout)
        self.non_routable = SkipListSettings(False, (), tuple(non_routable)).non_routable  # parsed once
        # Started at the first message. One thread takes the checks a loop turn hands over; another
        # joins only when checks wait CHECK_STALL behind one held up (an uncached DNS answer).
        self.threads = CheckThreads(stall=CHECK_STALL)
        self._skip_cache: dict[tuple, SkipListSettings] = {}

    # --- lifetime (node.extras) -------------------------------------------------------------
    def install(self) -> None:
        """pyspf resolves through dnspython's process-wide default: make it ours. Several
        nodes in one process (tests) stack; the latest installed wins until it stops."""
        if not _INSTALLED:
            _BASE[0] = install_default_resolver(self.resolver)
        _INSTALLED.append(self)
        install_default_resolver(self.resolver)

    async def stop(self) -> None:
        self.threads.stop()
        if self not in _INSTALLED:
            return
        _INSTALLED.remove(self)
        install_default_resolver(_INSTALLED[-1].resolver if _INSTALLED else _BASE[0])

    # --- the hook ---------------------------------------------------------------------------
    async def __call__(self, ctx) -> None:
        s, txn = ctx.session, ctx.txn  # txn: policy/transaction.py MailTransaction (RCPT decisions + snapshot)
        org = txn.policy.organization
        connector = txn.connector
        recipients = [str(r.address) for r in txn.recipients]
        facts = await self.gather(ctx.data, trace_id=ctx.trace_id, connecting_ip=s.peer_text,
                                  helo=s.helo or "", sender=str(txn.sender), connector=connector,
                                  recipients=recipients, trusted_sealers=org.arc_trusted_sealers)
        internal = (connector is not None and connector.type == "on_premises") or s.auth_user is not None
        action = decide_auth_action(facts.dmarc, facts.arc, trusted_sealers=org.arc_trusted_sealers,
                                    reject_action=org.dmarc_reject_action,
                                    quarantine_action=org.dmarc_quarantine_action, internal=internal)
        self.act(ctx, facts, action, org.authserv_id, str(txn.sender))

    async def gather(self, data: bytes, *, trace_id: str, connecting_ip: str, helo: str, sender: str,
                     connector, recipients: Sequence[str], trusted_sealers: Sequence[str] = ()) -> AuthFacts:
        """The walk (pure) and then every DNS-backed check in one worker thread. On a session
        attributed to a partner connector (by address or certificate at RCPT), a trusted
        sealer's recorded results may stand for SPF, DKIM and DMARC (`trusted_sealer_results`)."""
        walk, in_scope = self.walk(data, connecting_ip, connector, recipients)
        applied = walk.status == "detected" and in_scope and not connector.ef_test_mode
        auth_ip, auth_helo = (str(walk.original_ip), walk.original_helo or "") if applied else (connecting_ip, helo)
        if walk.status == "stopped" and in_scope and not connector.ef_test_mode and walk.last_trusted_ip is not None:
            # An unreadable trusted hop ended the walk: judge the last address we could trust.
            auth_ip = str(walk.last_trusted_ip)
            auth_helo = helo if auth_ip == connecting_ip else ""
        # One worker-thread hop for all four checks: with the DNS cache warm they are CPU work of
        # a few hundred µs, and each hop (submit, wake-up, GIL hand-over) cost as much again.
        # Every lookup inside is bounded by the resolver's lifetime; the budget is the backstop.
        budget = self.timeout * (STAGE_LOOKUPS + 4) + 1.0
        sealers = tuple(trusted_sealers) if connector is not None and connector.type == "partner" else ()
        spf, dkim, arc, from_domain, dmarc, results_from = await self.threads.run(
            self._checks, (data, auth_ip, sender, auth_helo, trace_id, sealers), budget, None) or self._overran(data)
        return AuthFacts(connecting_ip, auth_ip, auth_helo, walk, in_scope, applied, spf, tuple(dkim),
                         dmarc, arc, from_domain, bool(connector is not None and connector.ef_test_mode), results_from)

    def _checks(self, data: bytes, auth_ip: str, sender: str, auth_helo: str, trace_id: str,
                trusted_sealers: Sequence[str] = ()) -> tuple:
        """ARC, SPF, DKIM, then DMARC over their results; blocking (runs in a worker thread).
        With `trusted_sealers` (partner sessions only), a trusted latest ARC set's recorded
        aligned pass stands for SPF, DKIM and DMARC; anything else is verified here."""
        with metrics.timed("arc"):
            arc = validate_arc(data, self.dnsfunc)
        if trusted_sealers and arc.status == "pass":
            _, mail_from_domain, identity = spf_identity(sender, auth_helo)
            carried = trusted_sealer_results(arc, trusted_sealers, author_domains(data),
                                             mail_from_domain if identity == "mailfrom" else "")
            if carried is not None:
                return carried.spf, carried.dkim, arc, carried.dmarc.domain, carried.dmarc, carried.where
        with metrics.timed("spf"):
            spf = check_spf(auth_ip, sender, auth_helo, timeout=self.timeout * STAGE_LOOKUPS)
        with metrics.timed("dkim"):
            dkim = tuple(verify_dkim(data, self.dnsfunc, timeout=self.timeout))
        # Every author domain, strictest result (RFC 7489 §6.6.1): header.from names the one used.
        with metrics.timed("dmarc"):
            dmarc = evaluate_authors(author_domains(data), spf, spf.domain, dkim, self.dnsfunc,
                                     sample=pct_sample(trace_id))
        from_domain = dmarc.domain
        return spf, dkim, arc, from_domain, dmarc, ""

    def _overran(self, data: bytes) -> tuple:
        """Every check temperror (ARC: fail, it has no temporary state): DNS trouble never loses mail."""
        from_domain = header_from_domain(data)
        return (SpfResult("temperror", "authentication overran its time budget", "", "mailfrom"),
                (DkimResult("temperror", "", "", "", "authentication overran its time budget"),),
                ArcResult("fail", (), "authentication overran its time budget"), from_domain,
                DmarcResult("temperror", None, None, None, "none", from_domain, None,
                            reason="authentication overran its time budget"), "")

    def _skip_settings(self, connector) -> SkipListSettings:
        """The connector's skip list with its networks parsed once per distinct setting, not per
        message (the parse was ~5% of the mailbox's event-loop time in bench P1)."""
        key = (connector.ef_skip_last_ip, tuple(connector.ef_skip_ips))
        settings = self._skip_cache.get(key)
        if settings is None:
            if len(self._skip_cache) >= 256:  # settings of policies long replaced
                self._skip_cache.clear()
            settings = self._skip_cache[key] = SkipListSettings(key[0], key[1], self.non_routable)
        return settings

    def walk(self, data: bytes, connecting_ip: str, connector, recipients: Sequence[str]) -> tuple[SkipListResult, bool]:
        """(walk result, whether `ef_users` puts this message in scope)."""
        if connector is None:
            return SkipListResult("off", None, None, None, "no-connector",
                                  "No inbound connector matched this message."), False
        if not ef_applies(connector.ef_users, recipients):
            return SkipListResult("off", None, None, None, "ef-users", (
                "Enhanced filtering is limited to ef_users and not every recipient is listed.")), False
        settings = self._skip_settings(connector)
        if not settings.enabled:  # the walk reads no header then: none is parsed (issue 19, bench P1)
            return find_original_sender((), connecting_ip, settings), True
        return find_original_sender(received_values(msg.header_block(data)), connecting_ip, settings), True

    def act(self, ctx, facts: AuthFacts, action: AuthAction, authserv_id: str, sender: str) -> None:
        """Clean the header block, stamp ours, and set the outcome on the context."""
        ctx.data = sanitize_inbound_headers(ctx.data, authserv_id, keep=_trusted_stamps(ctx))
        eol = line_ending(ctx.data)
        ar = format_authentication_results(authserv_id, facts.spf, sender, facts.auth_helo, facts.auth_ip,
                                           facts.dkim, facts.dmarc, facts.arc, facts.from_domain,
                                           results_from=facts.results_from)
        added = [fold_header(HEADER_NAME, ar, eol)]
        walk = facts.walk
        if walk.status == "detected":
            original_ip = str(walk.original_ip)  # formatted once (ipaddress's __str__ is Python)
            stamp = stamp_value(original_ip, walk.original_helo)
            added.append(fold_header(SKIP_LISTED_HEADER, stamp, eol))
            if facts.ef_applied:
                added.append(fold_header(EXTERNAL_ORIGINAL_HEADER, stamp, eol))
            ctx.original_ip = original_ip
        ctx.headers_to_add.extend(added)
        ctx.detail.update(trace_detail(facts, action))
        if action.action == Disposition.JUNK:
            ctx.folder = JUNK_FOLDER
        elif action.action == Disposition.QUARANTINE:
            ctx.quarantine_reason = action.reason
        elif action.action == Disposition.REJECT:
            ctx.verdict = reject(action.reason, action.detail)
        log.info("auth %s: ip=%s spf=%s dmarc=%s arc=%s -> %s (%s)", ctx.trace_id, facts.auth_ip,
                 facts.spf.result, facts.dmarc.result, facts.arc.status, action.action, action.reason)


def trace_detail(facts: AuthFacts, action: AuthAction) -> dict[str, Any]:
    """What the message trace shows (mail-flow.md §4.7): both IPs, how the original was
    chosen, every result, and the action with its reason."""
    walk = facts.walk
    explanation = walk.explanation
    if facts.ef_test_mode and walk.status != "off":
        explanation += (f" Test mode (ef_test_mode) is on: the original sender is only stamped, and SPF, DMARC"
                        f" and the action are judged on the connecting IP {facts.connecting_ip}.")
    return {
        "connecting_ip": facts.connecting_ip,
        "original_ip": str(walk.original_ip) if walk.original_ip else "",
        "authenticated_ip": facts.auth_ip,
        "enhanced_filtering": {"status": walk.status, "applied": facts.ef_applied, "in_scope": facts.ef_in_scope,
                               "test_mode": facts.ef_test_mode, "header_index": walk.header_index, "rule": walk.rule,
                               "explanation": explanation},
        "spf": {"result": facts.spf.result, "domain": facts.spf.domain, "identity": facts.spf.identity,
                "explanation": facts.spf.explanation[:200]},
        "dkim": [_fields(r) for r in facts.dkim] or [{"result": "none"}],
        "dmarc": {"result": facts.dmarc.result, "policy": facts.dmarc.policy, "disposition": facts.dmarc.disposition,
                  "domain": facts.dmarc.domain, "aligned_by": facts.dmarc.aligned_by, "reason": facts.dmarc.reason,
                  "authors": list(facts.dmarc.authors) or [facts.dmarc.domain] if facts.dmarc.domain else []},
        "arc": {"result": facts.arc.status, "sealers": list(facts.arc.sealers), "reason": facts.arc.reason},
        **({"results_from": f"SPF, DKIM and DMARC as recorded by the trusted sealer in {facts.results_from}"
                            f" (not verified again here)"} if facts.results_from else {}),
        "action": {"action": action.action, "reason": action.reason, "detail": action.detail},
    }


def _fields(result) -> dict[str, Any]:
    """A flat result's fields as a dict (asdict deep-copies every value; these are strings)."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


def pct_sample(trace_id: str) -> float:
    """A sample in [0, 100) for DMARC pct= (RFC 7489 §6.6.4), derived from the trace id so a
    message's outcome is reproducible from its trace."""
    try:
        return (int(trace_id[:8], 16) % 10000) / 100.0
    except ValueError:
        return 0.0


def _trusted_stamps(ctx) -> tuple[bytes, ...]:
    """The gateway's spam stamps survive only on mail through a restricting (locked) connector."""
    connector = ctx.txn.connector
    return GATEWAY_STAMPS if connector is not None and connector.restricts else ()
