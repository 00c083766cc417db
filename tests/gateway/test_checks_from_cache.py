"""Issue 19: SPF, rDNS and DMARC run on the event loop when every DNS answer they need is in the
node's cache (no thread hand-off), and in a worker as before otherwise. The same results either
way; a cache miss — even one pyspf swallows — sends the check to a worker; nothing is asked on
the loop. Real parts: the loopback DNS server, the node's caching resolver, pyspf."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnsserver import TestDNSServer  # noqa: E402
from gwkit import message_facts  # noqa: E402

from mxgate.auth.dns import dnsfunc_for, install_default_resolver, make_resolver  # noqa: E402
from mxgate.filters import dmarc, rdns, spf  # noqa: E402
from mxgate.filters.pipeline import Pipeline  # noqa: E402
from mxgate.filters.result import CheckEnv, MessageFacts  # noqa: E402
from mxgate.policy.gateway_checks import DEFAULTS, CheckSettings  # noqa: E402
from mxgate.smtp.source import MessageSource  # noqa: E402

CLIENT = "192.0.2.9"


@pytest.fixture
def dns_server():
    with TestDNSServer() as server:
        server.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.9 -all")
        server.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
        server.add("9.2.0.192.in-addr.arpa", "PTR", "mail.fabrikam.test.")
        server.add("mail.fabrikam.test", "A", CLIENT)
        server.add("tailspin.test", "TXT", "v=spf1 -all exp=why.tailspin.test")
        server.add("why.tailspin.test", "TXT", "not from here")
        yield server


def _facts(sender: str) -> MessageFacts:
    domain = sender.split("@")[1]
    return MessageFacts(CLIENT, f"mail.{domain}", sender, ("b@contoso.test",),
                        MessageSource.from_bytes(f"From: <{sender}>\r\nSubject: x\r\n\r\nbody\r\n".encode()).split_head(4096))


def _cfg(name: str) -> CheckSettings:
    return CheckSettings(name, dict(DEFAULTS[name]))


async def _checks(p: Pipeline, facts: MessageFacts, env: CheckEnv) -> tuple[list, list[int]]:
    """spf, rdns, dmarc in the pipeline's order; the workers' job count after each."""
    results, jobs = [], []
    for module in (spf, rdns, dmarc):
        results.append(await p._run_one(module, facts, _cfg(module.NAME), env))
        jobs.append(p.threads.jobs)
    return results, jobs


def _view(results) -> list[tuple]:
    return [(r.check, r.outcome, r.action, r.reason, r.detail, dict(r.facts)) for r in results]


def test_cached_checks_run_on_the_loop_with_the_same_results(dns_server):
    cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    previous = install_default_resolver(cached)

    async def main():
        p = Pipeline(workers=4)
        try:
            env = lambda: CheckEnv(cached, dnsfunc_for(cached, 1.0))  # noqa: E731 - one per message, as the gateway's
            first, jobs_first = await _checks(p, _facts("a@fabrikam.test"), env())
            asked = len(dns_server.queries)
            second, jobs_second = await _checks(p, _facts("a@fabrikam.test"), env())
            # Another sender domain whose SPF record is cached but not its exp= explanation.
            cached.resolve("tailspin.test", "TXT")
            other, jobs_other = await _checks(p, _facts("a@tailspin.test"), env())
            return first, jobs_first, asked, second, jobs_second, other, jobs_other, len(dns_server.queries)
        finally:
            p.close()

    try:
        first, jobs_first, asked, second, jobs_second, other, jobs_other, asked_after = asyncio.run(main())
    finally:
        install_default_resolver(previous)
    assert [r.outcome for r in first] == ["pass", "pass", "pass"] and jobs_first == [1, 2, 3]
    assert _view(second) == _view(first)  # the same gather over the same answers
    assert jobs_second == [3, 3, 3]  # no hand-off at all
    assert asked > 0
    # pyspf swallows the miss of the exp= lookup (a bare except): the look still sends SPF to a
    # worker, whose result has the explanation; rDNS is cached (same client), DMARC is not.
    assert other[0].outcome == "fire" and other[0].facts["result"] == "fail"
    assert jobs_other[0] == 4 and jobs_other[1] == 4 and jobs_other[2] == 5
    assert asked_after > asked


def test_without_a_cache_every_check_goes_to_a_worker(dns_server):
    plain = make_resolver([dns_server.address], timeout=1.0)  # [dns] cache_size = 0
    previous = install_default_resolver(plain)

    async def main():
        p = Pipeline(workers=4)
        try:
            env = CheckEnv(plain, dnsfunc_for(plain, 1.0))
            await _checks(p, _facts("a@fabrikam.test"), env)
            return await _checks(p, _facts("a@fabrikam.test"), CheckEnv(plain, dnsfunc_for(plain, 1.0)))
        finally:
            p.close()

    try:
        results, jobs = asyncio.run(main())
    finally:
        install_default_resolver(previous)
    assert [r.outcome for r in results] == ["pass", "pass", "pass"] and jobs == [4, 5, 6]


# --- DKIM on the loop (issue 19) ------------------------------------------------------------------

def _signed_facts(key_pem: bytes, signatures: int = 1, body: bytes = b"Hello.\r\n", tamper: bool = False,
                  spooled: bool = False) -> MessageFacts:
    from mxgate.auth.dkim import sign_dkim

    message = (b"From: <a@fabrikam.test>\r\nTo: <b@contoso.test>\r\nSubject: x\r\n"
               b"Message-ID: <1@fabrikam.test>\r\n\r\n" + body)
    for _ in range(signatures):
        message = sign_dkim(message, "fabrikam.test", "s1", key_pem, include_headers=["From", "To", "Subject"]) + message
    if tamper:
        message = message.replace(b"Subject: x", b"Subject: y")
    return message_facts(message, CLIENT, spooled=spooled)


@pytest.fixture
def dkim_key(dns_server):
    from mxgate.auth.dkim import generate_dkim_key

    pem, txt = generate_dkim_key()
    dns_server.add("s1._domainkey.fabrikam.test", "TXT", txt)
    return pem


def _dkim_runs(dns_server, facts_list, *, hold_slots: bool = False) -> list[tuple]:
    """Each message's DKIM result through the pipeline, twice (the first fills the cache), with
    the workers' job count after each: [(result, jobs), ...] for the second runs."""
    from mxgate.filters import dkim

    cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    previous = install_default_resolver(cached)

    async def main():
        p = Pipeline(workers=4)
        out = []
        try:
            for facts in facts_list:
                env = CheckEnv(cached, dnsfunc_for(cached, 1.0), heavy=p.heavy)
                await p._run_one(dkim, facts, _cfg("dkim"), env)
                if hold_slots:  # every memory slot of the workers taken (e.g. two large messages)
                    for _ in range(2):
                        assert p.heavy.acquire(timeout=1)
                try:
                    env = CheckEnv(cached, dnsfunc_for(cached, 1.0), heavy=p.heavy)
                    before = p.threads.jobs
                    result = await p._run_one(dkim, facts, _cfg("dkim"), env)
                    out.append((result, p.threads.jobs - before))
                finally:
                    if hold_slots:
                        p.heavy.release()
                        p.heavy.release()
            return out
        finally:
            p.close()

    try:
        return asyncio.run(main())
    finally:
        install_default_resolver(previous)


