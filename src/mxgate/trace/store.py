"""The message trace (mail-flow.md §6): one row per message per recipient, and one per refusal.

Owns: writing trace rows without slowing the SMTP path (a background thread commits batches
every 250 ms, so rows appear well within a second), updating rows with later events (relay,
release), and searching. Must not know SMTP: callers hand over finished `TraceRecord` values.

The trace is an audit log, so nothing is dropped: a batch the database refuses (unreachable,
restarting) is appended to a local journal (trace/journal.py, fsync'd) and replayed, in order,
before anything newer once the database answers again. A flood cannot fill it: identical
refusals of one client address (`record_refusal`: same stage, reason, sender, recipient, in one
session or in new connections within REFUSAL_WINDOW) become one row whose `detail.count` grows.
Rows older than the retention setting are pruned; the row count is a metric.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from mxgate.errors import NotFoundError
from mxgate.store import row_id_in_range
from mxgate.store.schema import trace_events, trace_messages
from mxgate.trace.journal import Journal

log = logging.getLogger("mxgate.trace")

# "Deferred": refused with a 4xx at the SMTP level, so the sender will retry (not a rejection).
STATUSES = ("Delivered", "Failed", "Pending", "Quarantined", "FilteredAsSpam", "Rejected", "Deferred", "Expanded")
EVENTS = ("Receive", "Reject", "Defer", "Deliver", "Send", "Fail", "Expand", "Quarantine", "Release")
# Seconds between commits under load: one transaction and one WAL fsync (synchronous=FULL) per
# interval per process. 0.25 rather than 0.1 (issue 19: bench P1, abtrees --together, user CPU
# B/A 0.967 and 0.969 in two runs of 6 pairs) keeps rows well within §6's second.
FLUSH_INTERVAL = 0.25
MAX_BATCH = 1000
REPLAY_INTERVAL = 1.0  # how often a journal waiting for the database is retried
PRUNE_INTERVAL = 3600.0  # retention pruning runs hourly in the writer thread
SESSIONS_REMEMBERED = 10_000  # refusal kinds coalesced at once (least recently used dropped)
# A new connection repeating a refusal within this many seconds of its row's first refusal adds to
# that row's count; later ones start a new row, so the trace still dates each burst.
REFUSAL_WINDOW = 60.0


def refusal_status(temporary: bool) -> tuple[str, str]:
    """The trace status and event of a refused attempt: a 4xx means the sender retries, so it is
    "Deferred"/"Defer", not "Rejected"/"Reject" (a 5xx)."""
    return ("Deferred", "Defer") if temporary else ("Rejected", "Reject")


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


@dataclass(frozen=True)
class CountUpdate:
    """The row of `trace_id` now stands for `count` identical refusals (detail.count)."""

    trace_id: str
    count: int
    at: float


class TraceStore:
    def __init__(self, engine: Engine, node: str = "", *, journal: str | Path | None = None,
                 retention_days: float = 0.0):
        self.engine = engine
        self.node = node
        self.journal = Journal(journal) if journal else None
        self.retention_days = retention_days  # 0: keep forever
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._pending = 0
        self._lock = threading.Lock()  # the database-or-journal write path, one writer at a time
        self._refusals: OrderedDict[tuple, list] = OrderedDict()  # (session, what) → [trace_id, count]
        self._refusals_lock = threading.Lock()
        self._last_prune = 0.0
        self.rows = 0  # row count at the last prune (the metric; counting on every scrape is costly)
        self.stats = {"journalled": 0, "replayed": 0, "pruned": 0, "coalesced": 0}

    # --- writing --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
            self._thread.start()

    def record(self, rec: TraceRecord) -> None:
        """Queue a row; written within FLUSH_INTERVAL by the writer thread (or now, if not started)."""
        rec.node = rec.node or self.node
        rec.subject = rec.subject[:256]
        self._submit(rec)

    def record_refusals(self, session: str, records: list[TraceRecord]) -> None:
        for rec in records:
            self.record_refusal(session, rec)

    def record_refusal(self, session: str, rec: TraceRecord) -> None:
        """A refusal in an SMTP session: the first of its kind is a row; identical repeats (same
        client address, stage, reason, sender, recipient, role) in the same session, or in new
        sessions within REFUSAL_WINDOW, only raise that row's count (adversarial.md: a flood of
        refused connections must not cost a row each). Rows without a client address coalesce
        per session only."""
        what = (rec.from_ip or f"session:{session}", rec.detail.get("stage", ""), rec.reason, rec.sender,
                rec.recipient, rec.role)
        with self._refusals_lock:
            seen = self._refusals.get(what)
            if seen is not None and rec.created_at - seen[2] > REFUSAL_WINDOW and seen[3] != session:
                seen = None  # a later burst from a new connection: a row of its own
            if seen is None:
                self._refusals[what] = [rec.trace_id, 1, rec.created_at, session]
                self._refusals.move_to_end(what)
                if len(self._refusals) > SESSIONS_REMEMBERED:
                    self._refusals.popitem(last=False)
            else:
                self._refusals.move_to_end(what)
                seen[1] += 1
                update_ = CountUpdate(seen[0], seen[1], rec.created_at)
        if seen is None:
            rec.detail = {**rec.detail, "count": 1}
            self.record(rec)
        else:
            self.stats["coalesced"] += 1
            self._submit(update_)

    def _submit(self, item) -> None:
        if self._thread is None:
            self._write_or_journal([item])
            return
        with self._flushed:
            self._pending += 1
        self._queue.put(item)

    def record_all(self, records: list[TraceRecord]) -> None:
        for rec in records:
            self.record(rec)

    def add_event(self, trace_id: str, event: str, detail: str = "", *, recipient: str | None = None,
                  status: str | None = None, at: float | None = None) -> None:
        self._submit(EventUpdate(trace_id, recipient, event, detail, status, at or time.time()))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is committed or journalled (tests, shutdown);
        False when `timeout` passed first."""
        end = time.monotonic() + timeout
        with self._flushed:
            while self._pending and time.monotonic() < end:
                self._flushed.wait(0.05)
            return not self._pending

    def stop(self) -> None:
        self.flush()
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        last_replay = 0.0
        last_write = 0.0
        carry: list = []  # a batch neither the database nor the journal took (disk full): kept
        while not self._stop.is_set():
            batch, carry = carry, []
            try:
                batch.append(self._queue.get(timeout=FLUSH_INTERVAL))
                # At most one commit per FLUSH_INTERVAL: under load the rows of an interval share
                # one transaction and one fsync instead of a commit each time the writer catches
                # up (a refusal flood made hundreds of commits a second, most of the writer's CPU).
                # A row still appears well within the trace's one second.
                pause = last_write + FLUSH_INTERVAL - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                while len(batch) < MAX_BATCH:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            if batch:
                last_write = now
                try:
                    self._write_or_journal(batch)
                except Exception as exc:  # kept in memory and retried: the mail path goes on
                    log.error("trace rows could be neither written nor journalled, retrying: %r", exc)
                    carry = batch
                    self._stop.wait(REPLAY_INTERVAL)
                    continue
                with self._flushed:
                    self._pending -= len(batch)
                    self._flushed.notify_all()
            elif self.journal is not None and self.journal.pending and now - last_replay >= REPLAY_INTERVAL:
                last_replay = now
                with self._lock:
                    self._replay()
            if now - self._last_prune >= PRUNE_INTERVAL:  # prune (with a retention) and recount
                self._last_prune = now
                try:
                    self.prune()
                except Exception as exc:  # the database is away: the next hour tries again
                    log.warning("trace pruning failed: %r", exc)

    def _write_or_journal(self, batch: list) -> None:
        """Commit the batch, or journal it durably when the database cannot take it now. Rows
        already journalled go first, so events always follow the rows they belong to."""
        with self._lock:
            if self.journal is not None and self.journal.pending and not self._replay():
                self._journal(batch, "the database is still unreachable")
                return
            try:
                self._write(batch)
            except Exception as exc:  # the trace must never take the mail path down
                if self.journal is None:
                    log.error("trace write failed and no journal is configured; %d rows not written: %r",
                              len(batch), exc)
                    raise
                self._journal(batch, repr(exc))

    def _journal(self, batch: list, why: str) -> None:
        assert self.journal is not None
        first = not self.journal.pending
        self.journal.append([_to_journal(item) for item in batch])
        self.stats["journalled"] += len(batch)
        if first:
            log.warning("trace database unavailable (%s): rows journalled in %s until it returns",
                        why[:300], self.journal.path)

    def _replay(self) -> bool:
        """Write the journal to the database, in order, a batch per transaction; True when it
        is empty after. On failure the written part is cut from the journal, the rest kept."""
        assert self.journal is not None
        items = [_from_journal(d) for d in self.journal.read()]
        done = 0
        try:
            while done < len(items):
                self._write(items[done:done + MAX_BATCH])
                done = min(done + MAX_BATCH, len(items))
        except Exception:
            if done:
                self.journal.keep_from(done)
                self.stats["replayed"] += done
            return False
        self.journal.clear()
        self.stats["replayed"] += len(items)
        if items:
            log.warning("trace database back: %d journalled rows and events replayed", len(items))
        return True

    def _write(self, batch: list) -> None:
        # One INSERT..RETURNING for every new row of the batch and one executemany for their
        # events: per-statement overhead, not SQLite, was a fifth of the mailbox's CPU per
        # message when each row took three statements. On SQLite every statement of the batch
        # goes straight through the driver (issue 19: the gateway's relay events through Core
        # were most of its writer's CPU); PostgreSQL keeps the Core statements, the same SQL.
        records = [item for item in batch if isinstance(item, TraceRecord)]
        # A flood of identical refusals is many count updates of one row: write the last.
        counts = {item.trace_id: item for item in batch if isinstance(item, CountUpdate)}
        later = [item for item in batch if isinstance(item, EventUpdate)]
        with self.engine.begin() as conn:
            sql = _DriverSql(conn) if conn.dialect.name == "sqlite" else _CoreSql(conn)
            try:
                if records:
                    self.rows += sql.insert_records(records)
                if counts:
                    sql.set_counts(_count_updates(sql.rows_of(counts, "detail"), counts))
                if later:
                    sql.add_events(*_event_writes(sql.rows_of(dict.fromkeys(i.trace_id for i in later), "recipient"),
                                                  later))
            finally:
                sql.close()

    # --- retention ------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Delete rows (and their events) older than the retention; returns how many rows went."""
        removed = 0
        if self.retention_days > 0:
            cutoff = (now or time.time()) - self.retention_days * 86400.0
            old = select(trace_messages.c.id).where(trace_messages.c.updated_at < cutoff)
            with self.engine.begin() as conn:
                conn.execute(delete(trace_events).where(trace_events.c.trace_row.in_(old)))
                removed = conn.execute(delete(trace_messages).where(trace_messages.c.updated_at < cutoff)).rowcount
            self.stats["pruned"] += removed
            if removed:
                log.info("trace retention (%g days): %d rows pruned", self.retention_days, removed)
        self.count_rows()
        return removed

    def count_rows(self) -> int:
        with self.engine.connect() as conn:
            self.rows = int(conn.execute(select(func.count()).select_from(trace_messages)).scalar() or 0)
        return self.rows

    # --- reading --------------------------------------------------------------------------
    def search(self, *, since: float | None = None, until: float | None = None, sender: str | None = None,
               recipient: str | None = None, status: str | None = None, ip: str | None = None,
               message_id: str | None = None, trace_id: str | None = None, limit: int = 100,
               offset: int = 0) -> list[dict]:
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
        q = (select(trace_messages).where(*conds).order_by(t.created_at.desc(), t.id.desc()).limit(limit)
             .offset(max(0, offset)))
        with self.engine.connect() as conn:
            return [_row_dict(r) for r in conn.execute(q)]

    def show(self, row_id: int) -> dict:
        if not row_id_in_range(row_id):
            raise NotFoundError(f"trace row {row_id} does not exist")
        with self.engine.connect() as conn:
            row = conn.execute(select(trace_messages).where(trace_messages.c.id == row_id)).first()
            if row is None:
                raise NotFoundError(f"trace row {row_id} does not exist")
            events = conn.execute(select(trace_events).where(trace_events.c.trace_row == row_id)
                                  .order_by(trace_events.c.at, trace_events.c.id)).all()
        out = _row_dict(row)
        out["events"] = [{"at": e.at, "event": e.event, "detail": e.detail} for e in events]
        return out


