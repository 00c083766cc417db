"""The message trace (mail-flow.md §6): one row per message per recipient, and one per refusal.

Owns: writing trace rows without slowing the SMTP path (a background thread commits batches
every 100 ms, so rows appear well within a second), updating rows with later events (relay,
release), and searching. Must not know SMTP: callers hand over finished `TraceRecord` values.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Engine

from mxgate.errors import NotFoundError
from mxgate.store.schema import trace_events, trace_messages

log = logging.getLogger("mxgate.trace")

STATUSES = ("Delivered", "Failed", "Pending", "Quarantined", "FilteredAsSpam", "Rejected", "Expanded")
EVENTS = ("Receive", "Reject", "Defer", "Deliver", "Send", "Fail", "Expand", "Quarantine", "Release")
FLUSH_INTERVAL = 0.1
MAX_BATCH = 1000


@dataclass
class TraceRecord:
    trace_id: str
    status: str
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    message_id: str = ""
    size: int = 0
    from_ip: str = ""
    original_ip: str = ""
    connector: str = ""
    policy_version: int = 0
    reason: str = ""
    role: str = ""
    direction: str = "inbound"
    node: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class EventUpdate:
    trace_id: str
    recipient: str | None  # None: every row of the trace id
    event: str
    detail: str
    status: str | None
    at: float


class TraceStore:
    def __init__(self, engine: Engine, node: str = ""):
        self.engine = engine
        self.node = node
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._pending = 0

    # --- writing --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
            self._thread.start()

    def record(self, rec: TraceRecord) -> None:
        """Queue a row; written within FLUSH_INTERVAL by the writer thread (or now, if not started)."""
        rec.node = rec.node or self.node
        rec.subject = rec.subject[:256]
        if self._thread is None:
            self._write([rec])
            return
        with self._flushed:
            self._pending += 1
        self._queue.put(rec)

    def record_all(self, records: list[TraceRecord]) -> None:
        for rec in records:
            self.record(rec)

    def add_event(self, trace_id: str, event: str, detail: str = "", *, recipient: str | None = None,
                  status: str | None = None, at: float | None = None) -> None:
        upd = EventUpdate(trace_id, recipient, event, detail, status, at or time.time())
        if self._thread is None:
            self._write([upd])
            return
        with self._flushed:
            self._pending += 1
        self._queue.put(upd)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is committed (tests, shutdown)."""
        end = time.monotonic() + timeout
        with self._flushed:
            while self._pending and time.monotonic() < end:
                self._flushed.wait(0.05)

    def stop(self) -> None:
        self.flush()
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = []
            try:
                batch.append(self._queue.get(timeout=FLUSH_INTERVAL))
                while len(batch) < MAX_BATCH:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            if not batch:
                continue
            try:
                self._write(batch)
            except Exception:  # the trace must never take the mail path down
                log.exception("trace write failed; %d rows lost from the trace", len(batch))
            with self._flushed:
                self._pending -= len(batch)
                self._flushed.notify_all()

    def _write(self, batch: list) -> None:
        # One INSERT..RETURNING for every new row of the batch and one executemany for their
        # events: per-statement overhead, not SQLite, was a fifth of the mailbox's CPU per
        # message when each row took three statements.
        records = [item for item in batch if isinstance(item, TraceRecord)]
        with self.engine.begin() as conn:
            if records:
                rows = [_row_values(rec) for rec in records]
                ids = conn.execute(insert(trace_messages).returning(trace_messages.c.id, sort_by_parameter_order=True),
                                   rows).scalars().all()
                events = [{"trace_row": row_id, "at": at, "event": ev, "detail": det}
                          for row_id, rec in zip(ids, records) for at, ev, det in rec.events]
                if events:
                    conn.execute(insert(trace_events), events)
            for item in batch:  # later events, in the order they happened (their rows exist by now)
                if isinstance(item, TraceRecord):
                    continue
                cond = trace_messages.c.trace_id == item.trace_id
                if item.recipient:
                    cond = and_(cond, trace_messages.c.recipient == item.recipient)
                ids = conn.execute(select(trace_messages.c.id).where(cond)).scalars().all()
                for row_id in ids:
                    conn.execute(insert(trace_events).values(trace_row=row_id, at=item.at, event=item.event, detail=item.detail))
                if ids:
                    values = {"updated_at": item.at}
                    if item.status:
                        values["status"] = item.status
                    conn.execute(update(trace_messages).where(trace_messages.c.id.in_(ids)).values(**values))

    # --- reading --------------------------------------------------------------------------
    def search(self, *, since: float | None = None, until: float | None = None, sender: str | None = None,
               recipient: str | None = None, status: str | None = None, ip: str | None = None,
               message_id: str | None = None, trace_id: str | None = None, limit: int = 100) -> list[dict]:
        t = trace_messages.c
        conds = []
        if since is not None:
            conds.append(t.created_at >= since)
        if until is not None:
            conds.append(t.created_at <= until)
        if sender:
            conds.append(t.sender.ilike(f"%{sender}%"))
        if recipient:
            conds.append(t.recipient.ilike(f"%{recipient}%"))
        if status:
            conds.append(t.status == status)
        if ip:
            conds.append(or_(t.from_ip == ip, t.original_ip == ip))
        if message_id:
            conds.append(t.message_id == message_id.strip())
        if trace_id:
            conds.append(t.trace_id == trace_id)
        q = select(trace_messages).where(*conds).order_by(t.created_at.desc(), t.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_row_dict(r) for r in conn.execute(q)]

    def show(self, row_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(trace_messages).where(trace_messages.c.id == row_id)).first()
            if row is None:
                raise NotFoundError(f"trace row {row_id} does not exist")
            events = conn.execute(select(trace_events).where(trace_events.c.trace_row == row_id)
                                  .order_by(trace_events.c.at, trace_events.c.id)).all()
        out = _row_dict(row)
        out["events"] = [{"at": e.at, "event": e.event, "detail": e.detail} for e in events]
        return out


_ROW_FIELDS = tuple(f for f in TraceRecord.__dataclass_fields__ if f != "events")


def _row_values(rec: TraceRecord) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, and these are plain strings and numbers.
    values = {name: getattr(rec, name) for name in _ROW_FIELDS}
    values["detail"] = json.dumps(rec.detail, default=str)
    values["updated_at"] = rec.created_at
    return values


def _row_dict(row) -> dict:
    d = dict(row._mapping)
    try:
        d["detail"] = json.loads(d.get("detail") or "{}")
    except ValueError:
        d["detail"] = {}
    return d
