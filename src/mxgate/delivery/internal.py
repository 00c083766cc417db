"""The in-process internal delivery service: mail the organisation itself routes.

Owns: acting on a delivery plan (delivery/router.py) — writing local copies to the node's
Maildir, and handing external recipients to the node's outbound queue (queue/outbound.py) with
the envelope sender rewritten by SRS when the copy is a forward (delivery/srs.py), a
`Delivered-To:` field naming the forwarding mailbox (loop protection, RFC 9228) and a DKIM
signature for our domains (auth/dkim_sign.py) — and the trace rows of expanded copies.
Used by the mailbox role (aliases, lists, forwarding, on-premises relaying), by submission, and
by the outbound queue for DSNs to internal senders. Nothing here re-enters an SMTP listener or
its connector checks (mail-flow.md §5). Must not know SMTP sessions or reply text; it returns
results and the caller answers (no 250 before everything it reports as done is durable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mxgate.durable import private_dir
from mxgate.auth.dkim_sign import DkimSigner
from mxgate.delivery import srs
from mxgate.delivery.maildir import DeliveryResult, Maildir
from mxgate.delivery.router import DeliveryPlan, delivered_to, expand, plain_plan
from mxgate.durable import write_atomically
from mxgate.policy.transaction import MailTransaction
from mxgate.policy.validate import accepted_domain_for
from mxgate.queue.outbound import start_mailbox_outbound
from mxgate.queue.relay import RcptOutcome
from mxgate.smtp import message as msg
from mxgate.smtp.limits import MAX_RECEIVED_HEADERS
from mxgate.trace.records import message_records, new_trace_id

log = logging.getLogger("mxgate.internal")

SRS_SECRET_FILE = "srs.key"


def load_srs_secret(keys_dir: Path, key_file: str = "") -> bytes:
    """The SRS secret, generated once ([node] srs_key_file: every node of the organisation shares it)."""
    path = Path(key_file) if key_file else Path(keys_dir) / SRS_SECRET_FILE
    if not path.exists():
        write_atomically(path, secrets.token_bytes(32), 0o600)  # the directory fsync makes the name durable
    return path.read_bytes()


@dataclass(frozen=True)
class Provenance:
    """Facts of the message a copy came from, repeated on the copy's trace row (who sent it in,
    through which connector, under which policy version), so a forward is traceable on its own."""

    from_ip: str = ""
    original_ip: str = ""
    connector: str = ""


@dataclass
class Outcome:
    """What one internal delivery did: local results (check `failed`), queued external copies."""

    plan: DeliveryPlan
    local: list[DeliveryResult] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[DeliveryResult]:
        return [r for r in self.local if r.error is not None]

    def lost(self, envelope: Sequence[str]) -> list[str]:
        """Envelope recipients the router found no mailbox for: accepted at RCPT, so never dropped
        quietly — the caller tempfails (issue 15)."""
        wanted = {a.lower() for a in envelope}
        return [d.address for d in self.plan.dropped if d.why == "unknown" and d.address in wanted]


class InternalDelivery:
    def __init__(self, node, maildir: Maildir, outbound, signer: DkimSigner, srs_secret: bytes):
        self.node = node
        self.maildir = maildir
        self.outbound = outbound  # queue/outbound.OutboundQueue, or the CLI's OfflineOutbound
        self.signer = signer
        # bytes (one node's file), or the cluster's KeyRing: sign with its newest secret, reverse
        # with any secret still inside its rotation overlap (store/keys.py)
        self.srs_secret = srs_secret

    def _srs_secrets(self) -> list[bytes]:
        return [self.srs_secret] if isinstance(self.srs_secret, bytes) else self.srs_secret.srs_secrets()

    # --- facts from a policy: the transaction's snapshot, else the current one ---------------
    @property
    def compiled(self):
        return self.node.watcher.current

    def is_ours(self, domain: str, compiled=None) -> bool:
        return accepted_domain_for((compiled or self.compiled).policy, domain) is not None

    def is_local(self, address: str) -> bool:
        return address.lower() in self.compiled.directory

    # --- the service ------------------------------------------------------------------------
    def plan(self, recipients: Sequence[str], data: bytes, compiled=None) -> DeliveryPlan:
        """Where `recipients` really go under `compiled` (default: the policy in force). Pure."""
        compiled = compiled or self.compiled
        plain = plain_plan(recipients, compiled.directory)
        if plain is not None:
            return plain
        headers = msg.header_block(data)
        return expand(recipients, compiled.directory, lambda d: self.is_ours(d, compiled), seen=delivered_to(headers),
                      hops=msg.count_received(headers), max_hops=MAX_RECEIVED_HEADERS)

    async def deliver(self, sender: str, recipients: Sequence[str], data: bytes, *, trace_id: str,
                      folder: str | None = None, origin: str = "internal", compiled=None,
                      provenance: Provenance = Provenance(), outside: bool = False) -> Outcome:
        """Expand `recipients`, store local copies, queue external ones. Durable when it returns.

        `compiled` is the policy snapshot of the transaction (mail-flow.md: a transaction uses the
        policy it saw at MAIL); `provenance` the facts of the message the copies come from."""
        compiled = compiled or self.compiled
        plan = self.plan(recipients, data, compiled)
        outcome = Outcome(plan)
        outcome.local = await self.maildir.deliver_many([(a, data, folder) for a in plan.local])
        if outcome.failed:
            return outcome  # the caller tempfails; nothing went out yet
        direct = [a for a in plan.external if a not in plan.forwarded_by]
        if direct:
            await self.send_out(sender, direct, data, trace_id, compiled=compiled, outside=outside)
            outcome.queued += direct
        by_mailbox: dict[str, list[str]] = {}
        for address, via in plan.forwarded_by.items():
            by_mailbox.setdefault(via, []).append(address)
        for via, targets in by_mailbox.items():
            await self.forward(sender, via, targets, data, trace_id, compiled, outside=outside)
            outcome.queued += targets
        self._trace(sender, recipients, plan, data, trace_id, origin, compiled.version, provenance)
        return outcome

    async def release(self, sender: str, recipients: Sequence[str], data: bytes, trace_id: str) -> list[DeliveryResult]:
        """A message released from quarantine, routed as a delivered one would be (forwarding, lists)."""
        out = await self.deliver(sender, recipients, data, trace_id=trace_id, origin="release",
                                 outside=True)  # only mail from outside is quarantined
        return out.local

    async def forward(self, sender: str, via: str, targets: list[str], data: bytes, trace_id: str,
                      compiled=None, *, outside: bool = False) -> None:
        """A forwarded copy: SRS envelope in the forwarding mailbox's domain, Delivered-To, signed."""
        compiled = compiled or self.compiled
        domain = via.rpartition("@")[2]
        local_domains = frozenset(d.name.lower() for d in compiled.policy.accepted_domains)
        secret = (await asyncio.to_thread(self._srs_secrets))[0]
        rewritten = srs.forward(sender, domain, secret, time.time(), local_domains).address
        copy = b"Delivered-To: " + via.encode("utf-8") + b"\r\n" + data
        await self.send_out(rewritten, targets, copy, trace_id, {"forwarded_by": via}, compiled=compiled,
                            outside=outside)

    async def send_out(self, sender: str, recipients: Sequence[str], data: bytes, trace_id: str,
                       meta: dict | None = None, *, compiled=None, outside: bool = False) -> None:
        """Sign for our domains (off the loop: RSA) and queue durably for the outbound connector.
        `outside`: the message came from outside the organisation (auth/dkim_sign.signing_domain)."""
        if self.outbound is None:
            raise RuntimeError("no outbound queue on this node")
        compiled = compiled or self.compiled
        signed = await asyncio.to_thread(self.signer.sign, data, sender, lambda d: self.is_ours(d, compiled), outside)
        await self.outbound.enqueue(sender, list(recipients), signed, {"trace_id": trace_id, "kind": "outbound", **(meta or {})})

    # --- for the mailbox role (server/mailbox.py MailboxDelivery) and the outbound queue ----
    async def deliver_accepted(self, txn: MailTransaction, data: bytes, *, trace_id: str, folder: str | None = None,
                               from_ip: str = "", original_ip: str = "") -> Outcome:
        """The transaction's local recipients — the mailboxes chosen at RCPT — through the router,
        under the policy snapshot they were accepted with (issue 15)."""
        return await self.deliver(str(txn.sender), txn.mailboxes, data, trace_id=trace_id, folder=folder,
                                  origin="mailbox", compiled=txn.policy,
                                  provenance=Provenance(from_ip, original_ip, txn.connector_name),
                                  outside=_from_outside(txn))

    async def relay_accepted(self, txn: MailTransaction, data: bytes, *, trace_id: str) -> None:
        """On-premises senders (and internal-relay domains) to external recipients: queued durably."""
        if txn.relayed:
            await self.send_out(str(txn.sender), txn.relay_targets, data, trace_id, compiled=txn.policy,
                                outside=_from_outside(txn))

    @property
    def can_relay(self) -> bool:
        return self.outbound is not None

    def reverse_srs(self, address: str) -> str:
        """The original sender behind our SRS address (raises SrsError)."""
        return srs.reverse_any(address, self._srs_secrets(), time.time())

    async def local_from_queue(self, entry, recipients: list[str], data: bytes) -> tuple[RcptOutcome, ...]:
        """RoutingRunner's local route: DSNs and notices to internal senders, straight into Maildir."""
        out = await self.deliver(entry.sender, recipients, data, trace_id=entry.meta.get("trace_id", ""), origin="queue")
        unknown = {d.address for d in out.plan.dropped if d.why == "unknown"}

        def one(a: str) -> RcptOutcome:
            if out.failed:  # retry the whole group: duplicates beat loss
                return RcptOutcome(a, "deferred", "4.3.0", "local; not stored, will retry")
            if a.lower() in unknown:
                return RcptOutcome(a, "failed", "5.1.1", "local; no such mailbox")
            return RcptOutcome(a, "delivered", "2.0.0", "local; delivered to Maildir")

        return tuple(one(a) for a in recipients)

    # --- trace ------------------------------------------------------------------------------
    def _trace(self, sender: str, recipients: Sequence[str], plan: DeliveryPlan, data: bytes, trace_id: str,
               origin: str, policy_version: int, provenance: Provenance) -> None:
        """One row per copy the router created beyond the envelope recipients (status Expanded/Pending)."""
        envelope = {r.lower() for r in recipients}
        extra = [a for a in (*plan.local, *plan.external) if a not in envelope]
        if not extra and not plan.dropped:
            return
        why = {s.target: f"{s.address} → {s.target} ({s.why})" for s in plan.steps}
        self.node.trace.record_all(message_records(
            trace_id or new_trace_id(), sender=sender, data=data,
            rows=[(a, "Delivered" if a in plan.local else "Pending",
                   [("Expand", why.get(a, "expanded")),
                    ("Deliver", "maildir") if a in plan.local else ("Send", "queued for outbound")],
                   {"steps": [why.get(a, "")]}) for a in extra],
            detail={"dropped": [f"{d.address} {d.target} {d.why}" for d in plan.dropped]},
            role=origin, direction="internal", policy_version=policy_version, from_ip=provenance.from_ip,
            original_ip=provenance.original_ip, connector=provenance.connector))