def _event_writes(rows, later: list) -> tuple[list, list, list]:
    """Later events (relayed, delivered...) in the order they happened, on the rows of their
    trace id (their rows exist by now): the events to insert as (row, at, event, detail), and each
    row's last updated_at, as (at, status, row) where an event set a status, else (at, row).
    Three statements for the whole batch, not three per event: on the gateway each message's
    relay event made a SELECT, an INSERT and an UPDATE of its own."""
    by_trace: dict[str, list[tuple[int, str]]] = {}
    for row_id, trace_id, recipient in rows:
        by_trace.setdefault(trace_id, []).append((row_id, recipient))
    events: list[tuple] = []
    final: dict[int, list] = {}  # row → [its last updated_at, the last status an event set, or None]
    for item in later:
        for row_id, recipient in by_trace.get(item.trace_id, ()):
            if item.recipient and recipient != item.recipient:
                continue
            events.append((row_id, item.at, item.event, item.detail))
            values = final.setdefault(row_id, [0.0, None])
            values[0] = item.at
            if item.status:
                values[1] = item.status
    with_status = [(at, status, r) for r, (at, status) in final.items() if status]
    without = [(at, r) for r, (at, status) in final.items() if not status]
    return events, with_status, without


def _count_updates(rows, counts: dict[str, CountUpdate]) -> list[tuple]:
    """Each row's newest count as (detail, updated_at, row): the rows' JSON detail with `count`
    raised, skipped where a later count was already written (replays and batches may overlap)."""
    updates: list[tuple] = []
    for row_id, trace_id, detail in rows:
        item = counts[trace_id]
        try:
            d = json.loads(detail or "{}")
        except ValueError:
            d = {}
        if d.get("count", 0) >= item.count:
            continue
        d["count"] = item.count
        updates.append((json.dumps(d, default=str), item.at, row_id))
    return updates


