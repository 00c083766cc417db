"""Runs the gateway's content checks off the event loop and combines their results into one verdict.

Owns: the order (the one MIME walk, filters/mimewalk.py, in parallel with SPF, DKIM, DNSBL, rDNS
and clamd; attachments when the walk is done; then DMARC, which reads SPF and DKIM; then the score,
which reads everything), each check's time budget (at its `timeout` the work is told to stop — the
walk looks at its `Budget` as it streams — and the pipeline waits for it to end, so nothing runs on
after the verdict), the failure rules (`on_timeout` for timeouts and a dependency's temporary
error, `on_error` for a check that broke), fair use of the workers (per client address: messages
in the checks at once, and worker slots), stopping every check at shutdown, and `decide_message`,
the pure combination: reject beats tempfail beats quarantine beats tag.
Must not know: SMTP sessions, the spool, header stamping (server/gateway.py does that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from mxgate import metrics
from mxgate.auth.dns import NotCached, answers_from_cache, cache_only
from mxgate.handoff import CheckThreads
from mxgate.filters import attachments, clamd, dkim, dmarc, dnsbl, mimewalk, rdns, score, spf
from mxgate.filters.result import (ERROR, SKIP, TEMPERROR, TIMEOUT, Budget, BudgetExceeded, CheckEnv, CheckResult,
                                   MessageFacts, run_with_budget)
from mxgate.policy.gateway_checks import CheckSettings
from mxgate.smtp.replies import REPLIES
from mxgate.verdict import Action, CheckAction, Verdict

log = logging.getLogger("mxgate.filters")

PARALLEL = (spf, dkim, dnsbl, rdns, clamd)
AFTER_WALK = (attachments,)
AFTER = (dmarc,)
# When several checks refuse, the reply names the first of these (the most specific reason).
PRECEDENCE = ("clamd", "attachments", "dnsbl", "dmarc", "spf", "dkim", "rdns", "score")
DEFAULT_WORKERS = 8
DEFAULT_PER_CLIENT = 4
HEAVY_SLOTS = 2  # checks holding a whole message in memory at once (dkimpy): memory is bounded by design
STOP_GRACE = 2.0  # seconds a stopped check has to reach its next look at the budget
WALK_TIMEOUT = 10.0  # the walk's budget when attachments is off (the score still reads its text)
QUEUE_WAIT = 120.0  # longest a check waits for a free worker before it counts as timed out
LOOP_WALK_MAX = 64 * 1024  # bytes: a message in memory up to this is walked on the loop first
LOOP_WALK_SECONDS = 0.003  # how long the walk may hold the loop before it goes to a worker
_loop_clock = time.monotonic  # the loop try's clock (tests step it)
_clock = time.perf_counter  # checks' latency (metrics)
LOOK_FLOOR = 0.01  # seconds: a queued job's timer looks no more often (a deadline is seen at most this late)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict  # ACCEPT, REJECT, TEMPFAIL or QUARANTINE
    results: dict[str, CheckResult]
    score: score.Score
    tagged: tuple[str, ...]  # checks whose action was "tag" and that fired


def with_failure_policy(result: CheckResult, cfg: CheckSettings) -> CheckResult:
    """Pure. Timeouts and a dependency's temporary errors follow `on_timeout` (open, or closed: 451);
    a check that broke follows `on_error` (tempfail, reject, quarantine, or open only when asked)."""
    if result.outcome in (TIMEOUT, TEMPERROR):
        return dataclasses.replace(result, action="tempfail" if cfg.fail_closed else "off", reason="check-tempfail")
    if result.outcome != ERROR:
        return result
    action = {"open": "off"}.get(cfg.on_error, cfg.on_error)
    reason = {"reject": "content-uninspectable", "quarantine": "quarantined"}.get(action, "check-tempfail")
    return dataclasses.replace(result, action=CheckAction(action), reason=reason)


def _reply_reason(action: str, reason: str) -> str:
    """A refusal's reply must match its action: a 4xx text for tempfail, 5xx for reject."""
    reply = REPLIES.get(reason)
    if action == "tempfail" and (reply is None or reply.code >= 500):
        return "check-tempfail"
    if action == "reject" and (reply is None or reply.code < 500):
        return "message-rejected"
    return reason


