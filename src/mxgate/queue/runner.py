"""The gateway's delivery loop: takes due entries from the Spool, relays them, records the outcome.

Owns: scanning for due entries (and waking early on `kick()` / `flush()`), the concurrency limit,
claiming an entry into `active/` while it is tried, turning per-recipient outcomes into spool
changes (delivered, deferred with RetryPolicy backoff, failed), giving up at expiry, and the
DSN (RFC 3464) for failed recipients — handed to `bounce` (by default enqueued here as just
another message from `<>`; the gateway sends Internet senders' DSNs through its outbound MX
queue) *before* the original is settled, so a crash can duplicate a bounce but never lose one.
Never bounces `<>`. A DSN that cannot be built leaves the entry in `hold/`, logged, for an admin.
Must not know: SMTP details (queue/relay.py), backoff arithmetic (queue/scheduler.py), DSN
contents (queue/dsn.py), or why a message was accepted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable, Mapping

from mxgate import metrics
from mxgate.queue.dsn import DSN_ENVELOPE_SENDER, FailedRecipient, build_dsn, original_header_block
from mxgate.queue.relay import RelayResult, RelaySettings, relay
from mxgate.queue.scheduler import HostHealth, RetryPolicy, next_attempt
from mxgate.queue.spool import DUE_QUEUES, CorruptEntryError, PartialEntryError, QueueEntry, RcptState, Recipient, Spool, StaleEntryError
from mxgate.wording import count

log = logging.getLogger("mxgate.queue")

EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired
REQUESTS_DIR = "requests"  # the queue CLI's requests to a running gateway


class Runner:
    def __init__(self, spool: Spool, settings: Callable[[], RelaySettings], retry: RetryPolicy, *,
                 hostname: str, concurrency: int = 20, scan_interval: float = 1.0,
                 health: HostHealth | None = None, on_event: Callable[..., None] | None = None,
                 bounce: Callable[[str, bytes, Mapping[str, str]], Awaitable[str]] | None = None):
        self.spool = spool
        self.settings = settings  # called per attempt, so a certificate or host change applies
        self.retry = retry
        self.hostname = hostname
        self.scan_interval = scan_interval
        self.health = health or HostHealth()
        self.on_event = on_event or (lambda *a, **k: None)  # (entry, event, detail, rcpt=, status=)
        # (original sender, DSN bytes, meta) → queue id, durable before it returns
        self.bounce = bounce or self._bounce_here
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._main: asyncio.Task | None = None
        self._flush_all = False
        self._retry_now: set[str] = set()
        self.stats = {"delivered": 0, "deferred": 0, "failed": 0, "dsn": 0}

    # --- lifetime -------------------------------------------------------------------------
    @property
    def spool_name(self) -> str:
        """gateway, gateway-outbound, outbound or outbound-w<N>: the spool's directory name."""
        return self.spool.root.name

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._loop())
        metrics.watch_spool(self.spool_name, self.spool)  # depth and oldest age at every scrape

    async def stop(self) -> None:
        metrics.unwatch_spool(self.spool_name)
        if self._main:
            self._main.cancel()
        for t in list(self._tasks):
            t.cancel()  # an entry in active/ goes back to deferred/ on the next start
        await asyncio.gather(*([self._main] if self._main else []), *self._tasks, return_exceptions=True)
        from mxgate.queue.relay import POOL

        POOL.close_for_this_loop()

    def kick(self) -> None:
        """A new entry is due now: scan without waiting for the interval."""
        self._wake.set()

    def flush(self) -> None:
        """Try every deferred entry now, whatever its next_attempt (`mxgate queue flush`)."""
        self._flush_all = True
        self.health = HostHealth(self.health.base, self.health.cap)
        self._wake.set()

    async def take_slot(self) -> bool:
        """One of the `concurrency` delivery slots, now or not at all, for a delivery made outside
        the queue (cut-through, server/cutthrough.py): the downstream never sees more of our
        sessions than this limit, and the session pool keeps that many idle. Give it back with
        `release_slot()`."""
        if self._slots.locked():
            return False
        return await self._slots.acquire()  # free: returns at once

    def release_slot(self) -> None:
        self._slots.release()

    def count_relayed(self, states) -> None:
        """Per-recipient outcomes ("delivered", "deferred", "failed") of a delivery made outside
        the queue (cut-through), in the same counters as the queue's."""
        for state in states:
            self.stats[state] += 1

    def describe(self) -> str:
        return f"gateway queue: {count(self.spool.count(), 'entry')}, relaying to {' '.join(self.settings().hosts) or '(none)'}"

    # --- loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._scan()
            except Exception:  # one bad scan must not stop delivery for good
                log.exception("queue scan failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.scan_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _scan(self) -> None:
        await self._apply_requests()
        now = float("inf") if self._flush_all else time.time()
        self._flush_all = False
        busy = {t.get_name() for t in self._tasks}
        wanted = [e for q in self._retry_now if (e := self.spool.get(q)) is not None and e.queue in DUE_QUEUES]
        self._retry_now.clear()
        # The database spool (queue/dbspool.py) answers from PostgreSQL: keep that off the loop.
        due = await asyncio.to_thread(self.spool.due, now) if self.spool.blocking_reads else self.spool.due(now)
        for entry in wanted + [e for e in due if e not in wanted]:
            if entry.queue_id in busy:
                continue
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._attempt(entry), name=entry.queue_id)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery of %s failed: %r", task.get_name(), task.exception())

    # --- requests from the queue CLI while this gateway runs -------------------------------
    async def _apply_requests(self) -> None:
        """`<spool>/requests/<queue id or "all">.<action>` files, written by `mxgate queue`."""
        folder = self.spool.root / REQUESTS_DIR
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            target, _, action = path.name.partition(".")
            try:
                if target == "all" and action in ("flush", "retry"):
                    self.flush()
                else:
                    entry = self.spool.get(target)
                    if entry is not None and action == "delete":
                        await self.spool.remove(entry)
                    elif entry is not None and action == "retry":
                        if entry.queue == "hold":
                            entry = await self.spool.release(entry)
                        self._retry_now.add(entry.queue_id)
                        self._wake.set()
            except StaleEntryError as exc:  # being relayed right now: the CLI may ask again
                log.info("queue request %s not applied: %s", path.name, exc)
            path.unlink(missing_ok=True)

    # --- one attempt ----------------------------------------------------------------------
    async def _attempt(self, entry: QueueEntry) -> None:
        try:
            entry = await self.spool.claim(entry)
        except StaleEntryError:
            return  # changed since the scan (deleted, held, another attempt): the next scan decides
        try:
            data = await self.spool.open_message(entry)
        except (CorruptEntryError, PartialEntryError, OSError) as exc:
            log.error("queue entry %s unreadable, moved to corrupt/: %s", entry.queue_id, exc)
            await self.spool.mark_corrupt(entry)
            return
        result = await relay(self.settings(), entry.sender, list(entry.pending), data, self.health)
        await self._settle(entry, result, data)

    async def _settle(self, entry: QueueEntry, result: RelayResult, data: bytes) -> None:
        now = time.time()
        retry_at = next_attempt(self.retry, entry.arrival, entry.attempts + 1, now)
        outcomes: list[Recipient] = []
        failed: list[FailedRecipient] = []
        for o in result.outcomes:
            state, status, diag = o.state, o.status, o.diagnostic
            if state == "deferred" and retry_at is None:  # RFC 5321 §4.5.4.1: give up after the lifetime
                state, status, diag = "failed", EXPIRED_STATUS, f"{diag} (gave up after {self.retry.max_age:g}s)"
            if state == "delivered":
                outcomes.append(Recipient(o.address, RcptState.DELIVERED, status, None, o.remote_mta or None))
                self.stats["delivered"] += 1
                self.on_event(entry, "Send", f"relayed to {result.host}: {diag}", rcpt=o.address, status="Delivered")
            elif state == "failed":
                outcomes.append(Recipient(o.address, RcptState.FAILED, status, diag, o.remote_mta or None))
                failed.append(FailedRecipient(o.address, status, diag, o.remote_mta or None))
                self.stats["failed"] += 1
                self.on_event(entry, "Fail", diag, rcpt=o.address, status="Failed")
            else:
                outcomes.append(Recipient(o.address, RcptState.PENDING, status, diag, o.remote_mta or None))
                self.stats["deferred"] += 1
                self.on_event(entry, "Defer", diag, rcpt=o.address, status="Pending")
        if failed:
            try:
                await self._bounce(entry, failed, data)
            except Exception as exc:  # never settle (and so forget) failures nobody was told about
                log.error("DSN for %s could not be sent, entry kept on hold: %r", entry.queue_id, exc)
                await self._keep_unbounced(entry, outcomes, retry_at, f"bounce not sent: {exc!r}"[:400])
                return
        try:
            await self.spool.settle(entry, outcomes, next_attempt=retry_at, error=result.errors[0] if result.errors else None)
        except StaleEntryError:
            log.warning("queue entry %s changed while it was relayed (deleted by an admin?)", entry.queue_id)

    async def _keep_unbounced(self, entry: QueueEntry, outcomes: list[Recipient], retry_at: float | None,
                              why: str) -> None:
        """Record what was delivered; keep the failed recipients pending, with why, in hold/."""
        kept = [o if o.state is not RcptState.FAILED else dataclasses.replace(o, state=RcptState.PENDING, error=why)
                for o in outcomes]
        try:
            held = await self.spool.settle(entry, kept, next_attempt=retry_at or time.time(), error=why)
            if held is not None and held.queue != "hold":
                await self.spool.hold(held)
        except StaleEntryError:
            log.warning("queue entry %s changed while it was relayed (deleted by an admin?)", entry.queue_id)

    async def _bounce(self, entry: QueueEntry, failed: list[FailedRecipient], data: bytes) -> None:
        """One DSN for this attempt's failures; none when the original came from <> (RFC 3464 §2)."""
        await self.bounce_failed(entry.sender, failed, data, arrival=entry.arrival, ref=entry.queue_id,
                                 envid=entry.meta.get("envid"))

    async def bounce_failed(self, sender: str, failed: list[FailedRecipient], data: bytes, *, arrival: float,
                            ref: str, envid: str | None = None) -> None:
        """The DSN for `failed` recipients of the message `data` from `sender`, durable on return
        (`ref`: the queue id, or the trace id of a cut-through relay); none for <>. Raises when it
        cannot be built or stored: the caller keeps the failures (never forgotten untold)."""
        dsn = build_dsn(self.hostname, sender, envid, failed, original_header_block(data),
                        datetime.fromtimestamp(arrival, timezone.utc))
        if dsn is None:
            log.info("no DSN for %s: the sender is <>", ref)
            return
        queue_id = await self.bounce(sender, dsn, {"kind": "dsn", "dsn_for": ref})
        self.stats["dsn"] += 1
        metrics.dsn_sent(self.spool_name)
        log.info("DSN %s queued to %s for %s", queue_id, sender, ref)

    async def _bounce_here(self, sender: str, dsn: bytes, meta: Mapping[str, str]) -> str:
        """The default destination: this runner's own spool (its routes reach the sender)."""
        new = await self.spool.enqueue(DSN_ENVELOPE_SENDER, [sender], dsn, dict(meta))
        self.kick()
        return new.queue_id
