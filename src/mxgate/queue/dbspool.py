"""The gateway queue in the shared database (`[gateway] queue = "database"`), for several gateways.

Owns: the `gateway_queue` table (created by migration 0002), the same interface as
queue/spool.py's Spool protocol as queue/runner.py and server/gateway.py use it (enqueue, due, claim,
open_message, settle, hold/release, remove, get/list/count), and the lease rules below.
Must not know: SMTP, relaying, retry arithmetic, DSN contents — exactly like DiskSpool.

Commit rule (RFC 5321 §6.1): `enqueue` returns once the INSERT has committed, so the gateway's
250 never precedes the commit. Leases: `claim` takes a due row with SELECT ... FOR UPDATE SKIP
LOCKED (two nodes never wait on each other) and marks it `active`, leased to this node until
now + `lease`; while the attempt runs a renewer extends every lease this node holds each
lease/3 seconds. A row whose lease has expired is due again for any node, so when a gateway
dies (kill -9, power) the others deliver its mail after at most `lease` seconds. Every change
after a claim is conditional on (revision, lease_owner): a node that lost its lease (paused
longer than `lease`) cannot overwrite the new holder's outcome. Within these rules a message is
relayed once; a node stalled past its lease may relay it a second time (a duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, Text, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from mxgate.durable import private_dir
from mxgate.queue.spool import DUE_QUEUES, QueueEntry, RcptState, Recipient, RecoveryReport, StaleEntryError, new_queue_id

log = logging.getLogger("mxgate.queue.db")

DEFAULT_LEASE = 60.0  # seconds; [gateway] queue_lease
DUE_BATCH = 200  # rows one scan considers; the runner's concurrency limit applies on top

# Defined here rather than in store/schema.py: only this module reads or writes it.
gateway_queue = Table(
    "gateway_queue", MetaData(),
    Column("queue_id", String(20), primary_key=True),
    Column("queue", String(16), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("recipients", Text, nullable=False),
    Column("arrival", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("meta", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("node", String(64), nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
)
_HEAD = [c for c in gateway_queue.c if c.name != "body"]  # listing never loads message bytes
q = gateway_queue.c


def _worker_index(node: str, owner: str) -> int:
    """N of a worker's lease owner "<node>-w<N>"; -1 for any other name."""
    rest = owner[len(node):] if owner.startswith(node) else ""
    return int(rest[2:]) if rest.startswith("-w") and rest[2:].isdigit() else -1


