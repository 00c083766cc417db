"""The gateway's hand-offs to threads (issue 19: mxgate/handoff.py instead of executors): a check
that raises is an error, a hung one a timeout, a job dropped from the queue never runs, the
per-client share and HEAVY_SLOTS hold, and stopping the pipeline answers every check in flight.
No sleeps as synchronisation: the tests wait on events and on the pipeline's state."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mxgate.filters import pipeline as pipeline_module
from mxgate.filters.pipeline import HEAVY_SLOTS, Pipeline
from mxgate.filters.result import Budget, current_budget
from mxgate.handoff import CheckThreads


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def _close_with_one_queued(p: Pipeline, job) -> None:
    """Queue `job` behind the checks running now, close the pipeline: the job is answered
    "timeout" (the caller asserts it never ran)."""
    queued = asyncio.ensure_future(p._in_worker("192.0.2.99", Budget(600), job))
    await _until(lambda: len(p._running) == p.running + 1)
    p.close()
    assert await asyncio.wait_for(queued, 10) == ("timeout", None)


def test_a_check_that_raises_is_an_error_never_a_pass():
    def broken():
        raise ValueError("a library's surprise")

    async def main():
        p = Pipeline(workers=2)
        try:
            state, exc = await p._in_worker("192.0.2.1", Budget(10), broken)
            assert state == "error" and isinstance(exc, ValueError)
            assert await p._in_worker("192.0.2.1", Budget(10), lambda: "next") == ("ok", "next")  # thread survived
        finally:
            p.close()

    asyncio.run(main())


def test_a_hung_check_is_a_timeout_and_the_pipeline_still_answers(monkeypatch):
    """A check that never looks at its budget: answered "timeout" once STOP_GRACE is over, and the
    other checks (its thread stays busy) are still answered by the remaining workers."""
    monkeypatch.setattr(pipeline_module, "STOP_GRACE", 0.05)
    hold = threading.Event()

    async def main():
        p = Pipeline(workers=2, per_client=4)
        try:
            assert await p._in_worker("192.0.2.1", Budget(0.05), hold.wait, 60) == ("timeout", None)
            assert p.running == 1  # still in its thread, and counted
            assert await p._in_worker("192.0.2.2", Budget(10), lambda: "other") == ("ok", "other")
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


def test_a_check_dropped_from_the_queue_never_runs_later(monkeypatch):
    """Queued past QUEUE_WAIT it is answered "timeout"; when a worker frees up it must not run
    (its message has had its verdict: nothing runs on after it)."""
    monkeypatch.setattr(pipeline_module, "QUEUE_WAIT", 0.05)  # the bound under test, not a sync
    hold = threading.Event()
    ran = threading.Event()

    async def main():
        p = Pipeline(workers=2, per_client=4)
        try:
            held = [asyncio.ensure_future(p._in_worker(ip, Budget(60), hold.wait, 60))
                    for ip in ("192.0.2.1", "192.0.2.2")]
            await _until(lambda: p.running == 2)
            assert await p._in_worker("192.0.2.3", Budget(60), ran.set) == ("timeout", None)
            hold.set()
            assert [await h for h in held] == [("ok", True), ("ok", True)]
            # A later job through the same threads runs after the dropped one would have.
            assert await p._in_worker("192.0.2.3", Budget(10), lambda: "after") == ("ok", "after")
            assert not ran.is_set() and p.running == 0
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


def test_one_client_holds_at_most_half_of_the_workers():
    hold = threading.Event()

    async def main():
        p = Pipeline(workers=4, per_client=8)
        try:
            mine = [asyncio.ensure_future(p._in_worker("192.0.2.1", Budget(60), hold.wait, 60)) for _ in range(5)]
            await _until(lambda: p.running == 2)
            for _ in range(20):  # the client's other three wait for its slots, not for workers
                await asyncio.sleep(0)
            assert p.running == 2
            assert await p._in_worker("198.51.100.7", Budget(10), lambda: "other") == ("ok", "other")
            hold.set()
            assert [await m for m in mine] == [("ok", True)] * 5
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


def test_closing_the_pipeline_stops_running_checks_and_answers_them_never_as_a_pass():
    """The node's stop: a running check is told (its budget cancelled) and ends; a queued one is
    answered "timeout" at once and never runs. (What a check told to stop returned is not a pass
    either: `Pipeline.run` answers the message 451 once closed, tests/gateway/test_bounded.py.)"""
    started = threading.Event()
    ran = threading.Event()

    def cooperative():
        budget = current_budget()
        started.set()
        while not budget.cancelled:
            started.wait(0.001)
        return "finished after being told to stop"

    async def main():
        p = Pipeline(workers=2, per_client=4)
        running = asyncio.ensure_future(p._in_worker("192.0.2.1", Budget(600), cooperative))
        other = asyncio.ensure_future(p._in_worker("192.0.2.2", Budget(600), cooperative))
        await _until(lambda: p.running == 2)
        await _close_with_one_queued(p, ran.set)
        for answer in await asyncio.wait_for(asyncio.gather(running, other), 10):
            assert answer in (("ok", "finished after being told to stop"), ("timeout", None))
        await _until(lambda: p.running == 0)
        assert not ran.is_set()

    asyncio.run(main())


def test_closing_drops_queued_checks_before_it_frees_a_worker():
    """The race behind a flaky CI run: close() told the running check to stop first, its worker
    took the queued job before close() had marked it dropped, and the job ran. Here the running
    check's budget, when cancelled, waits until the worker has dealt with the queued job: in the
    old order that job runs, in the right one the worker skips it."""
    ran = threading.Event()
    queued_dealt_with = threading.Event()

    class StopWaitsForTheWorker(Budget):
        def cancel(self):
            super().cancel()
            assert queued_dealt_with.wait(10)

    def cooperative():
        budget = current_budget()
        while not budget.cancelled:
            queued_dealt_with.wait(0.001)
        return "stopped"

    async def main():
        p = Pipeline(workers=1, per_client=4)
        submit = p.threads.submit
        jobs = []

        def counted_submit(work):
            jobs.append(work)
            if len(jobs) == 1:
                return submit(work)

            def then_tell():
                try:
                    work()
                finally:
                    queued_dealt_with.set()
            return submit(then_tell)

        p.threads.submit = counted_submit
        running = asyncio.ensure_future(p._in_worker("192.0.2.1", StopWaitsForTheWorker(600), cooperative))
        await _until(lambda: p.running == 1)
        await _close_with_one_queued(p, ran.set)
        assert await asyncio.wait_for(running, 10) in (("ok", "stopped"), ("timeout", None))
        assert not ran.is_set()

    asyncio.run(main())


def test_heavy_work_runs_heavy_slots_at_a_time_and_raises_to_its_caller():
    """The ARC validate + seal hand-off: at most HEAVY_SLOTS at once (each holds a whole message),
    and a seal that breaks raises in the session (never relayed as if sealed)."""
    lock = threading.Lock()
    now = [0]
    peak = [0]
    release = threading.Event()

    def work(i):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        release.wait(10)
        with lock:
            now[0] -= 1
        return i

    def broken():
        raise RuntimeError("seal failed")

    async def main():
        p = Pipeline(workers=2)
        try:
            jobs = [asyncio.ensure_future(p.run_heavy(work, i)) for i in range(6)]
            await _until(lambda: now[0] == HEAVY_SLOTS)
            for _ in range(20):
                await asyncio.sleep(0)
            assert now[0] == HEAVY_SLOTS
            release.set()
            assert [await j for j in jobs] == list(range(6))
            with pytest.raises(RuntimeError, match="seal failed"):
                await p.run_heavy(broken)
        finally:
            release.set()
            p.close()

    asyncio.run(main())
    assert peak[0] == HEAVY_SLOTS


def test_checkthreads_submit_survives_a_broken_job():
    threads = CheckThreads(count=1, name="test-handoff")
    done = threading.Event()

    def broken():
        raise RuntimeError("boom")

    threads.submit(broken)
    threads.submit(done.set)
    assert done.wait(10)
    threads.stop()


def test_clamd_without_a_socket_is_answered_on_the_loop_and_with_one_in_a_worker(tmp_path):
    """The default (no socket) asks nothing: skipped on the loop, no hand-off. With a socket it
    is a scan in a worker, and an unreachable clamd is still an error, never a pass."""
    from mxgate.filters import clamd
    from mxgate.filters.pipeline import _runs_on_loop
    from mxgate.filters.result import CheckEnv, MessageFacts
    from mxgate.policy.gateway_checks import DEFAULTS, CheckSettings
    from mxgate.smtp.source import MessageSource

    idle = CheckSettings("clamd", dict(DEFAULTS["clamd"]))
    wired = CheckSettings("clamd", {**DEFAULTS["clamd"], "socket": str(tmp_path / "no-clamd.sock"), "timeout": 5.0})
    assert _runs_on_loop(clamd, idle) and not _runs_on_loop(clamd, wired)
    facts = MessageFacts("192.0.2.9", "h", "a@b.test", ("c@d.test",),
                         MessageSource.from_bytes(b"Subject: x\r\n\r\nbody\r\n"))

    async def main():
        p = Pipeline(workers=2)
        try:
            quiet = await p._run_one(clamd, facts, idle, CheckEnv(None, None))
            jobs = p.threads.jobs
            broken = await p._run_one(clamd, facts, wired, CheckEnv(None, None))
            return quiet, jobs, broken, p.threads.jobs
        finally:
            p.close()

    quiet, jobs_before, broken, jobs_after = asyncio.run(main())
    assert (quiet.outcome, jobs_before) == ("skip", 0)
    assert broken.outcome in ("error", "temperror", "timeout") and broken.action == "tempfail" and jobs_after == 1
