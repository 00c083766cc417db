"""Authentication-Results composition and header hygiene on raw bytes."""
from __future__ import annotations

import authres
import pytest
from hypothesis import given, settings, strategies as st

from mxgate.auth.arc import ArcResult
from mxgate.auth.dkim import DkimResult
from mxgate.auth.dmarc import DmarcResult
from mxgate.auth.headers import (fold_header, header_from_domain, parse_fields, prepend_headers,
                                 sanitize_inbound_headers, split_headers)
from mxgate.auth.results import format_authentication_results, pvalue
from mxgate.auth.spf import SpfResult

ID = "mx.contoso.test"
SPF = SpfResult("pass", "", "fabrikam.test")
DKIM = (DkimResult("pass", "fabrikam.test", "sel", "abcd1234"),)
DMARC = DmarcResult("pass", "reject", None, 100, "none", "fabrikam.test", "dkim", "fabrikam.test")


def parse(value: str):
    return authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)


def test_full_value_reads_like_the_example():
    value = format_authentication_results(ID, SPF, "alice@fabrikam.test", "mail.fabrikam.test",
                                          "203.0.113.7", DKIM, DMARC, ArcResult("none", ()), "fabrikam.test")
    assert value == ("mx.contoso.test; spf=pass (sender IP is 203.0.113.7) smtp.mailfrom=fabrikam.test "
                     "smtp.helo=mail.fabrikam.test; dkim=pass header.d=fabrikam.test header.s=sel "
                     "header.b=abcd1234; dmarc=pass (p=reject pct=100) action=none "
                     "header.from=fabrikam.test; arc=none")
    header = parse(value)
    assert header.authserv_id == ID
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass"), ("arc", "none")]


def test_unsigned_null_sender_and_arc_pass():
    value = format_authentication_results(ID, SpfResult("none", "", "h.test", "helo"), "<>", "h.test",
                                          "2001:db8::1", (), None, ArcResult("pass", ("gw.test",)), None)
    assert "dkim=none" in value and "smtp.mailfrom" not in value and "smtp.helo=h.test" in value
    assert "(sender IP is 2001:db8::1)" in value and "arc=pass (sealed by gw.test)" in value
    assert [r.method for r in parse(value).results] == ["spf", "dkim", "arc"]


def test_multiple_signatures_each_get_a_clause():
    dkim = DKIM + (DkimResult("fail", "esp.test", "s2", "zz/+9=Aa"),)
    value = format_authentication_results(ID, SPF, "a@fabrikam.test", "h", None, dkim, None, None, None)
    results = parse(value).results
    assert [(r.method, r.result) for r in results][1:] == [("dkim", "pass"), ("dkim", "fail")]
    assert 'header.b="zz/+9=Aa"' in value


def test_hostile_helo_cannot_break_out():
    helo = 'evil"; spf=pass\r\nX-MXGate-Trusted: yes (x'
    value = format_authentication_results(ID, SpfResult("fail", "", "a.test"), "a@a.test", helo,
                                          "not an ip", (), None, None, None)
    assert "\r" not in value and "\n" not in value and "sender IP" not in value
    assert [(r.method, r.result) for r in parse(value).results] == [("spf", "fail"), ("dkim", "none")]


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_pvalue_is_always_one_parseable_value(text):
    value = f"{ID}; spf=pass smtp.helo={pvalue(text)}"
    results = parse(value).results
    assert len(results) == 1 and results[0].method == "spf"


# --- header hygiene -----------------------------------------------------------------

INBOUND = (b"Received: from gw.contoso.test ([127.0.0.10])\r\n\tby mx.contoso.test; Mon, 2 Jun 2025\r\n"
           b"Authentication-Results: mx.contoso.test; spf=pass smtp.mailfrom=bank.test\r\n"
           b"authentication-results :\r\n (forged) MX.CONTOSO.TEST. ; dkim=pass\r\n"
           b"Authentication-Results: \"mx.contoso.test\"; dmarc=pass\r\n"
           b"Authentication-Results: gw.contoso.test;\r\n spf=pass smtp.mailfrom=fabrikam.test\r\n"
           b"X-MXGate-SkipListedInternetSender: ip=[203.0.113.9];domain=forged\r\n"
           b"x-mxgate-anything: 1\r\n"
           b"Subject: caf\xc3\xa9 \xff\xfe 8-bit\r\n"
           b"From: alice@fabrikam.test\r\n"
           b"\r\n"
           b"Authentication-Results: mx.contoso.test; body text is not a header\r\n")


def test_sanitize_removes_forgeries_and_renames_upstream_results():
    clean = sanitize_inbound_headers(INBOUND, "mx.contoso.test")
    head, body = split_headers(clean)
    names = [f.raw.split(b":")[0] for f in parse_fields(head)]
    assert names == [b"Received", b"Authentication-Results-Original", b"Subject", b"From"]
    assert b"Authentication-Results-Original: gw.contoso.test;\r\n spf=pass" in clean
    assert b"\xff\xfe 8-bit" in clean and b"mx.contoso.test; spf=pass" not in head
    assert body == b"Authentication-Results: mx.contoso.test; body text is not a header\r\n"
    assert clean.endswith(b"\r\n\r\n" + body)


