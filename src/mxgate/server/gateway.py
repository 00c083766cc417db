"""The mail security gateway role: the public MX listener that filters, stamps and queues mail.

Owns: the gateway's hooks in protocol order — per-IP rate limit at connect and MAIL; at RCPT,
accepted domains only (no open relay), recipient validation (the shared store's directory, or
an RCPT callahead to the downstream with a cache) and greylisting; after DATA the content checks
(filters/pipeline.py), then stamping (Received with TLS details, one Authentication-Results with
our authserv-id, X-MXGate-Spam-Score/Verdict, an ARC seal), then the cut-through relay to the
downstream (server/cutthrough.py) or the durable enqueue, before the 250. Also `start_gateway(node)`: resolver, ARC key, spool recovery, delivery runner, listener.
Must not know: how a check decides (filters/), SMTP client details (queue/relay.py), retry
timing (queue/runner.py), or reply text (smtp/replies.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from mxgate.durable import private_dir
from mxgate.errors import ConfigError
from mxgate import metrics
from mxgate.auth.arc import ArcSealError, arc_fields, seal_arc, validate_arc
from mxgate.auth.headers import fold_header, header_from_domain, remember_prepended, sanitize_inbound_headers
from mxgate.auth.results import authentication_results_clauses
from mxgate.auth.rsa_signing import signing_key_loaded
from mxgate.auth.spf import SpfResult
from mxgate.filters import connect
from mxgate.filters.greylist import Greylist
from mxgate.filters.pipeline import Outcome, Pipeline
from mxgate.filters.ratelimit import RateLimiter
from mxgate.filters.result import CheckEnv, MessageFacts, checks_header
from mxgate.policy.gateway_checks import CheckSettings, load_checks
from mxgate.policy.validate import accepted_domain_for
from mxgate.auth.dkim import generate_dkim_key
from mxgate.delivery import srs
from mxgate.delivery.internal import load_srs_secret
from mxgate.auth.dns import dnsfunc_for, install_default_resolver, node_resolver
from mxgate.queue.outbound import start_gateway_outbound
from mxgate.queue.relay import RelaySettings, callahead, client_context
from mxgate.queue.runner import Runner
from mxgate.queue.scheduler import HostHealth, RetryPolicy
from mxgate.queue.spool import DiskFree, Spool, lock_spool, open_process_spool, process_spool
from mxgate.server.cutthrough import CutThrough
from mxgate.server.tls import ReloadingContext
from mxgate.server.listener import Listener, Role
from mxgate.smtp import message as msg
from mxgate.smtp.limits import MAX_HEADER_BLOCK, MAX_RECEIVED_HEADERS
from mxgate.smtp.replies import REPLIES, reply_text
from mxgate.smtp.source import MessageSource
from mxgate.verdict import Action, CheckAction, Verdict, accept, reject, tempfail
from mxgate.quarantine.store import QuarantineStore, resolve_mailboxes
from mxgate.trace.records import message_records, new_trace_id, refusal_records

log = logging.getLogger("mxgate.gateway")

SEAL_ON_LOOP_MAX = 64 * 1024  # bytes: a stamped message up to this is sealed on the event loop (~1-2 ms)
SPAM_SCORE_HEADER = "X-MXGate-Spam-Score"
SPAM_VERDICT_HEADER = "X-MXGate-Spam-Verdict"
CHECKS_HEADER = "X-MXGate-Checks"


class GatewayRole(Role):
    name = "gateway"
    clock = staticmethod(time.time)  # the greylist's clock (tests replace it instead of sleeping)

    def __init__(self, node, services, outbound=None):
        self.node = node
        self.settings = node.settings.gateway
        self.hostname = self.settings.hostname
        self.watcher = node.watcher
        self.trace = node.trace
        self.sv = services  # spool, runner, pipeline, resolver, dnsfunc, arc key, relay settings
        self.limiter = RateLimiter(getattr(node, "cluster", None))  # counted across the nodes on the store (store/cluster.py)
        self.greylist = Greylist(getattr(node, "cluster", None))
        self.rcpt_cache = RecipientCache(self.settings.callahead_ttl)
        self._checks: tuple[int, dict[str, CheckSettings]] = (-1, {})
        self.stats = {"accepted": 0, "refused": 0, "quarantined": 0}
        self._disk_free = DiskFree()  # MAIL's free-disk check, one statfs per 100 ms at most
        self.outbound = outbound  # queue/outbound.GatewayOutbound: the organisation's own outbound mail

    def checks(self, compiled) -> dict[str, CheckSettings]:
        if self._checks[0] != compiled.version:
            self._checks = (compiled.version, load_checks(compiled.policy.gateway))
        return self._checks[1]

    def disk_ok(self) -> bool:
        return self._disk_free.ok(self.sv.spool.root, self.settings.limits.min_free_disk)

    # --- connect, MAIL: rate limits -------------------------------------------------------
    def _own_server(self, s) -> bool:
        """The organisation's mailbox servers relaying outbound mail are not rate-limited like
        Internet peers: their volume is the whole organisation's."""
        return self.outbound is not None and self.outbound.is_trusted(s.peer_ip)

    def on_connect(self, s):
        metrics.session_opened(self.name)
        s.role_state["outcome"] = {"accepted": 0, "quarantined": 0, "rejected": 0, "deferred": 0}
        if self.connect_pending(s):
            return self._connect_after_lookup(s)  # the session greets when this answers
        return self._decide_connect(s)

    async def _connect_after_lookup(self, s) -> Verdict:
        try:
            await self.connect_lookup(s)
        except Exception as exc:  # never a refusal by accident: the DATA-phase checks still run
            log.warning("connect-stage checks for %s failed: %r", s.peer_ip, exc)
        return self._decide_connect(s)

    def _decide_connect(self, s) -> Verdict:
        if self._own_server(s):
            return accept("connect-ok")
        checks = self.checks(self.watcher.current)
        result = self.limiter.on_connect(s.peer_text, checks["ratelimit"], time.time())
        s.role_state["early"] = {"ratelimit": result.as_trace()}
        verdict = _stage_verdict(result)
        if verdict.refused or not s.role_state.get("connect_raw"):
            return verdict
        refusing, results = connect.decide_connect(s.role_state["connect_raw"], checks)
        s.role_state["connect_results"] = results  # the DATA phase uses these instead of asking again
        s.role_state["early"].update({n: r.as_trace() for n, r in results.items()})
        if refusing is None:
            return verdict
        s.role_state["connect_refusal"] = refusing
        if self.settings.connect_refuse == "rcpt":
            return verdict
        return reject("dnsbl" if refusing.check == "dnsbl" else "connect-rdns", refusing.detail)

    # --- connect: postscreen-style lookups before the greeting (filters/connect.py) ----------
    def connect_pending(self, s) -> bool:
        """Load what the cluster already knows about this client; True when a lookup must run
        before the greeting (on_connect then answers after `connect_lookup`)."""
        names = self.settings.connect_checks
        if not names or self._own_server(s):
            return False
        checks = self.checks(self.watcher.current)
        names = [n for n in names if checks[n].enabled]
        cache = getattr(self.node, "cluster", None)
        cached = (cache.verdict_get(s.peer_text, time.time()) if cache is not None else None) or {}
        s.role_state["connect_raw"] = {n: connect.from_json(n, cached[n]) for n in names if n in cached}
        s.role_state["connect_missing"] = [n for n in names if n not in cached]
        return bool(s.role_state["connect_missing"])

    async def connect_lookup(self, s) -> None:
        ip, checks = s.peer_text, self.checks(self.watcher.current)
        env = CheckEnv(self.sv.resolver, self.sv.dnsfunc)
        pipeline = self.sv.pipeline

        async def one(name: str):
            if pipeline.closed:  # the node is stopping: the DATA-phase check answers (451)
                return name, None
            try:  # the lookups' own lifetime ends before this budget: no query left in flight
                raw = await pipeline.threads.run(connect.gather, (name, ip, checks[name], env),
                                                 checks[name].timeout + 0.5, _NO_ANSWER)
            except Exception as exc:  # an error: not decided here; the DATA-phase check runs
                log.info("connect-stage %s for %s failed: %r", name, ip, exc)
                return name, None
            if raw is _NO_ANSWER:
                log.info("connect-stage %s for %s: no answer in %gs", name, ip, checks[name].timeout + 0.5)
                return name, None
            return name, raw

        got = await asyncio.gather(*(one(n) for n in s.role_state["connect_missing"]))
        fresh = {n: raw for n, raw in got if raw is not None and connect.cacheable(n, raw)}
        s.role_state["connect_raw"].update(fresh)
        cache = getattr(self.node, "cluster", None)
        if fresh and cache is not None:
            cache.verdict_put(ip, {n: connect.to_json(r) for n, r in s.role_state["connect_raw"].items()},
                              time.time() + self.settings.connect_verdict_ttl)

    def on_mail(self, s, sender, params) -> Verdict:
        compiled = self.watcher.current  # one snapshot per transaction
        s.role_state["policy"] = compiled
        if self._own_server(s):
            return accept("sender-ok")
        result = self.limiter.on_message(s.peer_text, self.checks(compiled)["ratelimit"], time.time())
        return _stage_verdict(result)

    # --- RCPT: accepted domains, recipient validation, greylisting -------------------------
    def on_rcpt(self, s, rcpt):
        if self._needs_callahead(s, rcpt):
            return self._rcpt_after_callahead(s, rcpt)  # the session waits, then resumes
        return self._decide_rcpt(s, rcpt)

    def _needs_callahead(self, s, rcpt) -> bool:
        """Only an accepted domain's recipient is asked about, and only without a cached answer."""
        if self.settings.recipient_validation != "callahead" or not rcpt.domain or rcpt.literal:
            return False
        if accepted_domain_for(s.role_state["policy"].policy, rcpt.domain) is None:
            return False
        return self.rcpt_cache.get(rcpt.key, time.monotonic()) is None

    async def _rcpt_after_callahead(self, s, rcpt):
        try:
            await self.callahead(rcpt.key)
        except Exception as exc:  # the cache then holds a transient 451: refuse for now
            log.warning("callahead for %s failed: %r", rcpt.key, exc)
            self.rcpt_cache.put(rcpt.key, (451, "callahead failed"), time.monotonic(), transient=True)
        return self._decide_rcpt(s, rcpt)

    def _decide_rcpt(self, s, rcpt):
        compiled = s.role_state["policy"]
        refusing = s.role_state.get("connect_refusal")
        if refusing is not None:  # connect_refuse = "rcpt": every recipient gets the check's refusal
            return _stage_verdict(refusing), None
        if rcpt.literal:
            return reject("address-literal", str(rcpt)), None
        if rcpt.domain:  # "<postmaster>" without a domain is always accepted (RFC 5321 §4.5.1)
            domain = accepted_domain_for(compiled.policy, rcpt.domain)
            if domain is None and self.outbound is not None and self.outbound.is_trusted(s.peer_ip):
                return accept("recipient-ok", "outbound from the organisation's mailbox server"), "outbound"
            if domain is None:
                return reject("relay-denied", f"{rcpt.domain} is not an accepted domain"), None
            known = self._recipient_known(compiled, domain, rcpt)
            if known is not True:
                return known, None
        result = self.greylist.check(s.peer_text, str(s.txn.sender), rcpt.key, self.checks(compiled)["greylist"],
                                     self.clock())
        return _stage_verdict(result), None

    def _recipient_known(self, compiled, domain, rcpt) -> Verdict | bool:
        if srs.is_srs(rcpt.local + "@") and rcpt.key not in compiled.directory:
            # A bounce to mail our mailbox servers forwarded: checked here with the same secret, so
            # a forged or guessed SRS address never reaches (or is relayed by) the mailbox server.
            try:
                keyring = getattr(self.node, "keyring", None)  # the cluster's secrets, old ones in their overlap
                srs.reverse_any(str(rcpt), keyring.srs_secrets() if keyring is not None else [self.sv.srs_secret],
                                time.time())
            except srs.SrsError as exc:
                return reject("srs-invalid", str(exc))
            return True
        if self.settings.recipient_validation == "callahead":
            answer = self.rcpt_cache.get(rcpt.key, time.monotonic())
            if answer is None:  # a cache of size zero, or expired while we asked: refuse for now
                return tempfail("check-tempfail", "callahead: no answer cached")
            code, text = answer
            if 200 <= code < 300:
                return True
            if 500 <= code < 600:
                return reject("unknown-recipient", f"callahead: {code} {text}")
            return tempfail("check-tempfail", f"callahead: {code} {text}")
        if rcpt.key in compiled.directory or domain.type == "internal_relay":
            return True
        return reject("unknown-recipient", "not in the directory")

    async def callahead(self, address: str) -> None:
        code, text = await callahead(self.sv.relay_settings(), address)
        self.rcpt_cache.put(address, (code, text), time.monotonic(), transient=not (200 <= code < 600) or 400 <= code < 500)

    # --- DATA: checks, stamps, durable enqueue --------------------------------------------
    async def on_message(self, s, txn, body) -> Verdict:
        compiled = s.role_state["policy"]
        if self.outbound is not None and self.outbound.is_trusted(s.peer_ip):  # queue/outbound.py (issue 6)
            return await self.outbound.accept(s, txn, body, compiled)
        # The message stays in its spool temp file; only the header block is read (issue 15:
        # a message in flight costs about one copy of itself, on disk).
        raw = body.source().split_head(MAX_HEADER_BLOCK)
        if msg.count_received(raw.head) > MAX_RECEIVED_HEADERS:
            return reject("hop-count-exceeded")
        if msg.continues_no_field(raw.head):  # it would continue our Received, which the mailbox trusts
            return reject("header-continuation-first")
        source = raw.with_head(sanitize_inbound_headers(raw.head, self.settings.authserv_id))  # forged results never survive
        trace_id = new_trace_id()
        tls = f"{s.tls.version} {s.tls.cipher}" if s.tls else ""
        facts = MessageFacts(s.peer_text, s.helo or "", str(txn.sender), tuple(str(r.address) for r in txn.recipients),
                             source, tls)
        env = CheckEnv(self.sv.resolver, self.sv.dnsfunc)
        env.raw.update(s.role_state.get("connect_raw") or {})
        outcome = await self.sv.pipeline.run(facts, self.checks(compiled), env,
                                             precomputed=s.role_state.get("connect_results"))
        s.role_state["checks"] = {n: r.as_trace() for n, r in outcome.results.items()}
        if outcome.verdict.refused:
            return outcome.verdict
        final = await self._stamp(s, txn, facts, env, outcome, trace_id)
        rcpts = [str(r.address) for r in txn.recipients]
        if outcome.verdict.action is Action.QUARANTINE:
            await asyncio.to_thread(self._quarantine, trace_id, facts, final, outcome, compiled)
            self._trace(s, txn, trace_id, final, outcome, "Quarantined", ("Quarantine", outcome.verdict.detail))
            self.stats["quarantined"] += 1
            metrics.accepted(self.name)
            metrics.quarantined(self.name)
            self._count(s, "quarantined")
            log.info("message %s quarantined: %s", trace_id, outcome.verdict.detail,
                     extra={"session": s.id, "peer": s.peer_text, "reason": outcome.verdict.reason})
            return accept("quarantined")
        if self.sv.cut_through is not None:
            answered = await self._cut_through(s, txn, final, outcome, trace_id, rcpts)
            if answered is not None:
                return answered
        await self.sv.spool.enqueue(str(txn.sender), rcpts, final, {"trace_id": trace_id, "peer": s.peer_text})
        self.sv.runner.kick()
        self._trace(s, txn, trace_id, final, outcome, "Pending", ("Receive", "queued for the downstream"))
        self.stats["accepted"] += 1
        metrics.accepted(self.name)
        self._count(s, "accepted")
        log.info("message %s queued for %d recipient(s)", trace_id, len(rcpts),
                 extra={"session": s.id, "peer": s.peer_text, "reason": "queued"})
        return accept("queued")

    async def _cut_through(self, s, txn, final: MessageSource, outcome: Outcome, trace_id: str,
                           rcpts: list[str]) -> Verdict | None:
        """Relay now, before the sender's reply (server/cutthrough.py): the reply, or None to queue
        it as without cut-through. Only after the checks passed and the stamps and seal, never
        for a refused or quarantined message."""
        ct = self.sv.cut_through
        if not ct.eligible(final):
            return None
        done = await ct.deliver(str(txn.sender), rcpts, final.read_all(), arrival=txn.started_at, ref=trace_id,
                                meta={"trace_id": trace_id, "peer": s.peer_text})
        if done is None:  # nothing settled: queued as usual
            return None
        if done.refusal is not None:  # the session answers it at DATA and records the refusal
            return done.refusal
        self._trace(s, txn, trace_id, final, outcome, "Pending", ("Receive", "queued for the downstream"),
                    done.trace_rows())
        self.stats["accepted"] += 1
        metrics.accepted(self.name)
        self._count(s, "accepted")
        log.info("message %s relayed to the downstream for %d recipient(s) (cut-through), %d refused, %d queued",
                 trace_id, len(done.delivered), len(done.failed), len(done.pending),
                 extra={"session": s.id, "peer": s.peer_text, "reason": "relayed"})
        return accept("queued" if done.pending else "relayed")

    @staticmethod
    def _count(s, outcome: str) -> None:
        counts = s.role_state.setdefault("outcome", {"accepted": 0, "quarantined": 0, "rejected": 0, "deferred": 0})
        counts[outcome] += 1

    def on_disconnect(self, s) -> None:
        """One log line per session with what became of it (the mailbox role logs alike)."""
        counts = s.role_state.get("outcome")
        if counts is None:
            return
        outcome = ("accepted" if counts["accepted"] or counts["quarantined"] else "rejected" if counts["rejected"]
                   else "deferred" if counts["deferred"] else "no mail")
        log.info("session %s from %s ended: %s (accepted %d, quarantined %d, rejected %d, deferred %d)", s.id,
                 s.peer_ip, outcome, counts["accepted"], counts["quarantined"], counts["rejected"], counts["deferred"],
                 extra={"session": s.id, "peer": s.peer_text, "outcome": outcome})

    async def _stamp(self, s, txn, facts: MessageFacts, env: CheckEnv, outcome: Outcome, trace_id: str) -> MessageSource:
        """Our header fields on top of the sanitised message; the body is read from the spool file.
        ARC validation and sealing need the whole message in memory (dkimpy): HEAVY_SLOTS at a time."""
        received = s.received_header(by=self.hostname, trace_id=trace_id, recipients=txn.recipients, cipher_bits=True)
        sc = outcome.score
        verdict_word = {Action.QUARANTINE: "quarantine"}.get(outcome.verdict.action, sc.verdict)
        checks_line = checks_header(outcome.results)
        ours = [(CHECKS_HEADER, checks_line), (SPAM_VERDICT_HEADER, verdict_word + (
            f" (tagged: {', '.join(outcome.tagged)})" if outcome.tagged else "")), (SPAM_SCORE_HEADER, sc.header_value())]
        source = facts.source
        prefix = b"".join(fold_header(n, v) for n, v in ours) + received
        body = source.with_head(prefix + source.head)
        remember_prepended(prefix, source.head)  # the seal's parse of the stamped head, from the checks' one
        chain = bool(arc_fields(source.head))  # inbound ARC fields: read once for both steps below
        if self._seal_on_loop(source, body, chain):
            results, seal = self._arc_work(source, body, facts, env, trace_id, chain)
        else:  # one hand-off for ARC validation, the results and the seal (issue 19: two to_thread hops before)
            results, seal = await self.sv.pipeline.run_heavy(self._arc_work, source, body, facts, env, trace_id,
                                                             chain)
        return body.with_head(seal + fold_header("Authentication-Results", results) + body.head)

    def _seal_on_loop(self, source: MessageSource, body: MessageSource, chain: bool) -> bool:
        """Seal on the event loop, not in a heavy thread: a short message held in memory with no
        inbound ARC fields (validating a chain asks DNS), when the key needs neither a database
        read (the keyring's copy is fresh) nor its first load (checking it takes tens of ms).
        Issue 19: the seal is ~1 ms of CPU; handing it to a thread and the GIL hand-overs between
        that thread and the busy loop while dkimpy ran cost more than blocking the loop for it
        (bench P3, gateway ~8% less CPU per message)."""
        if not body.in_memory or body.size > SEAL_ON_LOOP_MAX or chain:
            return False
        keyring = getattr(self.node, "keyring", None)
        if keyring is None:
            return signing_key_loaded(self.sv.arc_key)
        return keyring.cached("arc", "arc") and signing_key_loaded(keyring.arc(self.settings.arc_selector)[1])

    def _arc_work(self, source: MessageSource, body: MessageSource, facts: MessageFacts, env: CheckEnv,
                  trace_id: str, chain: bool) -> tuple[str, bytes]:
        """In a heavy thread: the inbound ARC chain validated (RFC 8617 §5.2), our
        Authentication-Results, and our seal over the stamped message: (results, seal)."""
        arc = validate_arc(source.read_all(), self.sv.dnsfunc) if chain else None
        spf = env.raw.get("spf") or SpfResult("none", "not checked", "")
        clauses = authentication_results_clauses(
            self.settings.authserv_id, spf, facts.sender, facts.helo, None, env.raw.get("dkim") or (),
            env.raw.get("dmarc"), arc, header_from_domain(source.head))
        results = "; ".join(clauses)
        try:
            return results, self._seal(body.read_all(), results, clauses)
        except ArcSealError as exc:  # e.g. no From field (RFC 6376 §5.4 requires signing it): relay unsealed
            log.info("message %s not ARC-sealed: %s", trace_id, exc)
            return results, b""

    def _seal(self, body: bytes, results: str, clauses: tuple[str, ...]) -> bytes:
        """ARC-seal with the cluster's key (store/keys.py) so every gateway seals alike; the
        node's own key file when it has no keyring."""
        keyring = getattr(self.node, "keyring", None)
        selector, key = (keyring.arc(self.settings.arc_selector) if keyring is not None
                         else (self.settings.arc_selector, self.sv.arc_key))
        return seal_arc(body, self.settings.authserv_id, self.settings.arc_domain, selector, key, results,
                        clauses=clauses)

    def _quarantine(self, trace_id: str, facts: MessageFacts, final: MessageSource, outcome: Outcome, compiled) -> None:
        """Through quarantine/ like the mailbox role's: committed before the 250 (RFC 5321 §6.1),
        recipients resolved to their mailboxes so a release never makes a Maildir for an alias."""
        mailboxes, others = resolve_mailboxes(compiled.directory, facts.recipients)
        QuarantineStore(self.node.engine, node=self.node.name).add(
            trace_id=trace_id, sender=facts.sender, recipients=mailboxes,
            subject=msg.header_value(facts.source.head, "Subject"),
            reason=outcome.verdict.detail.split(":", 1)[0], body=final.read_all(),
            detail={"why": outcome.verdict.detail[:2000], "relay_recipients": others, "role": "gateway",
                    "connecting_ip": facts.peer_ip})

    # --- trace ----------------------------------------------------------------------------
    def _trace(self, s, txn, trace_id: str, final: MessageSource, outcome: Outcome, status: str,
               event: tuple[str, str], rows: dict[str, tuple[str, tuple[str, str]]] | None = None) -> None:
        """One row per recipient: `status` and `event` after the Receive, or the recipient's own in `rows`."""
        rows = rows or {}
        self.trace.record_all(message_records(
            trace_id, sender=str(txn.sender), data=final.head, size=final.size,
            rows=[(str(r.address), *_with_receive(rows.get(str(r.address), (status, event)), s)) for r in txn.recipients],
            from_ip=s.peer_text, policy_version=s.role_state["policy"].version,
            reason=outcome.verdict.reason if status != "Pending" else "", role=self.name,
            detail={"session": s.id, "helo": s.helo, "tls": s.tls.version if s.tls else None,
                    "checks": s.role_state.get("checks", {}), "score": outcome.score.total,
                    "rules": dict(outcome.score.rules)}))

    def on_refused(self, s, stage: str, verdict: Verdict, **facts: Any) -> None:
        self.stats["refused"] += 1
        temporary = verdict.action is Action.TEMPFAIL
        metrics.refused(verdict.reason, role=self.name, stage=stage, deferred=temporary)
        self._count(s, "deferred" if temporary else "rejected")
        reply = reply_text(verdict)
        log.info("%s at %s: %s", "deferred" if temporary else "rejected", stage, verdict.reason,
                 extra={"session": s.id, "peer": s.peer_text, "reason": verdict.reason, "stage": stage,
                        "reply": reply})
        sender, rcpts = self.refused_envelope(s, facts)
        compiled = s.role_state.get("policy") or self.watcher.current
        self.trace.record_refusals(s.id, refusal_records(
            verdict, stage=stage, reply=reply, sender=sender, recipients=rcpts,
            detail={"session": s.id, "helo": s.helo, "why": verdict.detail,
                    "checks": {**s.role_state.get("early", {}), **s.role_state.get("checks", {})}},
            from_ip=s.peer_text, policy_version=compiled.version, role=self.name))