async def start_internal(node, maildir: Maildir | None = None) -> InternalDelivery:
    """The node's internal delivery service and its outbound queue, made once per node."""
    existing = getattr(node, "internal", None)
    if existing is not None:
        return existing
    if maildir is None:
        role = node.roles.get("mailbox")
        maildir = role.maildir if role is not None else Maildir(node.home.maildir, node.committer,
                                                                hostname=node.settings.mailbox.hostname)
    # The queue and the service need each other (DSNs to internal senders are delivered by the
    # service; the service queues external copies): the queue's routes name the service, which
    # is built before the runner's first scan can run (nothing awaits in between).
    keys = getattr(node, "keyring", None)  # the cluster's keys when the node has a store
    service: InternalDelivery | None = None
    queue = await start_mailbox_outbound(node, lambda address: service.is_local(address),
                                         lambda entry, rcpts, data: service.local_from_queue(entry, rcpts, data))
    service = InternalDelivery(node, maildir, queue, DkimSigner(node.home.keys, keyring=keys),
                               keys if keys is not None else load_srs_secret(node.home.keys, node.settings.node.srs_key_file))
    node.internal = service
    return service


class OfflineOutbound:
    """The home's outbound queue seen from a process that runs no node (the CLI).

    Usable only while no node owns the queue (queue/spool.py `lock_spool`): a copy written
    behind a running runner's back would not be in its index. The next `mxgate serve` sends it.
    """

    def __init__(self, root: Path, committer):
        from mxgate.errors import ConfigError
        from mxgate.queue.spool import lock_spool

        self.root = Path(root)
        private_dir(self.root)
        self.committer = committer
        try:
            self.lock_fd = lock_spool(self.root)
        except ConfigError:
            self.lock_fd = -1
        self._spool = None

    @property
    def available(self) -> bool:
        return self.lock_fd >= 0

    async def enqueue(self, sender: str, recipients: Sequence[str], data: bytes, meta: dict):
        if not self.available:
            raise RuntimeError(f"{self.root}: a running node owns this queue")
        if self._spool is None:
            from mxgate.queue.spool import DiskSpool

            self._spool = await asyncio.to_thread(DiskSpool.open, self.root, self.committer)
        return await self._spool.enqueue(sender, list(recipients), data, meta)

    def close(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def offline_internal(home, compiled, trace, maildir: Maildir, committer) -> InternalDelivery:
    """Internal delivery for a process without a node (the CLI's quarantine release): the home's
    Maildirs, keys, SRS secret and outbound queue, under the policy `compiled`. Close its
    `outbound` when done."""
    from types import SimpleNamespace

    node = SimpleNamespace(watcher=SimpleNamespace(current=compiled), trace=trace)
    from mxgate.store.keys import KeyRing

    keys = KeyRing(trace.engine, home.keys) if getattr(trace, "engine", None) is not None else None
    return InternalDelivery(node, maildir, OfflineOutbound(home.spool / "outbound", committer),
                            DkimSigner(home.keys, keyring=keys), keys if keys is not None else load_srs_secret(home.keys))


def _from_outside(txn) -> bool:
    """Mail on the anonymous listener is from outside the organisation unless an on-premises
    connector (the organisation's own servers, mail-flow.md §5) carried it."""
    connector = txn.connector
    return connector is None or connector.type != "on_premises"
