"""CheckThreads with `stall` (the mailbox's authentication hand-off, mxgate/handoff.py): the jobs of
a loop turn wake one thread, a busy thread is not woken again, a job held up (an uncached DNS
answer) lets another thread take the rest after `stall`, and no job is ever stranded. No sleeps
as synchronisation: the tests wait on events and on results."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mxgate.auth.pipeline import Authenticator
from mxgate.handoff import CheckThreads


def _name(x):
    return threading.current_thread().name, x


class _HeldJob:
    """A check that blocks its thread until released (a resolver that has not answered)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self) -> str:
        self.started.set()
        assert self.release.wait(30)
        return "held"

    async def start(self, threads: CheckThreads) -> asyncio.Future:
        """Hand the job over and return its future once a thread is running it."""
        first = asyncio.ensure_future(threads.run(self, (), 30, None))
        await asyncio.to_thread(self.started.wait, 10)
        return first


def test_the_jobs_of_one_turn_wake_one_thread_which_runs_them_all():
    threads = CheckThreads(count=6, name="t", stall=60)

    async def run():
        return await asyncio.gather(*(threads.run(_name, (i,), 10, None) for i in range(20)))

    try:
        results = asyncio.run(run())
    finally:
        threads.stop()
    assert [x for _, x in results] == list(range(20))
    assert threads.wakeups == 1 and threads.jobs == 20
    assert len({name for name, _ in results}) == 1


def test_jobs_handed_over_while_a_thread_works_do_not_wake_another():
    threads = CheckThreads(count=6, name="t", stall=60)  # no stall wake within this test
    job = _HeldJob()

    async def run():
        first = await job.start(threads)
        later = []
        for i in range(5):  # five later turns, each handing over a job
            later.append(asyncio.ensure_future(threads.run(_name, (i,), 30, None)))
            await asyncio.sleep(0)
        woken_while_busy = threads.wakeups
        job.release.set()
        return woken_while_busy, await first, await asyncio.gather(*later)

    try:
        woken, first, later = asyncio.run(run())
    finally:
        job.release.set()
        threads.stop()
    assert woken == 1 and first == "held" and [x for _, x in later] == list(range(5))


def test_jobs_waiting_behind_a_held_job_get_another_thread_after_stall():
    """The held job (a resolver that has not answered) does not hold the others: after `stall`
    with no job started, a second thread takes them while the first is still held."""
    threads = CheckThreads(count=3, name="t", stall=0.01)
    job = _HeldJob()

    async def run():
        first = await job.start(threads)
        others = await asyncio.wait_for(asyncio.gather(*(threads.run(_name, (i,), 30, None) for i in range(4))), 10)
        still_held = not first.done()
        job.release.set()
        return still_held, await first, others

    try:
        still_held, first, others = asyncio.run(run())
    finally:
        job.release.set()
        threads.stop()
    assert still_held and first == "held"
    assert [x for _, x in others] == list(range(4)) and threads.wakeups >= 2


def test_no_job_is_stranded_when_jobs_arrive_as_the_thread_goes_idle():
    """The race between a thread finding no job and a turn's hand-over: thousands of turns of
    one or two jobs each, all answered."""
    threads = CheckThreads(count=2, name="t", stall=60)

    async def run():
        out = []
        for i in range(3000):
            batch = [threads.run(lambda x: x + 1, (i,), 30, None) for _ in range(1 + i % 2)]
            out.extend(await asyncio.wait_for(asyncio.gather(*batch), 10))
        return out

    try:
        out = asyncio.run(run())
    finally:
        threads.stop()
    assert out == [i + 1 for i in range(3000) for _ in range(1 + i % 2)]
    assert threads.wakeups <= threads.jobs


class _HeldLock:
    """The drain's lock, held up once in the thread's "no job left?" step until the test says."""

    def __init__(self, real):
        self.real, self.armed = real, False
        self.in_window, self.proceed = threading.Event(), threading.Event()

    def __enter__(self):
        if self.armed and threading.current_thread() is not threading.main_thread():
            self.armed = False
            self.in_window.set()
            assert self.proceed.wait(10)
        return self.real.__enter__()

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)


def test_a_job_handed_over_just_as_the_thread_finds_none_left_is_still_run():
    """The thread found the list empty and is about to go idle; the turn that hands over the next
    job sees it still active and wakes nobody. The thread must look again before it goes idle."""
    threads = CheckThreads(count=1, name="t", stall=60)

    async def run():
        await threads.run(lambda: 0, (), 10, None)  # the threads exist
        while threads._drain.active:  # the answer comes before the thread has gone idle: wait for it
            await asyncio.sleep(0.001)
        held = threads._drain.lock = _HeldLock(threads._drain.lock)
        held.armed = True
        assert await threads.run(lambda: 1, (), 10, None) == 1  # then it finds no job: held there
        await asyncio.to_thread(held.in_window.wait, 10)
        late = asyncio.ensure_future(threads.run(lambda: 2, (), 10, None))
        for _ in range(3):  # the turn's hand-over runs: the thread counts as active, no wake
            await asyncio.sleep(0)
        woken = threads.wakeups
        held.proceed.set()
        return woken, await asyncio.wait_for(late, 10)

    try:
        woken, late = asyncio.run(run())
    finally:
        threads.stop()
    assert woken == 2 and late == 2


def test_a_failing_job_raises_in_its_caller_and_the_next_jobs_run():
    threads = CheckThreads(count=1, name="t", stall=60)

    def broken():
        raise ValueError("a check's bug")

    async def run():
        results = await asyncio.gather(threads.run(broken, (), 10, None), threads.run(lambda: 7, (), 10, None),
                                       return_exceptions=True)
        return results

    try:
        first, second = asyncio.run(run())
    finally:
        threads.stop()
    assert isinstance(first, ValueError) and second == 7


def test_after_stop_a_later_job_starts_a_fresh_set():
    threads = CheckThreads(count=2, name="t", stall=60)

    async def one():
        return await threads.run(lambda: "ok", (), 10, None)

    assert asyncio.run(one()) == "ok"
    threads.stop()
    assert asyncio.run(one()) == "ok"
    threads.stop()


def test_the_authenticator_hands_its_checks_over_this_way():
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=1.0, non_routable=[])
    assert auth.threads.stall is not None and auth.threads.stall <= 0.1


@pytest.mark.parametrize("count", [1, 4])
def test_submitted_work_runs_in_drain_mode_too(count):
    threads = CheckThreads(count=count, name="t", stall=60)
    done = threading.Event()
    seen = []

    def work():
        seen.append(1)
        if len(seen) == 10:
            done.set()

    try:
        for _ in range(10):
            threads.submit(work)
        assert done.wait(10)
    finally:
        threads.stop()


def test_a_job_handed_over_in_the_turn_that_stops_the_threads_is_still_run():
    """stop() in the same loop turn as a hand-over, before the turn's end wakes a thread (the
    node stopping while a session hands over a check): the job must still run, not wait for a
    wake that the stopped set never gets."""
    threads = CheckThreads(count=2, name="t", stall=60)

    async def run():
        job = asyncio.ensure_future(threads.run(lambda: "ran", (), None, None))
        await asyncio.sleep(0)  # this turn: the job's hand-over, then (below) stop, then its wake
        assert not job.done() and threads.wakeups == 0
        threads.stop()
        return await asyncio.wait_for(job, 10)

    try:
        assert asyncio.run(run()) == "ran"
    finally:
        threads.stop()