class _CoreSql:
    """The writer's statements through SQLAlchemy Core (PostgreSQL)."""

    def __init__(self, conn):
        self.conn = conn

    def insert_records(self, records: list[TraceRecord]) -> int:
        return _insert_core(self.conn, records)

    def rows_of(self, trace_ids, column: str):
        """(row id, trace id, `column`) of every row of these trace ids, in row order, a SELECT
        per 500 ids (under every backend's bound-parameter limit)."""
        trace_ids = list(trace_ids)
        out = []
        for i in range(0, len(trace_ids), 500):
            out += self.conn.execute(select(trace_messages.c.id, trace_messages.c.trace_id, trace_messages.c[column])
                                     .where(trace_messages.c.trace_id.in_(trace_ids[i:i + 500]))
                                     .order_by(trace_messages.c.id)).all()
        return out

    def add_events(self, events: list, with_status: list, without: list) -> None:
        t = trace_messages
        if events:
            self.conn.execute(insert(trace_events), [{"trace_row": r, "at": at, "event": ev, "detail": det}
                                                     for r, at, ev, det in events])
        if with_status:
            self.conn.execute(update(t).where(t.c.id == bindparam("rid"))
                              .values(updated_at=bindparam("u_at"), status=bindparam("u_status")),
                              [{"u_at": at, "u_status": st, "rid": r} for at, st, r in with_status])
        if without:
            self.conn.execute(update(t).where(t.c.id == bindparam("rid")).values(updated_at=bindparam("u_at")),
                              [{"u_at": at, "rid": r} for at, r in without])

    def set_counts(self, updates: list) -> None:
        if updates:
            self.conn.execute(update(trace_messages).where(trace_messages.c.id == bindparam("rid"))
                              .values(detail=bindparam("u_detail"), updated_at=bindparam("u_at")),
                              [{"u_detail": d, "u_at": at, "rid": r} for d, at, r in updates])

    def close(self) -> None:
        pass