_NO_ANSWER = object()  # a connect-stage lookup past its budget


def _with_receive(row: tuple[str, tuple[str, str]], s) -> tuple[str, list[tuple[str, str]]]:
    status, event = row
    return status, [("Receive", f"from {s.peer_text} helo {s.helo}"), event]


def _stage_verdict(result) -> Verdict:
    """A check at connect/MAIL/RCPT: only reject and tempfail mean anything before DATA."""
    if not result.fired or result.action not in (CheckAction.REJECT, CheckAction.TEMPFAIL):
        return accept("ok")
    reply = REPLIES.get(result.reason)
    if result.action == CheckAction.TEMPFAIL:
        reason = result.reason if reply is not None and reply.code < 500 else "check-tempfail"
        return tempfail(reason, result.detail)
    return reject(result.reason if reply is not None and reply.code >= 500 else "message-rejected", result.detail)


# --- callahead: RCPT answered after an async lookup ----------------------------------------

class RecipientCache:
    """Callahead answers by address, for `ttl` seconds (transient answers for a tenth of it)."""

    MAX = 100_000

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._items: dict[str, tuple[float, tuple[int, str]]] = {}

    def get(self, key: str, now: float) -> tuple[int, str] | None:
        item = self._items.get(key)
        return item[1] if item and item[0] > now else None

    def put(self, key: str, answer: tuple[int, str], now: float, transient: bool = False) -> None:
        if len(self._items) >= self.MAX:
            self._items.pop(next(iter(self._items)))
        self._items[key] = (now + (self.ttl / 10 if transient else self.ttl), answer)


