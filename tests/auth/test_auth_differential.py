"""Verdicts with the faster parts (auth/dkim_canon.py, dkim_tags.py) are the verdicts of dkimpy's
own code, on good messages and on hostile variants of them: folded and duplicate fields, l=,
mixed case, oversize fields, malformed base64, bare CR/LF, broken ARC sets (issue 19: the CPU
may change, a verdict may not). Each message is checked twice: the second time from the caches."""

from __future__ import annotations

import contextlib

import dkim as dkimpy
import dkim.canonicalization as canon
import pytest

from mxgate.auth import arc as arc_module
from mxgate.auth import dkim as dkim_module
from mxgate.auth import dkim_canon, dkim_fast, dkim_tags
from mxgate.auth.arc import seal_arc, validate_arc
from mxgate.auth.dkim import verify_dkim


@contextlib.contextmanager
def dkimpy_own_code():
    """Every dkimpy function the auth package swaps, put back as dkimpy ships it, and dkimpy's
    verify flow for every signature (dkim_fast off). RSA through OpenSSL stays: its own tests
    compare it with dkimpy's."""
    saved = (dkimpy.parse_tag_value, dkimpy.evaluate_pk, dkimpy.rfc822_parse, dkimpy.RE_BTAG,
             canon.Relaxed.__dict__["canonicalize_body"], canon.Relaxed.__dict__["canonicalize_headers"],
             arc_module.parse_tag_value, dkim_module.parse_tag_value, dkimpy.re)
    dkimpy.re = dkim_canon.ORIGINAL_RE
    dkimpy.parse_tag_value = arc_module.parse_tag_value = dkim_module.parse_tag_value = dkim_tags.ORIGINAL_PARSE
    dkimpy.evaluate_pk, dkimpy.rfc822_parse = dkim_tags.ORIGINAL_EVALUATE, dkim_canon.ORIGINAL_PARSE
    dkimpy.RE_BTAG = dkim_canon.ORIGINAL_BTAG
    canon.Relaxed.canonicalize_body, canon.Relaxed.canonicalize_headers = dkim_canon.ORIGINAL_BODY, dkim_canon.ORIGINAL
    dkim_fast.ENABLED = False
    try:
        yield
    finally:
        dkim_fast.ENABLED = True
        (dkimpy.parse_tag_value, dkimpy.evaluate_pk, dkimpy.rfc822_parse, dkimpy.RE_BTAG,
         canon.Relaxed.canonicalize_body, canon.Relaxed.canonicalize_headers,
         arc_module.parse_tag_value, dkim_module.parse_tag_value, dkimpy.re) = saved


@pytest.fixture(scope="module")
def signed(dkim_keys):
    """(messages signed and sealed in several ways, dnsfunc)."""
    (key, txt), (arc_key, arc_txt) = dkim_keys
    records = {"s1._domainkey.fabrikam.test": txt, "arc._domainkey.gw.test": arc_txt,
               "arc._domainkey.lists.test": arc_txt}

    def dnsfunc(name, timeout=5.0):
        name = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        return records[name].encode() if name in records else None

    body = b"Hello  there,\t\r\nthe numbers \r\n\r\nare in.   \r\n\r\n\r\n"
    message = (b"From: Alice <alice@fabrikam.test>\r\nTo: bob@contoso.test\r\nSubject: quarterly\r\n"
               b" numbers\r\nDate: Mon, 02 Jun 2025 10:00:00 +0000\r\nMessage-ID: <m1@fabrikam.test>\r\n\r\n" + body)
    out = []
    for canonicalize, length in (((b"relaxed", b"simple"), False), ((b"relaxed", b"relaxed"), True),
                                 ((b"simple", b"simple"), True), ((b"simple", b"relaxed"), False)):
        sig = dkimpy.sign(message, b"s1", b"fabrikam.test", key, canonicalize=canonicalize, length=length)
        dkim_signed = sig + message
        ar1 = "gw.test; dkim=pass header.d=fabrikam.test; arc=none"
        once = seal_arc(dkim_signed, "gw.test", "gw.test", "arc", arc_key, ar1) + \
            b"Authentication-Results: " + ar1.encode() + b"\r\n" + dkim_signed
        ar2 = "lists.test; dkim=pass header.d=fabrikam.test; arc=pass"
        twice = seal_arc(once, "lists.test", "lists.test", "arc", arc_key, ar2) + \
            b"Authentication-Results: " + ar2.encode() + b"\r\n" + once
        out += [dkim_signed, once, twice]
    return out, dnsfunc


