"""DMARC per RFC 7489, the hard cases: record syntax from a table (§6.3, §6.6.3), IDNA2008
A-labels before the public-suffix lookup and alignment, every author domain evaluated with
the strictest result (§6.6.1), including From fields whose syntax is broken."""
from __future__ import annotations

import pytest

from mxgate.auth.dkim import DkimResult
from mxgate.auth.dmarc import (DmarcRecordError, DmarcResult, a_label, aligned, author_candidates,
                               evaluate_authors, organizational_domain, parse_dmarc_record, strictest)
from mxgate.auth.headers import author_domains, header_from_domain
from mxgate.auth.spf import SpfResult

ERROR = "error"

# (record, (p, sp, pct, adkim, aspf) or ERROR)
RECORDS = [
    ("v=DMARC1; p=reject", ("reject", None, 100, "r", "r")),
    ("v=DMARC1;p=quarantine;sp=none;pct=20;adkim=s;aspf=s", ("quarantine", "none", 20, "s", "s")),
    ("v=DMARC1 ; p = Reject ;", ("reject", None, 100, "r", "r")),  # WSP around tags, trailing ';'
    # §6.6.3 step 6: no valid p= but a valid rua= → act as p=none; without rua= → no policy.
    ("v=DMARC1; rua=mailto:agg@example.test", ("none", None, 100, "r", "r")),
    ("v=DMARC1; sp=reject; rua=mailto:agg@example.test", ("none", None, 100, "r", "r")),
    ("v=DMARC1; sp=reject", ERROR),
    ("v=DMARC1; p=block; rua=mailto:agg@example.test", ("none", None, 100, "r", "r")),
    ("v=DMARC1; p=block", ERROR),
    ("v=DMARC1; p=", ERROR),
    ("v=DMARC1; p=reject; rua=not a uri", ("reject", None, 100, "r", "r")),  # rua only matters without p
    ("v=DMARC1; rua=not a uri", ERROR),
    ("v=DMARC1; rua=mailto:a@x.test!10m, bogus", ("none", None, 100, "r", "r")),  # one valid URI suffices
    # ... and an invalid sp= is treated the same way (§6.6.3 step 6).
    ("v=DMARC1; p=reject; sp=junk", ERROR),
    ("v=DMARC1; p=reject; sp=junk; rua=mailto:agg@example.test", ("none", None, 100, "r", "r")),
    # Unknown tags are ignored (§6.3), including DMARCbis' np=/psd=/t=.
    ("v=DMARC1; p=reject; np=reject; psd=n; t=y; foo=bar", ("reject", None, 100, "r", "r")),
    ("v=DMARC1; p=reject; garbage; ;;", ("reject", None, 100, "r", "r")),
    # Bad optional values fall back to their defaults (the stricter reading for pct).
    ("v=DMARC1; p=reject; pct=250", ("reject", None, 100, "r", "r")),
    ("v=DMARC1; p=reject; pct=-5", ("reject", None, 100, "r", "r")),
    ("v=DMARC1; p=reject; pct=abc", ("reject", None, 100, "r", "r")),
    ("v=DMARC1; p=reject; pct=0", ("reject", None, 0, "r", "r")),
    ("v=DMARC1; p=reject; adkim=x; aspf=strict", ("reject", None, 100, "r", "r")),
    # v=DMARC1 must come first and exactly (§6.4); tags are case-sensitive names (RFC 6376 §3.2).
    ("p=reject; v=DMARC1", ERROR),
    ("v=DMARC10; p=reject", ERROR),
    ("v=dmarc1; p=reject", ERROR),
    ("V=DMARC1; p=reject", ERROR),
    ("", ERROR),
    # A duplicated tag invalidates the tag list (RFC 6376 §3.2, which §6.4 builds on).
    ("v=DMARC1; p=none; p=reject", ERROR),
]


@pytest.mark.parametrize("text,expected", RECORDS, ids=[r[0] or "empty" for r in RECORDS])
def test_record_syntax(text, expected):
    if expected == ERROR:
        with pytest.raises(DmarcRecordError):
            parse_dmarc_record(text)
        return
    rec = parse_dmarc_record(text)
    assert (rec.policy, rec.subdomain_policy, rec.pct, rec.adkim, rec.aspf) == expected


@pytest.mark.parametrize("domain,expected", [
    ("Bücher.Example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example.", "xn--bcher-kva.example"),
    ("ＥＸＡＭＰＬＥ.test", "example.test"),  # UTS #46 width mapping
    ("fabrikam.test\u200b", "fabrikam.test"),  # UTS #46 removes ZWSP
    ("fabrikam.test\u202e", None),  # a bidi override is not a name
    ("a..b", None),
    ("-bad-.test", None),
    ("", None),
])
def test_a_labels(domain, expected):
    assert a_label(domain) == expected


def test_public_suffix_lookup_uses_a_labels_and_the_real_list():
    assert organizational_domain("www.example.公司.cn") == "example.xn--55qx5d.cn"  # not a 2-label guess
    assert organizational_domain("mail.bücher.example") == "xn--bcher-kva.example"
    assert organizational_domain("a.b.c.kawasaki.jp") == "b.c.kawasaki.jp"  # PSL wildcard *.kawasaki.jp
    assert organizational_domain("city.kawasaki.jp") == "city.kawasaki.jp"  # and its exception
    assert organizational_domain("foo.github.io") == "foo.github.io"  # private section counts
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"


