"""The mailbox server role: the anonymous inbound listener that enforces the lock-down.

Owns: gathering the facts of a session (peer IP, TLS, client certificate), asking
policy/attribution.py for the verdict at each stage, delivering accepted mail durably to Maildir
before the 250, and tracing every accepted message and every refused attempt.
Must not decide policy itself, nor write reply text (smtp/replies.py does).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Protocol, Sequence

from mxgate import metrics
from mxgate.config.node import MailboxSection
from mxgate.delivery.internal import Outcome
from mxgate.delivery.srs import is_srs
from mxgate.delivery.maildir import Maildir
from mxgate.policy.attribution import (
    ClientCertFacts,
    CompiledPolicy,
    SessionFacts,
    attribute_by_certificate,
    attribute_by_ip,
    decide_connect,
    decide_mail,
    decide_rcpt,
)
from mxgate.policy.transaction import AcceptedRecipient, MailTransaction
from mxgate.queue.spool import DiskFree
from mxgate.server.listener import Role
from mxgate.server.policy_watch import PolicyWatcher
from mxgate.smtp import message as msg
from mxgate.smtp.limits import MAX_RECEIVED_HEADERS
from mxgate.smtp.replies import reply_text
from mxgate.verdict import Action, RcptRoute, Verdict, accept, reject, tempfail
from mxgate.trace.records import message_records, new_trace_id, refusal_records
from mxgate.trace.store import TraceStore
from mxgate.wording import count

log = logging.getLogger("mxgate.mailbox")
# Decisions a session remembers (distinct senders and recipients); past it the memo starts over.
DECISIONS_KEPT = 64


class MessageContext:
    """One accepted message while it is processed: the transaction value (decisions and policy
    snapshot, never looked up again), the bytes, and what the content hooks decided."""

    def __init__(self, session, txn: MailTransaction, data: bytes, trace_id: str):
        self.session = session
        self.txn = txn
        self.data = data
        self.trace_id = trace_id
        self.headers_to_add: list[bytes] = []
        self.detail: dict[str, Any] = {}
        self.original_ip = ""
        self.folder: str | None = None  # Maildir folder for every local recipient (e.g. "Junk")
        self.quarantine_reason: str | None = None
        self.verdict: Verdict | None = None  # a hook may refuse the whole message

    @property
    def compiled(self) -> CompiledPolicy:
        return self.txn.policy


class MessageHook(Protocol):
    """A content hook (authentication, auth/pipeline.py): may rewrite the message and set the
    folder, the quarantine reason or a refusal on the context."""

    async def __call__(self, ctx: MessageContext) -> None: ...


class MailboxDelivery(Protocol):
    """Aliases, lists, forwarding and relaying inside the process (delivery/internal.py)."""

    @property
    def can_relay(self) -> bool: ...

    async def deliver_accepted(self, txn: MailTransaction, data: bytes, *, trace_id: str, folder: str | None,
                               from_ip: str, original_ip: str) -> Outcome: ...

    async def relay_accepted(self, txn: MailTransaction, data: bytes, *, trace_id: str) -> None: ...

    def reverse_srs(self, address: str) -> str: ...


class Quarantine(Protocol):
    """Where quarantined messages are kept (quarantine/store.py)."""

    async def keep(self, txn: MailTransaction, data: bytes, *, trace_id: str, reason: str,
                   detail: dict[str, Any]) -> str: ...


class MailboxRole(Role):
    name = "mailbox"

    def __init__(self, settings: MailboxSection, *, node: str, watcher: PolicyWatcher, trace: TraceStore,
                 maildir: Maildir, disk_path: str, hooks: Sequence[MessageHook] = (),
                 delivery: MailboxDelivery | None = None, quarantine: Quarantine | None = None):
        self.settings = settings
        self.hostname = settings.hostname
        self.node = node
        self.watcher = watcher
        self.trace = trace
        self.maildir = maildir
        self.disk_path = disk_path
        self.hooks = tuple(hooks)
        # None: straight to each mailbox, no relaying, no SRS (a node without internal delivery).
        self.delivery = delivery
        self.quarantine = quarantine
        self.stats = {"accepted": 0, "refused": 0}
        self._disk_free = DiskFree()  # MAIL's free-disk check, one statfs per 100 ms at most

    # --- facts ----------------------------------------------------------------------------
    def _facts(self, s) -> SessionFacts:
        return s.role_state["facts"]

    def on_connect(self, s) -> Verdict:
        metrics.session_opened(self.name)
        compiled = self.watcher.current
        facts = SessionFacts(peer_ip=s.peer_ip, ip_connectors=attribute_by_ip(compiled, s.peer_ip))
        s.role_state["facts"] = facts
        s.role_state["facts_version"] = compiled.version
        return decide_connect(compiled, facts, self.settings.reject_stage)

    def on_tls(self, s) -> None:
        cert = s.tls.peer_cert if s.tls else None
        cert_facts = ClientCertFacts(names=(cert.subject_cn, *cert.dns_names), spki_sha256=cert.spki_sha256) if cert else None
        s.role_state["facts"] = replace(self._facts(s), tls=True, client_cert=cert_facts)
        s.role_state["facts_version"] = -1  # recompute attribution against the policy at MAIL

    def _current_facts(self, s, compiled: CompiledPolicy) -> SessionFacts:
        """Attribution is re-done when the policy changed since connect (changes apply to new transactions)."""
        facts = self._facts(s)
        if s.role_state.get("facts_version") != compiled.version:
            facts = replace(facts, ip_connectors=attribute_by_ip(compiled, s.peer_ip),
                            cert_connectors=attribute_by_certificate(compiled, facts.client_cert))
            s.role_state["facts"] = facts
            s.role_state["facts_version"] = compiled.version
        return facts

    def disk_ok(self) -> bool:
        return self._disk_free.ok(self.disk_path, self.settings.limits.min_free_disk)

    # --- stages ---------------------------------------------------------------------------
    def _decisions(self, s, compiled: CompiledPolicy, facts: SessionFacts) -> dict:
        """This session's MAIL and RCPT decisions under this policy snapshot and these session
        facts: decide_mail and decide_rcpt are pure, and a persistent session (a gateway's) asks
        the same questions for every message (issue 19, bench P1). A new snapshot or new facts
        (STARTTLS, a policy change) start an empty memo; a session never sees another's."""
        memo = s.role_state.get("decisions")
        if memo is None or memo[0] is not compiled or memo[1] is not facts or len(memo[2]) >= DECISIONS_KEPT:
            memo = s.role_state["decisions"] = (compiled, facts, {})
        return memo[2]

    def on_mail(self, s, sender, params) -> Verdict:
        compiled = self.watcher.current  # the snapshot this transaction uses throughout
        s.role_state["policy"] = compiled
        s.role_state["prior_key"] = None
        facts = self._current_facts(s, compiled)
        memo = self._decisions(s, compiled, facts)
        key = ("mail", sender)
        verdict = memo.get(key)
        if verdict is None:
            verdict = memo[key] = decide_mail(compiled, facts, sender)
        return verdict

    def on_rcpt(self, s, rcpt):
        compiled: CompiledPolicy = s.role_state["policy"]
        facts = self._current_facts(s, compiled)
        memo = self._decisions(s, compiled, facts)
        srs_target = self._srs_target(rcpt)
        key = ("rcpt", s.txn.sender, rcpt, s.role_state["prior_key"], srs_target)
        decision = memo.get(key)
        if decision is None:
            decision = memo[key] = decide_rcpt(compiled, facts, s.txn.sender, rcpt, s.role_state["prior_key"],
                                               srs_target=srs_target)
        if decision.verdict.action is Action.ACCEPT and decision.route is RcptRoute.RELAY and not self._can_relay():
            return reject("relay-denied", "no outbound route configured on this node"), decision
        if decision.verdict.action is Action.ACCEPT:
            s.role_state["prior_key"] = decision.outcome_key
        return decision.verdict, decision

    def _can_relay(self) -> bool:
        return self.delivery is not None and self.delivery.can_relay

    def _srs_target(self, rcpt) -> str | None:
        """The original address behind a valid SRS address of ours (signature and age checked)."""
        if self.delivery is None or not is_srs(rcpt.local):
            return None
        try:
            return self.delivery.reverse_srs(str(rcpt))
        except ValueError:  # forged, expired or malformed: an unknown recipient like any other
            return None

    # --- DATA: one message, step by step --------------------------------------------------
    async def on_message(self, s, txn, body) -> Verdict:
        ctx = MessageContext(s, self._transaction(s, txn), body.getvalue(), new_trace_id())
        hops = msg.count_received(msg.header_block(ctx.data))
        if hops > MAX_RECEIVED_HEADERS:  # RFC 5321 §6.3: a loop
            return reject("hop-count-exceeded", f"{hops} Received headers")
        if msg.continues_no_field(ctx.data):  # it would continue our Received (RFC 5322 §2.2.3)
            return reject("header-continuation-first")
        verdict = await self._run_hooks(ctx)  # authentication: stamps, folder, quarantine or refusal
        if verdict.refused:
            return verdict
        received = s.received_header(by=self.hostname, trace_id=ctx.trace_id, recipients=ctx.txn.recipients,
                                     connector=ctx.txn.connector_name)
        final = received + b"".join(ctx.headers_to_add) + ctx.data
        if ctx.quarantine_reason and self.quarantine is not None:
            return await self._quarantine(s, ctx, final)
        verdict = await self._deliver_local(ctx, final)  # durable in every mailbox before the 250
        if verdict.refused:
            return verdict
        if ctx.txn.relayed:
            await self.delivery.relay_accepted(ctx.txn, final, trace_id=ctx.trace_id)  # queued durably
        return self._delivered(s, ctx, final)

    def _transaction(self, s, txn) -> MailTransaction:
        """The session's MAIL/RCPT decisions with the policy snapshot they were made under."""
        return MailTransaction(s.role_state["policy"], txn.sender,
                               tuple(AcceptedRecipient(r.address, r.decision) for r in txn.recipients))

    async def _run_hooks(self, ctx: MessageContext) -> Verdict:
        for hook in self.hooks:
            await hook(ctx)
            if ctx.verdict is not None and ctx.verdict.refused:
                return ctx.verdict
        return accept("ok")

    async def _quarantine(self, s, ctx: MessageContext, final: bytes) -> Verdict:
        await self.quarantine.keep(ctx.txn, final, trace_id=ctx.trace_id, reason=ctx.quarantine_reason or "",
                                   detail={"action": ctx.detail.get("action", {}), "original_ip": ctx.original_ip,
                                           "connecting_ip": ctx.detail.get("connecting_ip", "")})
        self._trace_message(s, ctx, "Quarantined", "Quarantine", ctx.quarantine_reason, final)
        metrics.accepted(self.name)
        metrics.quarantined(self.name)
        return Verdict(Action.ACCEPT, "quarantined")

    async def _deliver_local(self, ctx: MessageContext, final: bytes) -> Verdict:
        """Every mailbox chosen at RCPT gets its copy, or the client is told to retry the whole
        message (duplicates beat loss); an accepted recipient is never dropped quietly."""
        mailboxes = ctx.txn.mailboxes
        if self.delivery is not None:
            outcome = await self.delivery.deliver_accepted(ctx.txn, final, trace_id=ctx.trace_id, folder=ctx.folder,
                                                           from_ip=ctx.session.peer_text, original_ip=ctx.original_ip)
            results, lost = outcome.local, outcome.lost(mailboxes)
        else:
            results, lost = await self.maildir.deliver_many([(m, final, ctx.folder) for m in mailboxes]), []
        failed = [res for res in results if res.error is not None]
        if failed:
            log.error("delivery failed for %s: %s", [f.address for f in failed], failed[0].error)
            return tempfail("storage-failed", f"{len(failed)} of {count(len(results), 'copy')} not stored")
        if lost:
            log.error("accepted recipients not deliverable: %s", lost, extra={"trace_id": ctx.trace_id})
            return tempfail("recipient-not-deliverable", f"no mailbox for {', '.join(lost)}")
        return accept("delivered")

    def _delivered(self, s, ctx: MessageContext, final: bytes) -> Verdict:
        # mail-flow.md §6: a message filed in Junk was delivered, but as spam — say so in the status.
        status = "FilteredAsSpam" if ctx.folder == "Junk" else "Delivered"
        self._trace_message(s, ctx, status, "Deliver", "maildir" + (f" folder {ctx.folder}" if ctx.folder else ""), final)
        local = len(ctx.txn.local)
        self.stats["accepted"] += 1
        metrics.accepted(self.name)
        metrics.delivered(local)
        if log.isEnabledFor(logging.INFO):  # the wording and the extra dict only when it is written
            log.info("delivered to %s", count(local, "mailbox"),
                     extra={"session": s.id, "peer": s.peer_text, "trace_id": ctx.trace_id})
        return accept("delivered")

    # --- trace ----------------------------------------------------------------------------
    def _trace_message(self, s, ctx: MessageContext, status: str, event: str, detail: str, final: bytes) -> None:
        txn = ctx.txn
        self.trace.record_all(message_records(
            ctx.trace_id, sender=str(txn.sender), data=final,
            rows=[(str(r.address), status if r.decision.route is RcptRoute.LOCAL else "Pending",
                   [("Receive", f"from {s.peer_text} helo {s.helo} via {r.decision.connector or 'anonymous'}"),
                    (event, detail) if r.decision.route is RcptRoute.LOCAL else ("Send", "queued for outbound")])
                  for r in txn.recipients],
            from_ip=s.peer_text, original_ip=ctx.original_ip, connector=txn.connector_name,
            policy_version=txn.policy.version, reason=ctx.quarantine_reason or "", role=self.name,
            detail={"session": s.id, "helo": s.helo, "tls": s.tls.version if s.tls else None, **ctx.detail}))

    def on_refused(self, s, stage: str, verdict: Verdict, **facts: Any) -> None:
        self.stats["refused"] += 1
        temporary = verdict.action is Action.TEMPFAIL
        metrics.refused(verdict.reason, role=self.name, stage=stage, deferred=temporary)
        log.info("%s at %s: %s", "deferred" if temporary else "rejected", stage, verdict.reason,
                 extra={"session": s.id, "peer": s.peer_text, "reason": verdict.reason})
        compiled = s.role_state.get("policy") or self.watcher.current
        sender, rcpts = self.refused_envelope(s, facts)
        session_facts = s.role_state.get("facts")
        self.trace.record_refusals(s.id, refusal_records(
            verdict, stage=stage, reply=reply_text(verdict), sender=sender, recipients=rcpts,
            detail={"session": s.id, "helo": s.helo, "tls": s.tls.version if s.tls else None, "why": verdict.detail,
                    **_peer_certificate(s)},
            from_ip=s.peer_text, policy_version=compiled.version, role=self.name,
            connector=_display_names(compiled, session_facts.connectors) if session_facts else ""))


def _peer_certificate(s) -> dict[str, Any]:
    """The client certificate the peer presented, so the trace shows why a certificate connector
    did not match (name and SPKI pin, mail-flow.md §4)."""
    cert = s.tls.peer_cert if s.tls else None
    if cert is None:
        return {}
    return {"certificate": {"subject_cn": cert.subject_cn, "dns_names": list(cert.dns_names),
                            "spki_sha256": cert.spki_sha256, "issuer": cert.issuer, "not_after": cert.not_after}}


def _display_names(compiled: CompiledPolicy, names) -> str:
    """Connector names as the admin wrote them (attribution keeps them lower-cased)."""
    return ",".join(sorted(compiled.connectors[n].name if n in compiled.connectors else n for n in names))