class DbSpool:
    """Queue rows shared by every gateway node on the database; `node` names this one's leases."""

    blocking_reads = True  # due/get/count query the database: the runner calls them off the loop

    def __init__(self, engine: Engine, node: str, root: Path, *, lease: float = DEFAULT_LEASE,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.node = node
        self.clock = clock  # lease times; injectable so tests need not sleep past a lease
        self.root = root  # local directory: spill files, disk-space checks, queue CLI requests
        self.lease = lease
        self.recovery = RecoveryReport(0, (), (), ())
        self._renewer: asyncio.Task | None = None

    @classmethod
    def open(cls, engine: Engine, node: str, root: Path, *, lease: float = DEFAULT_LEASE,
             clock: Callable[[], float] = time.time, adopt_workers_from: int | None = None) -> "DbSpool":
        """Blocking: take back this node's own leases left by a crash (they are ours to retry now).
        With `adopt_workers_from` N (the node's first process), also those of its worker processes
        "<node>-w<i>" for i >= N, which the node no longer runs."""
        spool = cls(engine, node, root, lease=lease, clock=clock)
        private_dir(root)
        with engine.begin() as conn:
            owners = [node]
            if adopt_workers_from is not None:
                held = conn.execute(select(q.lease_owner).distinct().where(q.queue == "active")).scalars().all()
                owners += [o for o in held if _worker_index(node, o) >= adopt_workers_from]
            rows = conn.execute(select(q.queue_id).where(and_(q.queue == "active", q.lease_owner.in_(owners)))).scalars().all()
            if rows:
                conn.execute(update(gateway_queue).where(q.queue_id.in_(rows))
                             .values(queue="deferred", lease_owner=None, lease_until=None, revision=q.revision + 1))
            loaded = conn.execute(select(func.count()).select_from(gateway_queue)).scalar() or 0
        spool.recovery = RecoveryReport(loaded, (), (), tuple(rows))
        return spool

    # --- lifetime: lease renewal while this node relays ------------------------------------
    def start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def stop(self) -> None:
        """After the runner stopped: hand this node's leases back so others need not wait them out."""
        if self._renewer:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        try:
            await asyncio.to_thread(self._give_back)
        except Exception as exc:  # the leases then lapse on their own
            log.warning("could not hand back queue leases: %s", exc)

    def _give_back(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(gateway_queue).where(and_(q.queue == "active", q.lease_owner == self.node))
                         .values(queue="deferred", next_attempt=self.clock(), lease_owner=None, lease_until=None,
                                 revision=q.revision + 1))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await asyncio.to_thread(self._renew)
            except Exception as exc:  # database away: leases may lapse, others may then retry them
                log.warning("queue lease renewal failed: %s", exc)

    def _renew(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(gateway_queue).where(and_(q.queue == "active", q.lease_owner == self.node))
                         .values(lease_until=self.clock() + self.lease))

    # --- reading ---------------------------------------------------------------------------
    def get(self, queue_id: str) -> QueueEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_HEAD).where(q.queue_id == queue_id)).first()
        return _entry(row) if row else None

    def list(self, queue: str | None = None) -> list[QueueEntry]:
        stmt = select(*_HEAD).where(q.queue != "corrupt").order_by(q.arrival, q.queue_id)
        if queue is not None:
            stmt = select(*_HEAD).where(q.queue == queue).order_by(q.arrival, q.queue_id)
        with self.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def count(self, queue: str | None = None) -> int:
        cond = q.queue != "corrupt" if queue is None else q.queue == queue
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(gateway_queue).where(cond)).scalar() or 0

    def due(self, now: float) -> list[QueueEntry]:
        """Rows to try now: due incoming/deferred ones, and active ones whose lease has lapsed."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_HEAD).where(_due_condition(now, self.clock()))
                                .order_by(q.next_attempt, q.arrival).limit(DUE_BATCH)).all()
        return [_entry(r) for r in rows]

    async def open_message(self, entry: QueueEntry) -> bytes:
        def read() -> bytes:
            with self.engine.connect() as conn:
                body = conn.execute(select(q.body).where(q.queue_id == entry.queue_id)).scalar()
            if body is None:
                raise StaleEntryError(f"{entry.queue_id} is gone")
            return bytes(body)

        return await asyncio.to_thread(read)

    # --- writing ---------------------------------------------------------------------------
    async def enqueue(self, sender: str, recipients: Iterable[str], data,
                      meta: Mapping[str, Any] | None = None, *, now: float | None = None) -> QueueEntry:
        """Insert and commit; only then may the caller answer 250. ``data``: bytes or a MessageSource."""
        if hasattr(data, "chunks"):  # the database stores the body as one value
            data = await asyncio.to_thread(data.read_all)
        now = self.clock() if now is None else now
        rcpts = tuple(Recipient(a) for a in recipients)
        if not rcpts:
            raise ValueError("a queue entry needs at least one recipient")
        entry = QueueEntry(new_queue_id(now), "incoming", sender, rcpts, now, 0, now, None,
                           MappingProxyType(dict(meta or {})), len(data), 1, 0)
        values = {**_row_values(entry), "body": data, "node": self.node, "lease_owner": None, "lease_until": None}

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(insert(gateway_queue).values(**values))

        await asyncio.to_thread(write)
        return entry

    async def claim(self, entry: QueueEntry) -> QueueEntry:
        """Lease a due row to this node; StaleEntryError if it changed or another node has it."""

        def take() -> QueueEntry:
            now = self.clock()
            with self.engine.begin() as conn:
                row = conn.execute(select(*_HEAD).where(and_(q.queue_id == entry.queue_id, q.revision == entry.revision,
                                                             _due_condition(float("inf"), now)))
                                   .with_for_update(skip_locked=True)).first()
                if row is None:
                    raise StaleEntryError(f"{entry.queue_id} changed or is leased by another node")
                # Conditional on the revision read, like every later change: on SQLite the SELECT
                # above runs before the write transaction begins (FOR UPDATE does not exist there),
                # so two processes can both read the due row; only the first UPDATE matches.
                taken = conn.execute(update(gateway_queue).where(and_(
                    q.queue_id == entry.queue_id, q.revision == row.revision, _due_condition(float("inf"), now))).values(
                    queue="active", lease_owner=self.node, lease_until=now + self.lease, revision=row.revision + 1))
                if taken.rowcount != 1:
                    raise StaleEntryError(f"{entry.queue_id} was just leased by another node")
            return _entry(row, queue="active", revision=row.revision + 1)

        return await asyncio.to_thread(take)

    async def settle(self, entry: QueueEntry, outcomes: Iterable[Recipient], *, next_attempt: float | None = None,
                     error: str | None = None) -> QueueEntry | None:
        """One attempt's per-recipient outcomes, as DiskSpool.settle; the row goes when none is pending."""
        outcomes = {o.address: o for o in outcomes}
        unknown = set(outcomes) - set(entry.pending)
        if unknown:
            raise ValueError(f"not pending recipients of {entry.queue_id}: {sorted(unknown)}")
        rcpts = tuple(outcomes.get(r.address, r) if r.state is RcptState.PENDING else r for r in entry.recipients)
        deferred = [o for o in outcomes.values() if o.state is RcptState.PENDING]
        if deferred and next_attempt is None:
            raise ValueError("deferring recipients needs next_attempt")
        if not any(r.state is RcptState.PENDING for r in rcpts):
            await self._change(entry, None)
            return None
        new = dataclasses.replace(entry, recipients=rcpts, revision=entry.revision + 1)
        if deferred:
            new = dataclasses.replace(new, queue="hold" if entry.queue == "hold" else "deferred",
                                      attempts=entry.attempts + 1, next_attempt=next_attempt,
                                      last_error=error or deferred[0].error)
        await self._change(entry, new)
        return new

    async def mark_corrupt(self, entry: QueueEntry) -> None:
        await self._move(entry, "corrupt")

    async def hold(self, entry: QueueEntry) -> QueueEntry:
        return await self._move(entry, "hold")

    async def release(self, entry: QueueEntry) -> QueueEntry:
        if entry.queue != "hold":
            raise StaleEntryError(f"{entry.queue_id} is not on hold")
        return await self._move(entry, "deferred")

    async def remove(self, entry: QueueEntry) -> None:
        await self._change(entry, None)

    async def retry_now(self, entry: QueueEntry, now: float) -> QueueEntry:
        """An admin's retry: due now, released from hold (any node's CLI may do this)."""
        queue = "deferred" if entry.queue in ("hold", "deferred") else entry.queue
        new = dataclasses.replace(entry, queue=queue, next_attempt=now, revision=entry.revision + 1)
        await self._change(entry, new)
        return new

    # --- internals -------------------------------------------------------------------------
    async def _move(self, entry: QueueEntry, queue: str) -> QueueEntry:
        new = dataclasses.replace(entry, queue=queue, revision=entry.revision + 1)
        await self._change(entry, new)
        return new

    async def _change(self, old: QueueEntry, new: QueueEntry | None) -> None:
        """Replace (or delete) the row only if it is still the revision we hold, and our lease."""

        def run() -> None:
            cond = and_(q.queue_id == old.queue_id, q.revision == old.revision)
            if old.queue == "active":
                cond = and_(cond, q.lease_owner == self.node)
            with self.engine.begin() as conn:
                if new is None:
                    done = conn.execute(delete(gateway_queue).where(cond)).rowcount
                else:
                    values = {**_row_values(new), "lease_owner": None, "lease_until": None}
                    done = conn.execute(update(gateway_queue).where(cond).values(**values)).rowcount
            if not done:
                raise StaleEntryError(f"{old.queue_id} changed since it was read (lease lost or edited)")

        await asyncio.to_thread(run)