def test_alignment_compares_a_labels():
    assert aligned("mail.xn--bcher-kva.example", "Bücher.example", "r")
    assert aligned("xn--bcher-kva.example", "BÜCHER.EXAMPLE.", "s")
    assert not aligned("bucher.example", "bücher.example", "r")
    assert not aligned("example.xn--55qx5d.cn", "other.公司.cn", "r")


@pytest.mark.parametrize("raw,domains,single", [
    (b"From: a <x@example.org>, b <y@example.com>\r\n\r\n", ("example.org", "example.com"), None),
    (b"From: x@a.test\r\nFrom: y@b.test\r\n\r\n", ("a.test", "b.test"), None),
    (b"From: x@a.test\r\nFrom: y@a.test\r\n\r\n", ("a.test",), None),  # two fields: still no single From
    (b'From: "ceo@bank.test" <x@evil.test>\r\n\r\n', ("evil.test",), "evil.test"),  # quoted name: not an author
    (b"From: ceo@fabrikam.test <junk\r\n\r\n", ("fabrikam.test",), "fabrikam.test"),
    (b"From: <ceo@fabrikam.test\r\n\r\n", ("fabrikam.test",), "fabrikam.test"),
    (b"From: ceo@fabrikam.test via List <list@lists.test>\r\n\r\n", ("fabrikam.test", "lists.test"), None),
    (b"From: (x@c.test) <a@b.test>\r\n\r\n", ("b.test",), "b.test"),
    (b"To: a@one.test\r\n\r\n", (), None),
    (b"From: =?utf-8?q?x?= <a@B\xc3\xbccher.example>\r\n\r\n", ("b\u00fccher.example",), "b\u00fccher.example"),
])
def test_author_domains(raw, domains, single):
    assert author_domains(raw) == domains
    assert header_from_domain(raw) == single


def test_author_candidates_read_invalid_names_as_they_look():
    assert author_candidates(["fabrikam.test\u202e"]) == ("fabrikam.test\u202e", "fabrikam.test")
    assert author_candidates(["Bücher.example", "xn--bcher-kva.example"]) == ("xn--bcher-kva.example",)


def _r(result, disposition="none", domain="x.test"):
    return DmarcResult(result, "reject", None, 100, disposition, domain, None)


@pytest.mark.parametrize("results,expected", [
    ([_r("pass"), _r("fail", "reject", "b.test")], ("fail", "reject", "b.test")),
    ([_r("fail", "quarantine", "a.test"), _r("fail", "reject", "b.test")], ("fail", "reject", "b.test")),
    ([_r("fail", "none", "a.test"), _r("temperror", domain="b.test")], ("fail", "none", "a.test")),
    ([_r("pass"), _r("none", domain="b.test")], ("none", "none", "b.test")),
    ([_r("permerror", domain="a.test"), _r("temperror", domain="b.test")], ("temperror", "none", "b.test")),
])
def test_strictest(results, expected):
    worst = strictest(results)
    assert (worst.result, worst.disposition, worst.domain) == expected


SPF_ORG = SpfResult("pass", "", "example.org")


@pytest.fixture
def authors_zone(dns_server):
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.xn--bcher-kva.example", "TXT", "v=DMARC1; p=quarantine")
    return dns_server


def test_second_author_with_p_reject_makes_the_message_fail(authors_zone, dnsfunc):
    raw = b"From: a <x@example.org>, b <y@example.com>\r\n\r\n"
    r = evaluate_authors(author_domains(raw), SPF_ORG, "example.org", (), dnsfunc)
    assert (r.result, r.disposition, r.domain, r.policy) == ("fail", "reject", "example.com", "reject")
    assert r.authors == ("example.org", "example.com")
    assert "example.org=pass" in r.reason and "example.com=fail/reject" in r.reason and "§6.6.1" in r.reason


def test_every_author_passing_passes(authors_zone, dnsfunc):
    dkim = (DkimResult("pass", "example.com", "s", "abc"),)
    r = evaluate_authors(("example.org", "example.com"), SPF_ORG, "example.org", dkim, dnsfunc)
    assert r.result == "pass"


def test_an_invisible_character_does_not_hide_the_policy(authors_zone, dnsfunc):
    r = evaluate_authors(("fabrikam.test\u202e",), SPF_ORG, "example.org", (), dnsfunc)
    assert (r.result, r.disposition, r.domain) == ("fail", "reject", "fabrikam.test")


def test_u_label_author_finds_the_a_label_record(authors_zone, dnsfunc):
    r = evaluate_authors(("Bücher.example",), SpfResult("pass", "", "mail.xn--bcher-kva.example"),
                         "mail.xn--bcher-kva.example", (), dnsfunc)
    assert (r.result, r.domain, r.aligned_by, r.policy) == ("pass", "xn--bcher-kva.example", "spf", "quarantine")
    r = evaluate_authors(("bücher.example",), SPF_ORG, "example.org", (), dnsfunc)
    assert (r.result, r.disposition) == ("fail", "quarantine")


def test_no_author_is_permerror(dnsfunc):
    assert evaluate_authors((), SPF_ORG, "example.org", (), dnsfunc).result == "permerror"