# --- services ------------------------------------------------------------------------------

@dataclass
class GatewayServices:
    spool: Spool
    runner: Runner
    pipeline: Pipeline
    resolver: Any
    dnsfunc: Any
    arc_key: bytes
    relay_settings: Callable[[], RelaySettings]
    lock_fd: int
    outbound: Any = None  # queue/outbound.GatewayOutbound: DSNs, and mail from outbound_from
    srs_secret: bytes = b""
    cut_through: CutThrough | None = None  # [gateway] cut_through: relayed before the 250 (server/cutthrough.py)

    def begin_stop(self) -> None:
        """SIGTERM: stop every content check in flight now, so sessions in DATA get their 451 and
        the node's stop stays bounded (the listeners then wait only for replies, not for checks)."""
        self.pipeline.close()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.spool.stop()  # the database queue hands back its leases
        self.pipeline.close()
        os.close(self.lock_fd)  # releases the flock: the queue CLI may now edit the spool directly

    def describe(self) -> str:
        return self.runner.describe()


def ensure_arc_key(keys_dir, selector: str) -> bytes:
    """The gateway's ARC signing key, generated once; the DNS TXT value is kept beside it."""
    pem_path, txt_path = keys_dir / f"arc-{selector}.pem", keys_dir / f"arc-{selector}.txt"
    if not pem_path.exists():
        pem, txt = generate_dkim_key()
        from mxgate.durable import write_atomically

        write_atomically(txt_path, txt.encode(), 0o644)
        write_atomically(pem_path, pem, 0o600)
    return pem_path.read_bytes()