def _due_condition(now: float, clock: float):
    waiting = and_(q.queue.in_(DUE_QUEUES), q.next_attempt <= now)
    lapsed = and_(q.queue == "active", q.lease_until < clock)  # its node died or stalled
    return or_(waiting, lapsed)


def _row_values(e: QueueEntry) -> dict[str, Any]:
    rcpts = [{"address": r.address, "state": RcptState(r.state).value, "status": r.status, "error": r.error,
              "remote_mta": r.remote_mta} for r in e.recipients]
    return {"queue_id": e.queue_id, "queue": e.queue, "sender": e.sender, "recipients": json.dumps(rcpts),
            "arrival": e.arrival, "attempts": e.attempts, "next_attempt": e.next_attempt, "last_error": e.last_error,
            "meta": json.dumps(dict(e.meta)), "size": e.size, "revision": e.revision}


def _entry(row, **changes: Any) -> QueueEntry:
    rcpts = tuple(Recipient(r["address"], RcptState(r["state"]), r.get("status"), r.get("error"), r.get("remote_mta"))
                  for r in json.loads(row.recipients))
    fields = {"queue_id": row.queue_id, "queue": row.queue, "sender": row.sender, "recipients": rcpts,
              "arrival": row.arrival, "attempts": row.attempts, "next_attempt": row.next_attempt,
              "last_error": row.last_error, "meta": MappingProxyType(json.loads(row.meta)), "size": row.size,
              "revision": row.revision, "body_offset": 0}
    fields.update(changes)
    return QueueEntry(**fields)