def decide_message(results: dict[str, CheckResult], sc: score.Score) -> Outcome:
    """Pure: the message's verdict from every check's result."""
    ordered = [results[n] for n in PRECEDENCE if n in results]
    if len(ordered) != len(results):
        ordered += [r for n, r in results.items() if n not in PRECEDENCE]
    tagged = tuple(r.check for r in ordered if r.fired and r.action == CheckAction.TAG)
    for action, verdict_action in _REFUSALS:
        for hit in ordered:  # the first of this action in PRECEDENCE (loops, not a generator per action)
            if hit.action == action:
                reason = _reply_reason(action, hit.reason) if action != CheckAction.QUARANTINE else "quarantined"
                return Outcome(Verdict(verdict_action, reason, f"{hit.check}: {hit.detail}"), results, sc, tagged)
    return Outcome(Verdict(Action.ACCEPT, "queued"), results, sc, tagged)


_REFUSALS = ((CheckAction.REJECT, Action.REJECT), (CheckAction.TEMPFAIL, Action.TEMPFAIL),
             (CheckAction.QUARANTINE, Action.QUARANTINE))


class Pipeline:
    """One per gateway: a bounded worker pool shared by every message's checks, used fairly."""

    def __init__(self, workers: int = DEFAULT_WORKERS, per_client: int = DEFAULT_PER_CLIENT):
        self.workers = workers
        self.per_client = per_client
        # Issue 19: a queue and `call_soon_threadsafe` (mxgate/handoff.py), not an executor's Future.
        self.threads = CheckThreads(workers, "mxgate-check")
        self.heavy = threading.BoundedSemaphore(HEAVY_SLOTS)  # for checks in worker threads
        self._heavy_async: asyncio.Semaphore | None = None  # for the role's own whole-message work (ARC)
        # The role's whole-message work (ARC validate + seal) on threads of its own: a seal never
        # waits behind hung checks, and HEAVY_SLOTS of them run at once (heavy_slot()).
        self.heavy_threads = CheckThreads(HEAVY_SLOTS, "mxgate-heavy")
        self._drop_lock = threading.Lock()  # a queued job is either started by its worker or dropped, never both
        self._clients: dict[str, int] = {}  # client address → messages in the checks now
        self._slots: dict[str, asyncio.Semaphore] = {}  # client address → its share of the workers
        self._budgets: set[Budget] = set()
        self._running: set[_Job] = set()  # submitted and not yet ended in their worker
        self.closed = False

    def heavy_slot(self) -> asyncio.Semaphore:
        """`async with pipeline.heavy_slot():` around work that holds a whole message in memory."""
        if self._heavy_async is None:
            self._heavy_async = asyncio.Semaphore(HEAVY_SLOTS)
        return self._heavy_async

    async def run_heavy(self, fn, *args):
        """fn(*args) on the heavy threads, HEAVY_SLOTS at a time; waits for its result (no budget:
        the seal is CPU work and its key lookups are bounded by the resolver)."""
        async with self.heavy_slot():
            return await self.heavy_threads.run(fn, args, None, None)

    @property
    def running(self) -> int:
        """Check jobs executing in a worker now (0 once every verdict is in: nothing runs on);
        jobs still queued are not counted."""
        return sum(1 for job in self._running if job.started)

    def close(self) -> None:
        """Stop every check in flight: budgets cancelled (the walk stops at its next look), queued jobs dropped."""
        self.closed = True
        # Queued jobs are dropped before any budget is cancelled: a running check told to stop
        # frees its worker, which must then find the next job already dropped, not run it.
        jobs = list(self._running)
        with self._drop_lock:
            for job in jobs:
                job.dropped = not job.started
        for budget in list(self._budgets):
            budget.cancel()
        for job in jobs:  # a job dropped from the queue is answered now, not at its timer
            try:
                job.loop.call_soon_threadsafe(job._look)
            except RuntimeError:  # its loop is closed
                pass
        self.threads.stop()  # the jobs still queued were dropped above: their workers skip them
        self.heavy_threads.stop()

    async def _in_worker(self, client: str, budget: Budget, fn, *args) -> tuple[str, Any]:
        """Run fn in the pool within its budget; ("ok", value) | ("timeout", None) | ("error", exc).

        The budget counts from when a worker starts the job; a job queued QUEUE_WAIT without a
        worker counts as timed out. At the budget's end it is cancelled and the job awaited
        (bounded by STOP_GRACE): no verdict while the message's work runs on."""
        slot = self._slots.setdefault(client, asyncio.Semaphore(max(1, self.workers // 2)))
        self._budgets.add(budget)
        try:
            if slot.locked():  # wait_for wraps the wait in a Task: only when there is a wait
                try:
                    await asyncio.wait_for(slot.acquire(), QUEUE_WAIT)
                except asyncio.TimeoutError:
                    return "timeout", None
            else:
                await slot.acquire()  # free: taken at once, without suspending
            try:
                if self.closed:
                    return "timeout", None
                return await _Job(self, budget, fn, args).answer
            finally:
                slot.release()
        finally:
            self._budgets.discard(budget)

    async def _run_one(self, module, facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> CheckResult:
        result = self._try_on_loop(module, facts, cfg, env)
        return result if result is not None else await self._run_in_worker(module, facts, cfg, env, _clock())

    def _try_on_loop(self, module, facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> CheckResult | None:
        """The check's result when it runs (or is skipped) on the loop without waiting; None when
        it must go to a worker (_run_in_worker). Issue 19: most checks of a usual message end here,
        and then no task, no context manager and no worker hop is made for them."""
        if not cfg.enabled:
            return CheckResult(module.NAME, SKIP, detail="off")
        start = _clock()
        if _runs_on_loop(module, cfg):
            answered = _outcome(module.gather, facts, cfg, env)
        else:
            answered = _from_cache_on_loop(module, facts, cfg, env)
            if answered is None:
                return None
        metrics.observe_check(module.NAME, _clock() - start)  # an error or a timeout too: _outcome caught it
        return self._result(module, answered, cfg, env)

    async def _run_in_worker(self, module, facts: MessageFacts, cfg: CheckSettings, env: CheckEnv,
                             start: float) -> CheckResult:
        try:
            answered = await self._in_worker(facts.peer_ip, Budget(cfg.timeout), module.gather, facts, cfg, env)
        finally:  # a timeout or an error is observed too (its latency is the point)
            metrics.observe_check(module.NAME, _clock() - start)
        return self._result(module, answered, cfg, env)

    @staticmethod
    def _result(module, answered: tuple[str, Any], cfg: CheckSettings, env: CheckEnv) -> CheckResult:
        state, value = answered
        if state == "ok":
            env.raw[module.NAME] = value
            result = module.decide(value, cfg)
        elif state == "timeout":
            result = CheckResult(module.NAME, TIMEOUT, detail=f"no answer in {cfg.timeout:g}s")
        else:
            log.warning("check %s failed: %r", module.NAME, value)
            result = CheckResult(module.NAME, ERROR, detail=_error_text(value))
        return with_failure_policy(result, cfg)

    async def _walk(self, facts: MessageFacts, checks: dict[str, CheckSettings], env: CheckEnv) -> None:
        """The one MIME walk; a limit, an error or the budget running out is kept for the content checks."""
        att = checks["attachments"]
        if not att.enabled and not checks["score"].enabled:
            return
        seconds = att.timeout if att.enabled else WALK_TIMEOUT
        budget = Budget(seconds)
        env.budget = budget
        archives = att["inspect_archives"] if att.enabled else False
        state, value = "timeout", None
        source = facts.source
        if source.in_memory and source.size <= LOOP_WALK_MAX:
            # Issue 19: a short message held in memory is walked on the loop (its hand-off to a
            # worker cost more than the walk). Past LOOP_WALK_SECONDS (archives to inflate, a
            # sender's many parts) the loop's try ends at its next look at the budget and the walk
            # starts again in a worker within the message's own budget: the loop is held that long
            # at most; a limit or an error found on the loop is the walk's answer as in a worker.
            on_loop = Budget(min(seconds, LOOP_WALK_SECONDS), clock=_loop_clock)
            state, value = _outcome(run_with_budget, on_loop, _walk_message, facts, archives, on_loop)
        if state == "timeout":
            state, value = await self._in_worker(facts.peer_ip, budget, _walk_message, facts, archives, budget)
        if state == "ok":
            env.walk = value
        else:
            env.walk_error = value if state == "error" else BudgetExceeded(f"MIME walk over {seconds:g}s")

    async def run(self, facts: MessageFacts, checks: dict[str, CheckSettings], env: CheckEnv,
                  precomputed: dict[str, CheckResult] | None = None) -> Outcome:
        """`precomputed`: results of checks already run at connect (filters/connect.py), not run again."""
        client = facts.peer_ip
        if self._clients.get(client, 0) >= self.per_client:
            verdict = Verdict(Action.TEMPFAIL, "checks-busy", f"{self.per_client} messages from {client} in the checks")
            return Outcome(verdict, {}, score.compute({}, b"", b"", checks["score"]), ())
        self._clients[client] = self._clients.get(client, 0) + 1
        env.heavy = self.heavy
        try:
            outcome = await self._run(facts, checks, env, precomputed or {})
            if self.closed:  # stopped mid-check: whatever ran, the sender retries (never a pass on half the checks)
                return Outcome(Verdict(Action.TEMPFAIL, "check-tempfail", "the gateway stopped during the checks"),
                               outcome.results, outcome.score, ())
            return outcome
        finally:
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
                self._slots.pop(client, None)

    async def _run(self, facts: MessageFacts, checks: dict[str, CheckSettings], env: CheckEnv,
                   pre: dict[str, CheckResult]) -> Outcome:
        async def after_walk() -> list[CheckResult]:
            await self._walk(facts, checks, env)
            return [await self._run_one(m, facts, checks[m.NAME], env) for m in AFTER_WALK]

        # The parallel checks that answer on the loop are answered here, in order; only those
        # that must wait for a worker run beside the walk as tasks (issue 19: a task per check,
        # six per message, cost more than most checks once their answers came from the cache).
        first: list[CheckResult | None] = []
        for m in PARALLEL:
            first.append(pre[m.NAME] if m.NAME in pre else self._try_on_loop(m, facts, checks[m.NAME], env))
        waiting = [i for i, r in enumerate(first) if r is None]
        if waiting:
            start = _clock()
            *got, walked = await asyncio.gather(
                *(self._run_in_worker(PARALLEL[i], facts, checks[PARALLEL[i].NAME], env, start) for i in waiting),
                after_walk())
            for i, r in zip(waiting, got):
                first[i] = r
        else:
            walked = await after_walk()
        results: dict[str, Any] = {r.check: r for r in [*first, *walked]}
        for m in AFTER:
            results[m.NAME] = await self._run_one(m, facts, checks[m.NAME], env)
        sc_cfg = checks["score"]
        sc = score.compute(results, facts.source.head, env.walk.text if env.walk is not None else b"", sc_cfg)
        if sc_cfg.enabled:
            results["score"] = score.decide(sc, sc_cfg)
        return decide_message(results, sc)


class _Job:
    """One check in a worker, watched from the loop by one timer (issue 19: a hop cost ~90 µs of
    CPU with a Future for the start, two asyncio.wait and run_in_executor's chained futures).

    The worker wakes the loop once, when the work ends. The timer looks at the job's state
    (queued, started at what deadline, stopping) and re-arms itself: while queued it looks at
    least every `budget.seconds`, so a job that starts late is still stopped at its own
    deadline; queued past QUEUE_WAIT it is dropped; at the deadline the budget is cancelled and
    the job gets STOP_GRACE to end. Whichever comes first on the loop — the end or the timer —
    decides, as the two asyncio.wait did."""

    __slots__ = ("pipeline", "budget", "fn", "args", "loop", "answer", "queued_until", "started", "stopping",
                 "dropped", "timer")

    def __init__(self, pipeline: Pipeline, budget: Budget, fn, args):
        self.pipeline, self.budget, self.fn, self.args = pipeline, budget, fn, args
        self.loop = asyncio.get_running_loop()
        self.answer: asyncio.Future = self.loop.create_future()
        self.queued_until = time.monotonic() + QUEUE_WAIT
        self.started = False
        self.stopping = False
        self.dropped = False
        pipeline._running.add(self)
        pipeline.threads.submit(self._work)
        self.timer = self.loop.call_later(self._queued_look(QUEUE_WAIT), self._look)

    def _work(self) -> None:
        """In the worker thread."""
        with self.pipeline._drop_lock:
            if self.dropped:  # answered "timeout" while queued: it never runs
                return
            self.budget.restart()  # before `started`: the loop's timer then reads the new deadline
            self.started = True
        outcome = _outcome(run_with_budget, self.budget, self.fn, *self.args)
        try:
            self.loop.call_soon_threadsafe(self._ended, outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _ended(self, outcome: tuple[str, Any]) -> None:
        self.pipeline._running.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if not self.answer.done():
            self.answer.set_result(("timeout", None) if self.stopping else outcome)

    def _look(self) -> None:
        if self.answer.done():
            return
        now = time.monotonic()
        if self.stopping:  # STOP_GRACE is over and the work still runs
            log.warning("check %s still running %.1fs after its budget", getattr(self.fn, "__module__", self.fn),
                        STOP_GRACE)
            self.answer.set_result(("timeout", None))
        elif self.started:
            left = self.budget.deadline - now
            if left > 0:
                self.timer = self.loop.call_later(left, self._look)
                return
            self.budget.cancel()
            self.stopping = True
            self.timer = self.loop.call_later(STOP_GRACE, self._look)
        elif now >= self.queued_until or self.pipeline.closed:
            with self.pipeline._drop_lock:
                if not self.started:  # still queued: it never runs
                    self.dropped = True
                    self.pipeline._running.discard(self)
            self.budget.cancel()
            self.answer.set_result(("timeout", None))
        else:
            self.timer = self.loop.call_later(self._queued_look(self.queued_until - now), self._look)

    def _queued_look(self, queue_left: float) -> float:
        """While queued: look again within one budget (a late start still ends at its own
        deadline), but not more often than every LOOK_FLOOR (a tiny budget must not spin)."""
        return max(min(queue_left, self.budget.seconds), LOOK_FLOOR)


def _runs_on_loop(module, cfg: CheckSettings) -> bool:
    """A check whose gather does no I/O with these settings (its `on_loop(cfg)` says so: the
    attachments check only reads the walk, DNSBL with no zone asks nothing) runs on the loop,
    with the same outcomes, instead of in a worker (issue 19: the hop cost more than the work)."""
    on_loop = vars(module).get("on_loop")  # getattr's miss raises and catches: ~1 µs a check
    return on_loop is not None and on_loop(cfg)


def _from_cache_on_loop(module, facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> tuple[str, Any] | None:
    """A check whose only waiting is DNS (`cached_on_loop(facts, cfg)`: SPF, rDNS, DMARC, DKIM) runs
    on the loop when every answer it needs is in the resolver's cache, as it is for a stream of
    mail from the same senders (issue 19: its thread hand-off cost more than the check). The
    predicate says whether this check may be tried on the loop at all (DMARC: once the suffix list
    is parsed; DKIM: a short message in memory with few signatures); whether the answers are
    cached is found by trying: the first lookup the cache cannot answer ends the try — it never
    asks or waits on the loop — and the check runs in a worker as before (None). The same gather
    over the same answers: the same result; anything it did before the miss is thrown away."""
    traits = vars(module)
    on_loop = traits.get("cached_on_loop")
    if on_loop is None or not answers_from_cache(env.resolver) or not on_loop(facts, cfg):
        return None
    loop_env = env
    if traits.get("WHOLE_MESSAGE", False) and env.heavy is not None:
        # On the loop one check runs at a time over a message already in memory: no memory slot
        # (env.heavy, for the worker threads) is taken, and none can be waited for here.
        loop_env = _shallow_copy(env)  # not dataclasses.replace: ~15 µs a call on the hot path
        loop_env.heavy = None
    with cache_only() as look:
        try:
            answered = _outcome(module.gather, facts, cfg, loop_env)
        except NotCached:
            return None
    return None if look.missed else answered


def _shallow_copy(obj):
    """copy.copy of a plain instance (what its __reduce_ex__ gives: a new object of its class with
    the same attribute dict), without copy's protocol look-ups: ~1.4 -> ~0.3 µs (issue 19)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def _outcome(fn, *args) -> tuple[str, Any]:
    """fn(*args) as ("ok", value) | ("timeout", None) | ("error", exc): in a worker or on the loop."""
    try:
        return "ok", fn(*args)
    except BudgetExceeded:
        return "timeout", None
    except Exception as exc:  # RecursionError, a parser limit, a library's surprise
        return "error", exc


def _walk_message(facts: MessageFacts, inspect_archives: bool, budget: Budget) -> mimewalk.Walk:
    return mimewalk.walk(facts.source, budget=budget, inspect_archives=inspect_archives)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, mimewalk.InspectionLimit):
        return str(exc)
    return exc.__class__.__name__
