"""Cut-through relay: the gateway hands a checked, stamped message to the downstream before it answers.

Owns: whether a message may go straight to the downstream (`CutThrough.eligible`: it is held in
memory and a downstream host is usable: the queue's host health says so, and so does cut-through's
own), the attempt itself — queue/relay.py's `relay()` with the queue's own settings, session pool
and delivery slots, bounded by `[gateway] cut_through_timeout` — and the pure decision `settle()` of what the
downstream's per-recipient outcomes mean for the sender. As Exim's cut_through_delivery and
Postfix's before-queue proxy (smtpd_proxy_filter) do; gateway.py calls it after the same checks,
stamps and seal as a queued message gets, and never for a refused or quarantined one.

What the sender gets, and where the message is at that moment (RFC 5321 §6.1, "no 250 before
stable storage"):
- the downstream answered 250 after DATA for every recipient: 250, the message is in the
  downstream's store (the mailbox server commits before its 250); nothing is written here;
- every recipient refused for good (5xx): that refusal at DATA (`refusal_reason`), stored nowhere,
  no DSN (the sender's own server tells its user; a DSN from us could be backscatter);
- some delivered, some refused for good: 250 after the queue's DSN for the refused ones is
  durable in the gateway's outbound spool (queue/runner.py `bounce_failed`);
- anything else (4xx, no connection, TLS trouble, every host backing off, no free delivery slot,
  past the budget, an exception): the recipients not delivered are spooled and fsynced here
  before the 250, exactly as without cut-through, and the queue retries them.
A timeout or a lost connection after the final dot may mean the downstream has the message: those
recipients are spooled and sent again — a possible duplicate, never a loss (RFC 1047). A crash of
the gateway between the downstream's 250 and ours leaves nothing here to resend; the sender, who
got no reply, sends again: a duplicate at worst.

Must not know: SMTP client details (queue/relay.py), DSN contents (queue/runner.py, queue/dsn.py),
reply text (smtp/replies.py), the checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from mxgate.queue.dsn import FailedRecipient
from mxgate.queue.relay import RcptOutcome, RelayResult, RelaySettings, relay
from mxgate.queue.runner import Runner
from mxgate.queue.scheduler import HostHealth
from mxgate.smtp.source import MessageSource
from mxgate.verdict import Verdict, reject

log = logging.getLogger("mxgate.gateway")

# Seconds of the budget a new connection gets for its TCP handshake and the greeting (or the
# queue's relay_connect_timeout when shorter): a downstream that has not greeted by then is taken
# as down for this message, which waits in the spool rather than its sender on us.
CONNECT_BUDGET = 5.0


@dataclass(frozen=True)
class Settled:
    """What a cut-through attempt settled: recipients done here, and those left for the spool."""

    delivered: tuple[RcptOutcome, ...] = ()
    failed: tuple[RcptOutcome, ...] = ()  # refused for good: a DSN (or `refusal` when it is all of them)
    pending: tuple[str, ...] = ()  # to the spool, durably, before the 250
    deferred: tuple[RcptOutcome, ...] = ()  # the downstream's word on some of `pending` (4xx, trouble)
    refusal: Verdict | None = None  # every recipient refused for good: the sender's reply at DATA

    def trace_rows(self) -> dict[str, tuple[str, tuple[str, str]]]:
        """Each recipient's trace status and event after its Receive, as a queued message's rows
        read once the queue has relayed it."""
        why = {o.address: o.diagnostic for o in self.deferred}
        rows = {o.address: ("Delivered", ("Send", f"relayed to {o.remote_mta} (cut-through): {o.diagnostic}"))
                for o in self.delivered}
        rows.update({o.address: ("Failed", ("Fail", o.diagnostic)) for o in self.failed})
        rows.update({r: ("Pending", ("Receive", f"queued for the downstream (cut-through: {why[r]})" if r in why
                                     else "queued for the downstream")) for r in self.pending})
        return rows


def refusal_reason(status: str) -> str:
    """The reason (smtp/replies.py) of our reply at DATA for the downstream's permanent refusal
    with RFC 3463 status `status`: the same class of answer, in our own words."""
    if status.startswith("5.1."):
        return "downstream-unknown-recipient"
    if status in ("5.3.4", "5.2.3"):
        return "downstream-too-big"
    if status.startswith("5.7."):
        return "downstream-policy"
    return "downstream-rejected"


def settle(recipients: Sequence[str], result: RelayResult | None) -> Settled:
    """The downstream's outcomes as what happens to each recipient; `result` None: no attempt, or
    nothing known of it (past the budget) — every recipient goes to the spool. Pure."""
    if result is None:
        return Settled(pending=tuple(recipients))
    by = {o.address: o for o in result.outcomes}
    got = [by.get(r) for r in recipients]
    delivered = tuple(o for o in got if o is not None and o.state == "delivered")
    failed = tuple(o for o in got if o is not None and o.state == "failed")
    pending = tuple(r for r, o in zip(recipients, got) if o is None or o.state not in ("delivered", "failed"))
    deferred = tuple(o for o in got if o is not None and o.state not in ("delivered", "failed"))
    if failed and not delivered and not pending:
        # One reply at DATA answers for every recipient; when their refusals differ, the first
        # one's class stands for all (each is in the trace).
        first = failed[0]
        same = all(o.status == first.status for o in failed)
        reason = refusal_reason(first.status) if same else "downstream-rejected"
        return Settled(failed=failed, refusal=reject(reason, f"{result.host}: {first.diagnostic}"[:500]))
    return Settled(delivered, failed, pending, deferred)


class CutThrough:
    """The gateway's relay before the 250, sharing the queue's RelaySettings, sessions and
    delivery slots (`Runner.take_slot`), so the downstream sees at most `relay_concurrency`
    sessions and the pool keeps enough idle for them.

    Host health: a host the queue finds refusing connections gets no cut-through either; a host
    that failed a cut-through (refused the connection, TLS trouble, past the budget) gets none
    for `backoff` seconds (doubling per outage, as the queue's). That is cut-through's own record,
    not the queue's: the queue's first attempt at the spooled message meets the host itself, so
    its entry says why (`mxgate queue list`) instead of "backing off", as without cut-through."""

    def __init__(self, settings: Callable[[], RelaySettings], runner: Runner, budget: float, backoff: float):
        self.settings = settings
        self.runner = runner
        self.budget = budget
        self.health = HostHealth(backoff)
        self._capped: tuple[RelaySettings | None, RelaySettings | None] = (None, None)  # (settings, capped copy)

    def _settings(self) -> RelaySettings:
        """The queue's settings with the connect timeout capped at CONNECT_BUDGET, copied only when
        the queue's settings object changes (a renewed TLS context), not once per message."""
        settings = self.settings()
        base, capped = self._capped
        if base is not settings:
            capped = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, CONNECT_BUDGET))
            self._capped = (settings, capped)
        return capped

    def eligible(self, message: MessageSource) -> bool:
        """Held in memory (the session spills bigger messages to disk: those are not read back
        in) and a downstream host usable now."""
        if not message.in_memory:
            return False
        now = time.monotonic()
        health = self.runner.health  # replaced by `mxgate queue flush`: read it each time
        return any(health.usable(h, now) and self.health.usable(h, now) for h in self.settings().hosts)

    async def attempt(self, sender: str, recipients: Sequence[str], data: bytes) -> RelayResult | None:
        """relay() within the budget; None when no delivery slot was free, or nothing is known
        of the outcome (past the budget: the downstream may have the message — the caller
        spools it, a duplicate at worst)."""
        if not await self.runner.take_slot():
            return None
        settings = self._settings()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.budget):
                result = await relay(settings, sender, list(recipients), data, self.health)
        except TimeoutError:
            log.warning("cut-through to %s took more than %gs: message spooled (it may arrive twice)",
                        " ".join(settings.hosts), self.budget)
            now = time.monotonic()
            for host in settings.hosts:
                self.health.failed(host, now, started)
            return None
        finally:
            self.runner.release_slot()
        return result

    async def deliver(self, sender: str, recipients: Sequence[str], data: bytes, *, arrival: float, ref: str,
                      meta: dict) -> Settled | None:
        """Attempt, settle, and do what that asks before the sender's reply: None when nothing
        was settled (the caller spools the message as without cut-through); else the refusal for
        the sender, or what was done — the delivered counted, the DSN for the failed and the
        spool entry for the pending (`meta`) both durable."""
        done = settle(recipients, await self.attempt(sender, recipients, data))
        if done.refusal is not None:
            return done
        if not done.delivered and not done.failed:
            return None
        self.runner.count_relayed(o.state for o in (*done.delivered, *done.failed, *done.deferred))
        if done.failed:  # the queue's own DSN, durable before our 250 (RFC 5321 §6.1)
            try:
                await self.runner.bounce_failed(sender, [FailedRecipient(o.address, o.status, o.diagnostic,
                                                                         o.remote_mta or None) for o in done.failed],
                                                data, arrival=arrival, ref=ref)
            except Exception as exc:  # never forget failures nobody was told about: the queue tries again
                log.error("DSN for %s could not be queued, its failed recipients are spooled: %r", ref, exc)
                done = dataclasses.replace(done, failed=(), pending=done.pending + tuple(o.address for o in done.failed))
        if done.pending:
            await self.runner.spool.enqueue(sender, list(done.pending), data, meta)
            self.runner.kick()
        return done