class _DriverSql:
    """The same statements on SQLite through the driver, in the engine's transaction: ~10 µs a
    statement against ~0.1 ms through Core's parameter processing (issue 19)."""

    def __init__(self, conn):
        self.cursor = conn.connection.driver_connection.cursor()

    def insert_records(self, records: list[TraceRecord]) -> int:
        return _insert_sqlite(self.cursor, records)

    def rows_of(self, trace_ids, column: str):
        select_ = f"SELECT id, trace_id, {trace_messages.c[column].name} FROM {trace_messages.name} WHERE trace_id IN "
        trace_ids = list(trace_ids)
        out = []
        for i in range(0, len(trace_ids), 500):
            part = trace_ids[i:i + 500]
            out += self.cursor.execute(f"{select_}({', '.join('?' * len(part))}) ORDER BY id", part).fetchall()
        return out

    def add_events(self, events: list, with_status: list, without: list) -> None:
        if events:
            self.cursor.executemany(_SQLITE_INSERT_EVENT, events)
        if with_status:
            self.cursor.executemany(f"UPDATE {trace_messages.name} SET updated_at=?, status=? WHERE id = ?",
                                    with_status)
        if without:
            self.cursor.executemany(f"UPDATE {trace_messages.name} SET updated_at=? WHERE id = ?", without)

    def set_counts(self, updates: list) -> None:
        if updates:
            self.cursor.executemany(f"UPDATE {trace_messages.name} SET detail=?, updated_at=? WHERE id = ?", updates)

    def close(self) -> None:
        self.cursor.close()