def test_sanitize_bare_lf_and_headers_only():
    bare = INBOUND.replace(b"\r\n", b"\n")
    clean = sanitize_inbound_headers(bare, "mx.contoso.test")
    assert b"\r" not in clean and b"X-MXGate" not in clean.split(b"\n\n")[0]
    assert sanitize_inbound_headers(b"X-MXGate-A: 1\r\nFrom: a@b.test\r\n", ID) == b"From: a@b.test\r\n"


def test_prepend_folds_at_78_in_the_message_line_ending():
    value = "mx.contoso.test; " + "; ".join(f"dkim=pass header.d=d{i}.fabrikam.test" for i in range(6))
    out = prepend_headers(b"From: a@b.test\r\n\r\nbody", [("Authentication-Results", value), ("X-A", "1")])
    head, body = split_headers(out)
    lines = head.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines) and len(lines) > 3
    assert all(line.startswith(b" ") for line in lines[1:-2])
    assert parse_fields(head)[0].value.decode() == value  # unfolding restores it
    assert lines[-2:] == [b"X-A: 1", b"From: a@b.test"] and body == b"body"
    assert prepend_headers(b"From: a@b.test\n\nbody", [("X-A", "1")]) == b"X-A: 1\nFrom: a@b.test\n\nbody"


def test_prepend_refuses_header_injection_and_keeps_prefolded_values():
    with pytest.raises(ValueError):
        prepend_headers(b"\r\n", [("X-A", "1\r\nBcc: victim@x.test")])
    with pytest.raises(ValueError):
        prepend_headers(b"\r\n", [("Bad Name", "1")])
    prefolded = "v=1; a=rsa-sha256;\r\n b=abc"
    assert fold_header("DKIM-Signature", prefolded, b"\n") == b"DKIM-Signature: v=1; a=rsa-sha256;\n b=abc\n"


@pytest.mark.parametrize("raw,domain", [
    (b"From: Alice <alice@Fabrikam.Test.>\r\n\r\n", "fabrikam.test"),
    (b'From: "ceo@bank.test" <x@evil.test>\r\n\r\n', "evil.test"),
    (b"From: a@one.test, b@two.test\r\n\r\n", None),
    (b"From: a@one.test\r\nFrom: b@one.test\r\n\r\n", None),
    (b"To: a@one.test\r\n\r\n", None),
    (b"From:\r\n =?utf-8?q?Al?= <a@x.test>\n\nbody", "x.test"),
    (b"From: \xff\xfe@\xff.test\r\n\r\n", None),
])
def test_header_from_domain(raw, domain):
    assert header_from_domain(raw) == domain


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_hygiene_never_chokes_on_arbitrary_bytes(raw):
    clean = sanitize_inbound_headers(raw, ID)
    head, body = split_headers(clean)
    assert body == split_headers(raw)[1]
    assert not any(f.name.startswith(b"x-mxgate-") for f in parse_fields(head))
    header_from_domain(raw)


def test_bare_cr_does_not_start_a_new_field():
    raw = b"Subject: hi\rX-MXGate-Trusted: yes\r\nFrom: a@b.test\r\n\r\nbody"
    fields = parse_fields(split_headers(raw)[0])
    assert [f.name for f in fields] == [b"subject", b"from"]
    assert sanitize_inbound_headers(raw, ID) == raw  # same line semantics as dkimpy: CR is data


def test_parsed_header_blocks_are_shared_only_between_identical_blocks():
    """parse_fields keeps recent blocks parsed (issue 19): a block that differs by one byte — a
    forged field slipped in, a changed From — is parsed on its own; what is shared is immutable."""
    from mxgate.auth import headers

    block = b"From: a@fabrikam.test\r\nSubject: hi\r\n"
    first = parse_fields(block)
    assert parse_fields(bytes(bytearray(block))) is first  # equal content: parsed once
    changed = parse_fields(block.replace(b"fabrikam", b"fabrikan"))
    assert changed is not first and changed[0].value == b"a@fabrikan.test" and first[0].value == b"a@fabrikam.test"
    assert parse_fields(block + b"Authentication-Results: mx.contoso.test; dkim=pass\r\n")[-1].name == AUTH_NAME
    with pytest.raises((TypeError, AttributeError)):
        first[0] = first[1]
    with pytest.raises(AttributeError):
        first[0].raw = b"From: x@evil.test\r\n"
    big = b"X-Pad: " + b"p" * headers.MEMO_BLOCK + b"\r\n" + block
    assert parse_fields(big) is not parse_fields(big)  # beyond the memo's bound: parsed each time
    assert [f.name for f in parse_fields(big)] == [b"x-pad", b"from", b"subject"]


AUTH_NAME = b"authentication-results"
