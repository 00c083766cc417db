"""The mailbox's authentication stage past its time budget: every result temperror (ARC fail),
the event loop answered, and the worker thread left to finish alone (auth/pipeline.py _bounded)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from mxgate.auth.pipeline import Authenticator, CheckThreads

MESSAGE = b"From: a@fabrikam.test\r\nTo: b@contoso.test\r\nSubject: x\r\n\r\nbody\r\n"


def test_checks_past_their_budget_answer_temperror_and_the_thread_finishes_alone(monkeypatch):
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=0.01, non_routable=[])
    release, finished = threading.Event(), threading.Event()

    def stuck(self, *args):
        release.wait(30)  # a resolver that never answers (never set before the budget ends)
        finished.set()
        return None

    monkeypatch.setattr(Authenticator, "_checks", stuck)

    async def run():
        facts = await auth.gather(MESSAGE, trace_id="0" * 32, connecting_ip="127.0.0.10", helo="h.test",
                                  sender="a@fabrikam.test", connector=None, recipients=["b@contoso.test"])
        still_running = not finished.is_set()  # the stage was answered while the check still ran
        release.set()
        return facts, still_running

    facts, still_running = asyncio.run(run())
    assert still_running and finished.wait(10)
    assert (facts.spf.result, facts.dmarc.result, facts.arc.status) == ("temperror", "temperror", "fail")
    assert [r.result for r in facts.dkim] == ["temperror"]
    assert facts.from_domain == "fabrikam.test"


def test_checks_within_their_budget_return_their_results(monkeypatch):
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=1.0, non_routable=[])
    seen = []

    def quick(self, data, auth_ip, sender, helo, trace_id, trusted_sealers):
        seen.append((threading.current_thread() is threading.main_thread(), auth_ip, sender, helo, trusted_sealers))
        return self._overran(data)

    monkeypatch.setattr(Authenticator, "_checks", quick)

    async def run():
        return await auth.gather(MESSAGE, trace_id="0" * 32, connecting_ip="127.0.0.10", helo="h.test",
                                 sender="a@fabrikam.test", connector=None, recipients=["b@contoso.test"])

    asyncio.run(run())
    assert seen == [(False, "127.0.0.10", "a@fabrikam.test", "h.test", ())]  # off the event loop's thread


def test_a_failing_check_raises_in_the_caller_and_the_threads_go_on(monkeypatch):
    """An exception in the checks reaches on_message (451 internal-error there), as it did from
    the loop's executor; the thread that ran it serves the next message."""
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=1.0, non_routable=[])
    auth.threads = CheckThreads(count=1)
    calls = []

    def flaky(self, data, *args):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise ValueError("a check's bug")
        return self._overran(data)

    monkeypatch.setattr(Authenticator, "_checks", flaky)

    async def once():
        return await auth.gather(MESSAGE, trace_id="0" * 32, connecting_ip="127.0.0.10", helo="h.test",
                                 sender="a@fabrikam.test", connector=None, recipients=["b@contoso.test"])

    async def run():
        with pytest.raises(ValueError, match="a check's bug"):
            await once()
        return await once()

    facts = asyncio.run(run())
    assert facts.spf.result == "temperror" and calls == ["mxgate-auth_0", "mxgate-auth_0"]
    asyncio.run(auth.stop())


def test_a_late_result_after_the_budget_is_dropped_and_the_thread_serves_the_next_job():
    threads = CheckThreads(count=1)
    release = threading.Event()

    def slow():
        release.wait(30)
        return "late"

    async def run():
        first = await threads.run(slow, (), 0.05, "overran")
        release.set()
        second = await threads.run(lambda x: x * 2, (21,), 10, "overran")
        return first, second

    assert asyncio.run(run()) == ("overran", 42)
    threads.stop()


def test_a_cancelled_caller_leaves_the_thread_working(monkeypatch):
    """A session that drops mid-check cancels its await; the result arriving later is ignored,
    never set on a cancelled future (which would raise InvalidStateError in the loop)."""
    threads = CheckThreads(count=1)
    started, release = threading.Event(), threading.Event()
    errors = []

    def held():
        started.set()
        release.wait(30)
        return 1

    async def run():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        task = asyncio.ensure_future(threads.run(held, (), 10, None))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        return await threads.run(lambda: 7, (), 10, None)  # the same thread, after the cancelled job

    assert asyncio.run(run()) == 7 and errors == []
    threads.stop()