_ROW_FIELDS = tuple(f for f in TraceRecord.__dataclass_fields__ if f != "events")


_INSERT_COLUMNS = (*_ROW_FIELDS, "updated_at")
_ROW_GETTER = attrgetter(*_ROW_FIELDS)
_DETAIL_AT = _ROW_FIELDS.index("detail")
_SQLITE_INSERT_ROW = (f"INSERT INTO {trace_messages.name} ({', '.join(_INSERT_COLUMNS)}) "
                      f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})")
_SQLITE_INSERT_EVENT = f"INSERT INTO {trace_events.name} (trace_row, at, event, detail) VALUES (?, ?, ?, ?)"


def _insert_core(conn, records: list[TraceRecord]) -> int:
    """The batch's rows and their events through SQLAlchemy Core (PostgreSQL)."""
    rows = [_row_values(rec) for rec in records]
    # Not sort_by_parameter_order: on SQLite that makes SQLAlchemy send one INSERT per
    # row (RETURNING order is not guaranteed there), 60% of the writer's CPU on a
    # refusal flood. Rows come back in any order and are matched by (trace id,
    # recipient); identical keys take their ids in insertion order.
    returned = conn.execute(insert(trace_messages).returning(
        trace_messages.c.id, trace_messages.c.trace_id, trace_messages.c.recipient), rows).all()
    by_key: dict[tuple[str, str], list[int]] = {}
    for row_id, trace_id, recipient in sorted(returned):
        by_key.setdefault((trace_id, recipient), []).append(row_id)
    ids = [by_key[(row["trace_id"], row["recipient"])].pop(0) for row in rows]
    events = [{"trace_row": row_id, "at": at, "event": ev, "detail": det}
              for row_id, rec in zip(ids, records) for at, ev, det in rec.events]
    if events:
        conn.execute(insert(trace_events), events)
    return len(ids)


def _insert_sqlite(cursor, records: list[TraceRecord]) -> int:
    """The batch's rows and their events on SQLite, straight through the driver in the engine's
    transaction: one prepared INSERT per row (its id from lastrowid) and one executemany for the
    events. The same rows and events as `_insert_core`, whose per-row parameter processing in
    SQLAlchemy cost the trace writer ~60 µs per message (issue 19, bench P1)."""
    events = []
    for rec in records:
        values = [*_ROW_GETTER(rec), rec.created_at]  # updated_at
        values[_DETAIL_AT] = json.dumps(rec.detail, default=str)
        cursor.execute(_SQLITE_INSERT_ROW, values)
        row_id = cursor.lastrowid
        events.extend((row_id, at, ev, det) for at, ev, det in rec.events)
    if events:
        cursor.executemany(_SQLITE_INSERT_EVENT, events)
    return len(records)


def _row_values(rec: TraceRecord) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, and these are plain strings and numbers.
    values = {name: getattr(rec, name) for name in _ROW_FIELDS}
    values["detail"] = json.dumps(rec.detail, default=str)
    values["updated_at"] = rec.created_at
    return values


def _to_journal(item) -> dict[str, Any]:
    if isinstance(item, TraceRecord):
        d = {name: getattr(item, name) for name in TraceRecord.__dataclass_fields__}
        d["detail"] = json.loads(json.dumps(item.detail, default=str))
        return {"kind": "record", **d}
    if isinstance(item, CountUpdate):
        return {"kind": "count", "trace_id": item.trace_id, "count": item.count, "at": item.at}
    return {"kind": "event", "trace_id": item.trace_id, "recipient": item.recipient, "event": item.event,
            "detail": item.detail, "status": item.status, "at": item.at}


def _from_journal(d: dict[str, Any]):
    kind = d.pop("kind")
    if kind == "record":
        d["events"] = [tuple(e) for e in d.get("events", [])]
        return TraceRecord(**d)
    if kind == "count":
        return CountUpdate(**d)
    return EventUpdate(**d)


def _row_dict(row) -> dict:
    d = dict(row._mapping)
    try:
        d["detail"] = json.loads(d.get("detail") or "{}")
    except ValueError:
        d["detail"] = {}
    return d
