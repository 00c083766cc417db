"""DMARC with records on the real DNS server: alignment, policies, sp=, pct=, discovery."""
from __future__ import annotations

import pytest

from mxgate.auth.dkim import DkimResult
from mxgate.auth.dmarc import (DmarcRecordError, aligned, decide_dmarc, evaluate_dmarc,
                               organizational_domain, parse_dmarc_record)
from mxgate.auth.spf import SpfResult

SPF_PASS = SpfResult("pass", "", "fabrikam.test")
SPF_PASS_OTHER = SpfResult("pass", "", "bulk-esp.test")
SPF_FAIL = SpfResult("fail", "", "fabrikam.test")
NO_DKIM: tuple = ()


def dkim(result: str, domain: str) -> tuple[DkimResult, ...]:
    return (DkimResult(result, domain, "sel", "abcdefgh"),)


@pytest.fixture
def zone(dns_server):
    dns_server.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@fabrikam.test")
    dns_server.add("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine; adkim=s; aspf=s")
    dns_server.add("_dmarc.half.test", "TXT", "v=DMARC1; p=reject; pct=50")
    dns_server.add("_dmarc.own.fabrikam.test", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.broken.test", "TXT", "v=DMARC1; p=bogus")
    dns_server.add("_dmarc.twice.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.twice.test", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.other.test", "TXT", "some-verification=1")
    return dns_server


def test_pass_by_spf_alignment(zone, dnsfunc):
    r = evaluate_dmarc("fabrikam.test", SPF_PASS, "mail.fabrikam.test", NO_DKIM, dnsfunc)
    assert (r.result, r.aligned_by, r.disposition, r.policy) == ("pass", "spf", "none", "reject")


def test_pass_by_dkim_alignment_when_spf_is_unaligned(zone, dnsfunc):
    r = evaluate_dmarc("fabrikam.test", SPF_PASS_OTHER, "bulk-esp.test", dkim("pass", "fabrikam.test"), dnsfunc)
    assert (r.result, r.aligned_by) == ("pass", "dkim")


def test_unaligned_passes_fail_with_reject(zone, dnsfunc):
    r = evaluate_dmarc("fabrikam.test", SPF_PASS_OTHER, "bulk-esp.test", dkim("pass", "bulk-esp.test"), dnsfunc)
    assert (r.result, r.disposition, r.aligned_by, r.domain) == ("fail", "reject", None, "fabrikam.test")
    assert r.policy_domain == "fabrikam.test"


def test_fail_with_quarantine_and_strict_alignment(zone, dnsfunc):
    r = evaluate_dmarc("quarantine.test", SpfResult("pass", "", "mail.quarantine.test"),
                       "mail.quarantine.test", dkim("pass", "news.quarantine.test"), dnsfunc)
    assert (r.result, r.disposition) == ("fail", "quarantine")  # aligned only relaxed


def test_subdomain_uses_sp_from_the_organisational_record(zone, dnsfunc):
    r = evaluate_dmarc("news.fabrikam.test", SPF_FAIL, "fabrikam.test", NO_DKIM, dnsfunc)
    assert (r.result, r.policy, r.subdomain_policy, r.disposition) == ("fail", "reject", "quarantine", "quarantine")
    assert r.policy_domain == "fabrikam.test"
    assert ("_dmarc.news.fabrikam.test", "TXT", "udp") in zone.queries


def test_subdomain_with_its_own_record_uses_its_p(zone, dnsfunc):
    r = evaluate_dmarc("own.fabrikam.test", SPF_FAIL, "fabrikam.test", NO_DKIM, dnsfunc)
    assert (r.result, r.disposition, r.policy_domain) == ("fail", "none", "own.fabrikam.test")


@pytest.mark.parametrize("sample,disposition", [(0, "reject"), (49.9, "reject"), (50, "quarantine"), (99.9, "quarantine")])
def test_pct_samples_deterministically(zone, dnsfunc, sample, disposition):
    r = evaluate_dmarc("half.test", SPF_FAIL, "half.test", NO_DKIM, dnsfunc, sample=sample)
    assert (r.result, r.pct, r.disposition) == ("fail", 50, disposition)


@pytest.mark.parametrize("domain,result,reason", [
    ("nodmarc.test", "none", "no DMARC record"),
    ("other.test", "none", "no DMARC record"),
    ("twice.test", "none", "multiple DMARC records"),
    ("broken.test", "permerror", "invalid p="),
])
def test_discovery_outcomes(zone, dnsfunc, domain, result, reason):
    r = evaluate_dmarc(domain, SPF_FAIL, domain, NO_DKIM, dnsfunc)
    assert (r.result, r.disposition) == (result, "none")
    assert reason in r.reason


def test_dns_timeout_is_temperror(zone, dnsfunc):
    zone.set_delay(3)
    r = evaluate_dmarc("fabrikam.test", SPF_FAIL, "fabrikam.test", NO_DKIM, dnsfunc)
    assert (r.result, r.disposition) == ("temperror", "none")


def test_no_from_domain_is_permerror(dnsfunc):
    assert evaluate_dmarc(None, SPF_PASS, "fabrikam.test", NO_DKIM, dnsfunc).result == "permerror"


def test_aligned_temperror_does_not_reject():
    record = parse_dmarc_record("v=DMARC1; p=reject")
    r = decide_dmarc("fabrikam.test", record, "fabrikam.test", SPF_FAIL, "fabrikam.test",
                     dkim("temperror", "fabrikam.test"))
    assert (r.result, r.disposition) == ("temperror", "none")


def test_record_parsing():
    rec = parse_dmarc_record("v=DMARC1;p=Quarantine; sp=reject; pct=250; adkim=s; aspf=x; foo=bar")
    assert (rec.policy, rec.subdomain_policy, rec.pct, rec.adkim, rec.aspf) == ("quarantine", "reject", 100, "s", "r")
    assert parse_dmarc_record("v=DMARC1; rua=mailto:x@y.test").policy == "none"
    for bad in ("p=reject; v=DMARC1", "v=DMARC10; p=reject", "v=DMARC1; p=block"):
        with pytest.raises(DmarcRecordError):
            parse_dmarc_record(bad)
    # More edge cases, RFC by RFC: tests/auth/test_dmarc_rfc7489.py


def test_organisational_domain_and_alignment():
    assert organizational_domain("a.b.fabrikam.test.") == "fabrikam.test"
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("test") == "test"
    assert aligned("mail.Fabrikam.test", "fabrikam.test", "r")
    assert not aligned("mail.fabrikam.test", "fabrikam.test", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "fabrikam.test", "r")


def test_public_suffix_list_is_parsed_once_when_checks_start_together(monkeypatch):
    """The first burst of mail after a start runs every check thread into the cold list at
    once: exactly one of them parses it, the others wait for that copy (issue 19: twenty
    parses of ~40 ms each, a second of CPU, in P3)."""
    import threading

    from mxgate.auth import dmarc

    built, entered, release = [], threading.Event(), threading.Event()
    waiting = threading.Semaphore(0)  # one release per thread that reached the lock or the parser

    def slow_parse():
        built.append(1)
        waiting.release()
        entered.set()
        assert release.wait(10)
        return object()

    class SpyLock:  # counts threads arriving at the lock, then behaves as the real one
        def __init__(self):
            self.lock = threading.Lock()

        def __enter__(self):
            if entered.is_set():
                waiting.release()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    monkeypatch.setattr(dmarc, "_PSL", None)
    monkeypatch.setattr(dmarc, "_PSL_LOCK", SpyLock())
    monkeypatch.setattr(dmarc, "PublicSuffixList", slow_parse)
    got: list = []
    first = threading.Thread(target=lambda: got.append(dmarc._public_suffix_list()))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=lambda: got.append(dmarc._public_suffix_list())) for _ in range(8)]
    for t in others:
        t.start()
    for _ in range(1 + len(others)):  # every thread is at the lock (or, unguarded, in the parser)
        assert waiting.acquire(timeout=10)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert len(built) == 1
    assert len(got) == 9 and all(g is got[0] for g in got)
