"""The mailbox's authentication stage past its time budget: every result temperror (ARC fail),
the event loop answered, and the worker thread left to finish alone (auth/pipeline.py _bounded)."""
from __future__ import annotations

import asyncio
import threading

from mxgate.auth.pipeline import Authenticator

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
        release.set()  # (asyncio.run waits for the executor's threads when it closes the loop)
        return facts, still_running

    facts, still_running = asyncio.run(run())
    assert still_running and finished.is_set()
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