def _resolver(node):
    resolver = node_resolver(node)  # shared with the mailbox role when both run here
    install_default_resolver(resolver)  # pyspf and dkimpy resolve through the default
    return resolver


def relay_settings_for(g, tls_now: Callable[[], Any]) -> Callable[[], RelaySettings]:
    """The downstream relay's settings from the `[gateway]` section `g`, as the queue and cut-through
    read them for every message: one object while the client TLS context `tls_now()` is the same,
    a new one once it was renewed (a new client certificate), not one per call."""
    made: list[RelaySettings] = []

    def relay_settings() -> RelaySettings:
        tls = tls_now()
        if not made or made[0].tls_context is not tls:
            made[:] = [RelaySettings(tuple(g.downstream), tls, g.source_address, g.hostname, g.relay_connect_timeout,
                                     g.relay_timeout, g.downstream_tls_name, idle_sessions=g.relay_concurrency)]
        return made[0]

    return relay_settings


async def start_services(node) -> GatewayServices:
    g = node.settings.gateway
    resolver = _resolver(node)
    # Every process of the node (`[node] workers`) accepts on the gateway listener and queues into
    # its own spool directory, with its own lock and runner (queue/spool.py "one spool per
    # process"): spool/gateway for process 0, spool/gateway-w<N> for worker N.
    worker, processes = node.settings.node.worker, node.settings.processes()
    if g.queue == "database":  # shared by every gateway node on the store (queue/dbspool.py)
        from mxgate.queue.dbspool import DbSpool

        root = process_spool(node.home.spool, "gateway", worker)  # spill files, queue CLI requests
        private_dir(root)
        lock_fd = lock_spool(root)
        # Leases are per process (the worker's node name, "<node>-w<N>"); process 0 takes back
        # those of workers the node no longer runs instead of waiting them out.
        spool = await asyncio.to_thread(DbSpool.open, node.engine, node.name, root, lease=g.queue_lease,
                                        adopt_workers_from=None if worker else processes)
    else:
        spool, lock_fd = await open_process_spool(node.home.spool, "gateway", worker, processes, node.committer)
    spool.start()
    if spool.recovery.discarded or spool.recovery.corrupted or spool.recovery.requeued:
        log.warning("gateway spool recovery: %s", spool.recovery)
    # The name is checked as well as the CA: a public CA bundle in downstream_ca must not let any
    # certificate it signed stand in for the mailbox server (RFC 6125 §6).
    ca = g.downstream_ca or str(node.certs.ca_cert)
    if g.downstream_ca:
        try:
            client_context(ca)  # a missing or broken CA file stops the start, named (ssl.SSLError is an OSError)
        except OSError as exc:
            raise ConfigError(f"[gateway] downstream_ca: cannot load {ca}: {exc.strerror or exc}") from None

    def build_client_context():
        return client_context(ca, g.client_cert or None, g.client_key or None, check_hostname=True)

    if g.client_cert:  # the certificate a certificate connector pins: renewed in place like a listener's
        renewing = ReloadingContext("gateway-client", g.client_cert, g.client_key or g.client_cert,
                                    build=build_client_context, also=(ca,))
        node.tls["gateway-client"] = renewing
        tls_now = renewing
    else:
        fixed = build_client_context()
        tls_now = lambda: fixed  # noqa: E731

    relay_settings = relay_settings_for(g, tls_now)

    def on_event(entry, event, detail, rcpt=None, status=None) -> None:
        if entry.meta.get("trace_id"):
            node.trace.add_event(entry.meta["trace_id"], event, detail, recipient=rcpt and rcpt.lower(), status=status)

    # DSNs leave through the outbound queue: to the sender's MX, or downstream for our domains.
    outbound = await start_gateway_outbound(node, relay_settings)
    retry = RetryPolicy(first_retry=g.retry_first, max_backoff=max(g.retry_max_backoff, g.retry_first),
                        max_age=g.retry_max_age)
    runner = Runner(spool, relay_settings, retry, hostname=g.hostname, concurrency=g.relay_concurrency,
                    scan_interval=g.queue_scan_interval, health=HostHealth.for_queue(g.host_backoff, retry), on_event=on_event,
                    bounce=outbound.bounce)
    runner.start()
    services = GatewayServices(spool, runner, Pipeline(g.check_workers, g.check_per_client), resolver,
                               dnsfunc_for(resolver, node.settings.dns.timeout),
                               ensure_arc_key(node.home.keys, g.arc_selector), relay_settings, lock_fd, outbound,
                               load_srs_secret(node.home.keys, node.settings.node.srs_key_file),
                               CutThrough(relay_settings, runner, g.cut_through_timeout, g.host_backoff)
                               if g.cut_through else None)
    node.extras.append(services)
    return services


async def start_gateway(node) -> None:
    """Node hook (`[roles] gateway = true`): build the services, then listen."""
    services = await start_services(node)
    # Mail from the organisation's own servers ([gateway] outbound_from) leaves through the same queue.
    role = GatewayRole(node, services, services.outbound if node.settings.gateway.outbound_from else None)
    listener = Listener(role, node.settings.gateway.limits, ssl_context=node.tls_provider(node.settings.gateway),
                        spill_dir=str(node.home.spool), trusted_proxies=node.settings.gateway.trusted_proxies)
    listener.reuse_port = node.settings.processes() > 1  # the node's workers listen on it too
    await listener.start(node.settings.gateway.listen)
    node.roles["gateway"] = role
    node.listeners["gateway"] = listener