def _variants(message: bytes):
    head, _, body = message.partition(b"\r\n\r\n")
    yield message
    yield message.replace(b"\r\n", b"\n")  # bare LF
    yield message.replace(b"\r\n", b"\r\r\n", 1)  # a stray CR
    yield message.replace(b"Subject:", b"SUBJECT :")  # mixed case, space before the colon
    yield message.replace(b"DKIM-Signature:", b"dkim-signature:")
    yield message.replace(b"Subject: quarterly", b"Subject:  quarterly\r\n\t")  # refolded
    yield b"From: Mallory <m@evil.test>\r\n" + message  # a second From on top
    yield message.replace(b"\r\nTo:", b"\r\nFrom: second@evil.test\r\nTo:")
    yield head + b"\r\n\r\n" + body + b"appended after the signer\r\n"  # l= covers only the start
    yield head + b"\r\n\r\n" + body.replace(b"  ", b" \t ") + b"\r\n\r\n"  # whitespace only
    yield head + b"\r\n\r\n" + body.rstrip(b"\r\n")
    yield head + b"\r\n\r\n"  # body removed
    yield head + b"\r\nX-Big: " + b"a " * 20_000 + b"\r\n\r\n" + body  # oversize field
    yield message.replace(b"b=", b"b=!", 1)  # malformed base64 in the first b=
    yield message.replace(b"bh=", b"bh=AAAA", 1)
    yield message.replace(b"; b=", b"; b=\r\n ", 1)
    yield message.replace(b"; b=", b"; b=\x0b\x0c", 1)  # whitespace only a bytes \s knows
    yield message.replace(b"; bh=", b"; bh=\t\x0b", 1)
    yield message.replace(b"; b=", b"; b=\xa0", 1)  # not ASCII whitespace
    yield message.replace(b"d=fabrikam.test", b"d=Fabrikam.TEST", 1)
    yield message.replace(b"s=s1", b"s=S1", 1)
    yield message.replace(b"l=", b"l=9", 1)
    yield message.replace(b"i=1;", b"i=01;", 1)
    yield message.replace(b"i=2;", b"i=1;", 1)  # two sets claim instance 1
    yield message.replace(b"cv=pass", b"cv=fail", 1)
    yield message.replace(b"cv=none", b"cv=pass", 1)
    yield message.replace(b"ARC-Seal:", b"ARC-Seal: i=3;\r\nARC-Seal:", 1)  # a field with no set
    first_ams = message.find(b"ARC-Message-Signature:")
    if first_ams >= 0:  # the AMS duplicated
        end = message.find(b"\r\n", message.find(b"b=", first_ams))
        yield message[:end + 2] + message[first_ams:end + 2] + message[end + 2:]
    yield message.replace(b"\r\n", b"\r\n\x00", 1)
    yield message.replace(b"\r\n\r\n", b"\r\n \r\n\r\n", 1)  # a whitespace-only continuation


def test_dkim_and_arc_verdicts_equal_dkimpys_own_on_hostile_variants(signed):
    messages, dnsfunc = signed
    compared = 0
    for message in messages:
        for variant in _variants(message):
            with dkimpy_own_code():
                expected = (verify_dkim(variant, dnsfunc), validate_arc(variant, dnsfunc))
            for _ in range(2):
                assert (verify_dkim(variant, dnsfunc), validate_arc(variant, dnsfunc)) == expected, variant[:300]
            compared += 1
    assert compared > 300
    # The good ones must actually pass, or the comparison proves little.
    with dkimpy_own_code():
        assert all(r.result == "pass" for m in messages for r in verify_dkim(m, dnsfunc))
    assert [validate_arc(m, dnsfunc).status for m in messages] == ["none", "pass", "pass"] * 4


def test_the_originals_are_back_after_the_comparison():
    assert dkimpy.parse_tag_value is dkim_tags.parse_tag_value
    assert dkimpy.rfc822_parse is dkim_canon.rfc822_parse
    assert canon.Relaxed.canonicalize_body is dkim_canon.canonicalize_body
    assert dkimpy.re is dkim_canon.RE_FOR_DKIMPY
