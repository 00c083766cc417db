"""QuarantineStore: held messages in the `quarantine` table, with list/preview/release/delete.

Owns: adding a message (committed before the mailbox server says 250), listing and previewing
without handing out raw bytes, releasing into the recipients' Maildirs, deleting, and the
`Release` event in the message trace. Must not know: SMTP, why a message was quarantined
(the reason is a stable code chosen by the caller), or who may release (the CLI/API decides).

Both roles quarantine through `QuarantineStore.add` (one ID format, 16 hex digits, for the web
admin, the API and the CLI alike) with the recipients *resolved to mailboxes*
(`resolve_mailboxes`): an alias is stored as its mailbox, and an address that is no mailbox (an
SRS bounce address, an internal-relay domain) is kept aside in `detail.relay_recipients`, so a
release never creates a Maildir for it.

Release order: deliver durably first, then mark released. A crash in between means the next
release delivers again — a duplicate, never a loss (the same rule as RFC 5321 §6.1 for 250s).
A release that would deliver nothing (no local mailbox) is refused, not silently marked.

Several nodes (docs/deployment.md): the rows and bodies live in the shared database, so any
node lists and previews any node's quarantine. Release delivers into the releasing process's
Maildir root, and every mailbox node mounts the same Maildir root (it must anyway: the gateways
fail over between mailbox nodes, so any of them may deliver to any mailbox). A node that runs no
mailbox role (a gateway- or admin-only node) holds no Maildir and refuses, naming the nodes that
can release; the CLI releases into the home it is given.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine

from mxgate.auth.headers import parse_fields, split_headers
from mxgate.delivery.maildir import DeliveryResult, Maildir
from mxgate.durable import GroupCommitter
from mxgate.errors import MxgateError, NotFoundError
from mxgate.policy.transaction import MailTransaction
from mxgate.smtp.message import header_block, header_value
from mxgate.store import MAX_ROW_ID
from mxgate.store.schema import nodes, quarantine
from mxgate.trace.store import TraceStore

PREVIEW_BODY_CHARS = 2000  # enough to judge a message; the raw bytes never leave via preview
PREVIEW_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                   b"authentication-results", b"x-mxgate-skiplistedinternetsender",
                   b"x-mxgate-externaloriginalinternetsender")
_SUMMARY = (quarantine.c.id, quarantine.c.trace_id, quarantine.c.node, quarantine.c.created_at,
            quarantine.c.sender, quarantine.c.recipients, quarantine.c.subject, quarantine.c.reason,
            quarantine.c.detail, quarantine.c.released_at, quarantine.c.released_by)


# (sender, recipients, body, trace_id) -> local delivery results; see release_into.
Deliver = Callable[[str, Sequence[str], bytes, str], Awaitable[list[DeliveryResult]]]


def resolve_mailboxes(directory: Mapping[str, Any], recipients: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pure: (mailbox addresses, other recipients) for a message's envelope recipients.

    `directory` maps an address or alias (lower case) to its policy Mailbox (the compiled
    policy's directory): an alias becomes its mailbox's address. Lists and forwarding mailboxes
    stay themselves: a release routes them as delivered mail is (delivery/internal.py).
    Addresses that are no mailbox (SRS bounce addresses, internal-relay domains) are set aside.
    """
    mailboxes: list[str] = []
    others: list[str] = []
    for address in (r.lower() for r in recipients):
        mailbox = directory.get(address)
        target = mailboxes if mailbox is not None else others
        value = mailbox.address.lower() if mailbox is not None else address
        if value not in target:
            target.append(value)
    return mailboxes, others


class QuarantineStateError(MxgateError):
    """The item exists but cannot do what was asked (already released, nothing to deliver)."""