def test_dkim_with_its_key_cached_is_verified_on_the_loop_with_the_workers_result(dns_server, dkim_key):
    good, bad = _signed_facts(dkim_key), _signed_facts(dkim_key, tamper=True)
    runs = _dkim_runs(dns_server, [good, bad])
    (r_good, hops_good), (r_bad, hops_bad) = runs
    assert hops_good == 0 and hops_bad == 0  # answered on the loop
    assert r_good.outcome == "pass" and "dkim=pass d=fabrikam.test s=s1" in r_good.detail
    assert r_bad.outcome == "fire" and r_bad.reason == "dkim-fail"
    # The same results as a worker gives (a resolver without a cache never answers on the loop).
    plain = make_resolver([dns_server.address], timeout=1.0)
    previous = install_default_resolver(plain)

    async def in_worker():
        from mxgate.filters import dkim

        p = Pipeline(workers=4)
        try:
            out = []
            for facts in (good, bad):
                before = p.threads.jobs
                out.append((await p._run_one(dkim, facts, _cfg("dkim"), CheckEnv(plain, dnsfunc_for(plain, 1.0),
                                                                                   heavy=p.heavy)),
                            p.threads.jobs - before))
            return out
        finally:
            p.close()

    try:
        worker = asyncio.run(in_worker())
    finally:
        install_default_resolver(previous)
    assert [hops for _r, hops in worker] == [1, 1]
    assert _view([r for r, _h in worker]) == _view([r_good, r_bad])


def test_dkim_on_the_loop_takes_no_memory_slot_and_never_waits_for_one(dns_server, dkim_key):
    """Both worker slots for whole messages held: the loop's verification neither waits (it
    would hold every session of the process) nor takes one."""
    [(result, hops)] = _dkim_runs(dns_server, [_signed_facts(dkim_key)], hold_slots=True)
    assert hops == 0 and result.outcome == "pass"


def test_large_many_signed_or_spooled_messages_are_verified_in_a_worker(dns_server, dkim_key):
    """A sender cannot hold the loop: past 64 KiB, more than two signatures (each canonicalises
    and hashes the message again), or a body still in the spool file, the check goes to a worker."""
    from mxgate.filters import dkim

    line = b"x" * 76 + b"\r\n"
    large = _signed_facts(dkim_key, body=line * (dkim.LOOP_MESSAGE_MAX // len(line) + 1))
    many = _signed_facts(dkim_key, signatures=dkim.LOOP_SIGNATURES + 1)
    spooled = _signed_facts(dkim_key, spooled=True)
    two = _signed_facts(dkim_key, signatures=dkim.LOOP_SIGNATURES)
    runs = _dkim_runs(dns_server, [large, many, spooled, two])
    assert [hops for _r, hops in runs] == [1, 1, 1, 0]
    assert all(r.outcome == "pass" for r, _h in runs)