class QuarantineStore:
    def __init__(self, engine: Engine, node: str = ""):
        self.engine = engine
        self.node = node

    # --- writing ---------------------------------------------------------------------------
    def add(self, *, trace_id: str, sender: str, recipients: Sequence[str], subject: str, reason: str,
            body: bytes, detail: dict[str, Any] | None = None) -> str:
        """Keep one message; returns its quarantine id. Blocking: call from a worker thread."""
        qid = secrets.token_hex(8)
        with self.engine.begin() as conn:
            conn.execute(insert(quarantine).values(
                id=qid, trace_id=trace_id, node=self.node, created_at=time.time(), sender=sender[:320],
                recipients=json.dumps([r.lower() for r in recipients]), subject=subject[:256], reason=reason[:64],
                detail=json.dumps(detail or {}, default=str), body=body, deleted=False))
        return qid

    async def keep(self, txn: MailTransaction, data: bytes, *, trace_id: str, reason: str,
                   detail: dict[str, Any]) -> str:
        """The mailbox role's quarantine: the message held for the mailboxes chosen at RCPT, so a
        release never creates a Maildir for an alias. Committed (SQLite synchronous=FULL) before
        the caller says 250, like a Maildir delivery."""
        subject = header_value(header_block(data), "Subject")
        detail = {**detail, "relay_recipients": [str(r.address) for r in txn.relayed]}
        return await asyncio.to_thread(self.add, trace_id=trace_id, sender=str(txn.sender), recipients=txn.mailboxes,
                                       subject=subject, reason=reason, detail=detail, body=data)

    def delete(self, qid: str) -> None:
        """Forget the message: the row stays as a record of the decision, the body is dropped."""
        with self.engine.begin() as conn:
            done = conn.execute(update(quarantine).where(and_(quarantine.c.id == qid, quarantine.c.deleted.is_(False)))
                                .values(deleted=True, body=b"")).rowcount
        if not done:
            raise NotFoundError(f"quarantined message {qid} does not exist")

    # --- reading ---------------------------------------------------------------------------
    def list(self, *, include_released: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; released ones only when asked; deleted ones never."""
        cond = quarantine.c.deleted.is_(False)
        if not include_released:
            cond = and_(cond, quarantine.c.released_at.is_(None))
        limit = max(0, min(limit, MAX_ROW_ID))  # SQLite cannot bind more; PostgreSQL refuses a negative LIMIT
        q = select(*_SUMMARY).where(cond).order_by(quarantine.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_summary(r) for r in conn.execute(q)]

    def get(self, qid: str) -> dict[str, Any]:
        """Summary plus the raw message bytes under "body"."""
        with self.engine.connect() as conn:
            row = conn.execute(select(*_SUMMARY, quarantine.c.body)
                               .where(and_(quarantine.c.id == qid, quarantine.c.deleted.is_(False)))).first()
        if row is None:
            raise NotFoundError(f"quarantined message {qid} does not exist")
        out = _summary(row)
        out["body"] = bytes(row.body)
        return out

    def preview(self, qid: str, body_chars: int = PREVIEW_BODY_CHARS) -> dict[str, Any]:
        """Summary, the headers an admin judges by, and the start of the body as safe text."""
        item = self.get(qid)
        raw = item.pop("body")
        head, body = split_headers(raw)
        item["headers"] = [[_text(f.raw.partition(b":")[0]), _text(f.value)]
                           for f in parse_fields(head) if f.name in PREVIEW_HEADERS]
        item["body_preview"] = _text(body[: body_chars * 4])[:body_chars]
        item["size"] = len(raw)
        return item

    # --- release ---------------------------------------------------------------------------
    async def release_into(self, qid: str, maildir: Maildir, *, actor: str,
                           trace: TraceStore | None = None, deliver: Deliver | None = None) -> list[Path]:
        """Deliver to every recipient's inbox, then mark released and trace it.

        `deliver(sender, recipients, body, trace_id)` routes the message as a delivered one would
        be — forwarding, lists (delivery/internal.py `InternalDelivery.release`) — and returns the
        local results; without it each recipient's own Maildir gets the copy."""
        item = self.get(qid)
        if item["released_at"] is not None:
            raise QuarantineStateError(f"quarantined message {qid} was already released by {item['released_by']}")
        if not item["recipients"]:
            raise QuarantineStateError(f"quarantined message {qid} has no local recipient to release to")
        await asyncio.to_thread(self._check_holds_mailboxes, qid)
        if deliver is not None:
            results = await deliver(item["sender"], item["recipients"], item["body"], item["trace_id"])
        else:
            results = await maildir.deliver_many([(r, item["body"], None) for r in item["recipients"]])
        failed = [r for r in results if r.error is not None]
        if failed:
            raise QuarantineStateError(f"release of {qid} failed for {failed[0].address}: {failed[0].error}")
        now = time.time()
        await asyncio.to_thread(self._mark_released, qid, actor, now)
        if trace is not None and item["trace_id"]:
            trace.add_event(item["trace_id"], "Release", f"released from quarantine by {actor}",
                            status="Delivered", at=now)
        return [r.path for r in results]

    def release(self, qid: str, maildir_root: str | Path, *, actor: str, trace: TraceStore | None = None,
                hostname: str | None = None) -> list[Path]:
        """For a process without a running node (the CLI): its own committer, then the same path."""

        async def run() -> list[Path]:
            committer = GroupCommitter(name="mxgate-release")
            committer.start()
            try:
                return await self.release_into(qid, Maildir(maildir_root, committer, hostname=hostname),
                                               actor=actor, trace=trace)
            finally:
                await committer.aclose()

        return asyncio.run(run())

    def _check_holds_mailboxes(self, qid: str) -> None:
        """Refuse on a running node without the mailbox role: its Maildir is not the mailboxes'."""
        if not self.node:
            return  # the CLI: releases into the home it was pointed at
        with self.engine.connect() as conn:
            rows = {r.name: json.loads(r.roles or "[]") for r in conn.execute(select(nodes.c.name, nodes.c.roles))}
        if self.node in rows and "mailbox" not in rows[self.node]:
            holders = sorted(n for n, roles in rows.items() if "mailbox" in roles)
            raise QuarantineStateError(f"node {self.node} holds no mailboxes; release {qid} on a mailbox node"
                                       f" ({', '.join(holders) or 'none running'})")

    def _mark_released(self, qid: str, actor: str, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(quarantine).where(and_(quarantine.c.id == qid, quarantine.c.released_at.is_(None)))
                         .values(released_at=now, released_by=actor[:128]))


def _summary(row) -> dict[str, Any]:
    d = {c.name: getattr(row, c.name) for c in _SUMMARY}
    d["recipients"] = json.loads(d["recipients"] or "[]")
    try:
        d["detail"] = json.loads(d["detail"] or "{}")
    except ValueError:
        d["detail"] = {}
    return d


def _text(raw: bytes) -> str:
    """Bytes from outside as one-line-safe text for a terminal or a page."""
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() or c in "\r\n\t" else "\ufffd" for c in text)
