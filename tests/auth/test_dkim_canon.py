"""The remembered relaxed header canonicalisation (auth/dkim_canon.py) is dkimpy's, byte for byte
(RFC 6376 §3.4.2), on every short mix of folding, whitespace and stray CR/LF, twice (the second
time from the cache), and on values too large to remember."""

from __future__ import annotations

import itertools
import random

import dkim.canonicalization as canon

from mxgate.auth import dkim_canon
from mxgate.auth.dkim import verify_dkim  # noqa: F401  (installs it, as the gateway's import does)

PIECES = (b" ", b"\t", b"\r\n", b"\n", b"\r", b"a", b"\r\n ", b"\r\n\t", b"  ")


def _dkimpy(headers):
    return dkim_canon.ORIGINAL.__func__(headers)


def test_installed_for_dkimpy():
    assert canon.Relaxed.canonicalize_headers is dkim_canon.canonicalize_headers
    assert canon.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_headers(
        [(b"Subject ", b" a \r\n b\r\n")]) == [(b"subject", b"a b\r\n")]


def test_byte_identical_to_dkimpy_on_every_short_value():
    for n in range(5):
        for parts in itertools.product(PIECES, repeat=n):
            value = b"".join(parts)
            headers = [(b"X-Test", value), (b"SUBJECT \t", b" " + value + b"\r\n")]
            expected = _dkimpy(headers)
            assert dkim_canon.canonicalize_headers(headers) == expected, value
            assert dkim_canon.canonicalize_headers(headers) == expected, value  # from the cache


def test_byte_identical_on_long_and_odd_values():
    rng = random.Random(19)
    for size in (100, dkim_canon.MAX_REMEMBERED, dkim_canon.MAX_REMEMBERED + 1, 50_000):
        value = b"".join(rng.choice(PIECES + (b"x", b"y=z;", b"\xc3\xa9")) for _ in range(size // 2))[:size]
        headers = [(b"Received", value), [b"List", value]]
        assert dkim_canon.canonicalize_headers(headers) == _dkimpy(headers)
    odd = [(b"X", bytearray(b" a\r\n  b ")), (b"Y", memoryview(b"\tc\t"))]  # not bytes: computed, not cached
    assert dkim_canon.canonicalize_headers(odd) == _dkimpy(odd)


# The signature field with its b= value emptied (RFC 6376 §3.7): ours must cut exactly what
# dkimpy's pattern cuts, or a signer could make the two disagree on what was signed.
BTAG_PIECES = (b"b", b"=", b";", b" ", b"\t", b"\r\n", b"\n", b"\r", b"A", b"/", b"\r\n ", b"bh", b"-", b"\x0b")


def test_btag_cut_is_dkimpys_on_every_short_field():
    import dkim

    assert dkim.RE_BTAG is dkim_canon.RE_BTAG
    for n in range(6):
        for parts in itertools.product(BTAG_PIECES, repeat=n):
            field = b"".join(parts)
            assert dkim_canon.RE_BTAG.sub(b"\\1", field) == dkim_canon.ORIGINAL_BTAG.sub(b"\\1", field), field


def test_btag_cut_is_dkimpys_on_long_random_fields():
    rng = random.Random(19)
    for _ in range(3000):
        field = b" v=1; a=rsa-sha256;" + b"".join(rng.choice(BTAG_PIECES + (b"Zm9v", b" b = ")) for _ in range(60))
        assert dkim_canon.RE_BTAG.sub(b"\\1", field) == dkim_canon.ORIGINAL_BTAG.sub(b"\\1", field), field


MESSAGE_PIECES = (b"a", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"From ", b"X-A: b")


def _parse_outcome(parse, message):
    import dkim

    try:
        return parse(message)
    except dkim.MessageFormatError as exc:
        return ("MessageFormatError", str(exc))
    except IndexError:  # dkimpy's own, for a continuation line before any field
        return ("IndexError",)


def test_message_parse_is_dkimpys_on_every_short_message():
    import dkim

    assert dkim.rfc822_parse is dkim_canon.rfc822_parse
    for n in range(6):
        for parts in itertools.product(MESSAGE_PIECES, repeat=n):
            message = b"".join(parts)
            assert (_parse_outcome(dkim_canon.rfc822_parse, message)
                    == _parse_outcome(dkim_canon.ORIGINAL_PARSE, message)), message


def test_message_parse_is_dkimpys_on_long_random_messages():
    rng = random.Random(19)
    pieces = MESSAGE_PIECES + (b"Subject: x\r\n", b"\r\n\r\n", b"\n\n", b"body line\r\n", b"\r\r\n")
    for _ in range(3000):
        message = b"From: a@b\r\n" + b"".join(rng.choice(pieces) for _ in range(40))
        assert (_parse_outcome(dkim_canon.rfc822_parse, message)
                == _parse_outcome(dkim_canon.ORIGINAL_PARSE, message)), message


# The relaxed body (RFC 6376 §3.4.4), and the parses remembered for the next check of the same bytes.
BODY_PIECES = (b" ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"  ", b" \r\n")


def test_relaxed_body_is_dkimpys_on_every_short_body():
    assert canon.Relaxed.canonicalize_body is dkim_canon.canonicalize_body
    original = dkim_canon.ORIGINAL_BODY.__func__
    for n in range(7):
        for parts in itertools.product(BODY_PIECES, repeat=n):
            body = b"".join(parts)
            assert dkim_canon.canonicalize_body(body) == original(body), body


def test_relaxed_body_is_dkimpys_on_long_random_bodies():
    original = dkim_canon.ORIGINAL_BODY.__func__
    rng = random.Random(19)
    for _ in range(2000):
        body = b"".join(rng.choice(BODY_PIECES + (b"word", b"\x0b", b"\xa0", b"\r\n\r\n")) for _ in range(80))
        assert dkim_canon.canonicalize_body(body) == original(body), body
    for body in (b"", b"\r\n" * 10_000, b"x" * 100_000, b"a \t b\r\n" * 5000):
        assert dkim_canon.canonicalize_body(body) == original(body)


def test_a_remembered_parse_is_not_changed_by_what_a_caller_does_with_its_copy():
    message = b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n"
    headers, body = dkim_canon.rfc822_parse(message)
    headers[0][1] = b" forged\r\n"
    headers.append([b"X-Added", b" 1\r\n"])
    assert dkim_canon.rfc822_parse(message) == dkim_canon.ORIGINAL_PARSE(message)
    # Same prefix, another message: its own parse.
    other = message.replace(b"body", b"other")
    assert dkim_canon.rfc822_parse(other) == dkim_canon.ORIGINAL_PARSE(other)


def test_the_parse_cache_is_bounded_and_keeps_no_failures_or_huge_messages():
    for i in range(dkim_canon.PARSED_MESSAGES * 3):
        dkim_canon.rfc822_parse(b"X-N: %d\r\n\r\nb\r\n" % i)
    assert len(dkim_canon._parsed_messages) <= dkim_canon.PARSED_MESSAGES
    bad = b"From: a\r\nnot a header\r\n\r\n"
    for _ in range(2):  # raises each time, as dkimpy does
        assert _parse_outcome(dkim_canon.rfc822_parse, bad) == _parse_outcome(dkim_canon.ORIGINAL_PARSE, bad)
    assert bad not in dkim_canon._parsed_messages
    huge = b"Subject: x\r\n\r\n" + b"y" * dkim_canon.MAX_PARSED_MESSAGE
    assert dkim_canon.rfc822_parse(huge) == dkim_canon.ORIGINAL_PARSE(huge)
    assert huge not in dkim_canon._parsed_messages
    odd = bytearray(b"Subject: x\r\n\r\nz")  # not bytes: parsed, not kept
    assert dkim_canon.rfc822_parse(odd) == dkim_canon.ORIGINAL_PARSE(odd)


def test_dkimpys_unfolding_sub_is_res_on_every_byte_and_short_mix():
    import re

    import dkim

    assert dkim.re is dkim_canon.RE_FOR_DKIMPY
    shim = dkim_canon.RE_FOR_DKIMPY
    for byte in range(256):  # bytes.split() and a bytes \s agree on every byte value
        value = b"a" + bytes([byte]) + b"b" + bytes([byte])
        assert shim.sub(rb"\s+", b"", value) == re.sub(rb"\s+", b"", value), byte
    pieces = (b"A", b"/", b"=", b" ", b"\t", b"\r\n ", b"\x0b", b"\x0c", b"\xa0", b"\x85", b"\x1c")
    for n in range(5):
        for parts in itertools.product(pieces, repeat=n):
            value = b"".join(parts)
            assert shim.sub(rb"\s+", b"", value) == re.sub(rb"\s+", b"", value), value
            expected = re.match(rb"[\s0-9A-Za-z+/]+[\s=]*$", value)
            for _ in range(2):  # the second answer from the cache
                got = shim.match(rb"[\s0-9A-Za-z+/]+[\s=]*$", value)
                assert (got is None) == (expected is None) and (got is None or got.span() == expected.span()), value
    # Any other call is re's own, flags and counts included.
    assert shim.sub(rb"\s+", b"-", b"a  b") == b"a-b" and shim.sub(rb"\s+", b"", b"a b c", 1) == b"ab c"
    assert shim.sub(r"\s+", "", "a \u2003b") == "ab" and shim.split(rb"\s*:\s*", b"a : b") == [b"a", b"b"]
    assert shim.match(rb"[\s0-9A-Za-z+/]+[\s=]*$", b"x" * 5000) is not None
    assert shim.match(rb"\d+$", b"12x") is None and shim.findall(rb"[;@]", b"a;b@") == [b";", b"@"]


def test_a_kept_relaxed_body_is_only_ever_the_same_bodys():
    original = dkim_canon.ORIGINAL_BODY.__func__
    one, other = b"a  b \r\n\r\n", b"a \tc \r\n\r\n"  # same length, other content
    assert len(one) == len(other)
    for body in (one, other, one, bytes(bytearray(other)), one + b"x"):
        assert dkim_canon.canonicalize_body(body) == original(body)
    for i in range(dkim_canon.PARSED_MESSAGES * 3):
        dkim_canon.canonicalize_body(b"line %d  \r\n" % i)
    assert len(dkim_canon._bodies) <= dkim_canon.PARSED_MESSAGES
    huge = b"x  y\r\n" * (dkim_canon.MAX_PARSED_MESSAGE // 6 + 1)
    assert dkim_canon.canonicalize_body(huge) == original(huge)
    assert all(seen is not huge for seen, _ in dkim_canon._bodies)


def test_dkimpys_h_list_split_is_res_on_every_short_list():
    import re

    shim = dkim_canon.RE_FOR_DKIMPY
    pieces = (b"a", b":", b" ", b"\t", b"\r\n", b"\x0b", b"\x0c", b"\xa0", b"From", b"::")
    for n in range(6):
        for parts in itertools.product(pieces, repeat=n):
            value = b"".join(parts)
            assert shim.split(rb"\s*:\s*", value) == re.split(rb"\s*:\s*", value), value
    assert shim.split(rb"\s*:\s*", b"a : b : c", 1) == [b"a", b"b : c"]  # maxsplit: re's own
    assert shim.split(r"\s*:\s*", "a :\u2003b") == ["a", "b"]


def test_btag_cut_without_sre_is_taken_for_real_fields_and_equals_dkimpys():
    """The sre-free cut (dkim_canon._cut_btag) must answer for fields as signers write them (b=
    last, folded), and equal dkimpy's pattern there and on near misses: a second b=, text
    after b=, `b =`, b= first, WSP and CR/LF runs at the end, non-base64 bytes in b=."""
    rng = random.Random(6376)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    taken = 0
    for _ in range(3000):
        sig = bytes(rng.choice(alphabet) for _ in range(rng.choice((0, 4, 172, 344))))
        folded = b"\r\n\t".join(sig[i:i + 60] for i in range(0, len(sig), 60)) if rng.random() < 0.5 else sig
        head = rng.choice((b" v=1; a=rsa-sha256; d=x.test; h=from:to; bh=AAAA;", b" i=1; cv=none; d=x.test;",
                           b" v=1; bh=abc=\r\n b=;", b"", b" z=From:a|Subject:b=3Dx;", b" h=from:\r\n b"))
        field = head + rng.choice((b" b=", b"\r\n b=", b"\tb =", b";b=", b" b=\r\n ")) + folded + \
            rng.choice((b"", b"\r\n", b"\n", b" \r\n", b"==\r\n", b"; t=1\r\n", b"\r", b"!", b" \t", b"\r\n\r\n"))
        expected = dkim_canon.ORIGINAL_BTAG.sub(b"\\1", field)
        assert dkim_canon.RE_BTAG.sub(b"\\1", field) == expected, field
        taken += dkim_canon._cut_btag(field) is not None
    assert taken > 1500


# Issue 19, P3 (session 5): dkimpy's parse read off the mailbox's own header parse
# (headers.parse_fields), kept for the ARC verification of the same bytes.
_FIELD_PIECES = (b"a", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"From ", b"X-A: b", b"X-A :b", b"\xff",
                 b"Subject: x\r\n", b"\r\n\r\n", b"\n\n", b"\r\r\n", b"\n\r\n", b" cont\r\n", b"\tcont\n")


def _remembered_outcome(message):
    from mxgate.auth.headers import parse_fields, split_headers

    dkim_canon._parsed_messages.clear()
    head, body = split_headers(message)
    taken = dkim_canon.remember_parse(message, parse_fields(head), body)
    return taken, _parse_outcome(dkim_canon.rfc822_parse, message)


def test_a_parse_read_off_our_fields_is_dkimpys_on_every_short_message():
    taken_count = 0
    for n in range(5):
        for parts in itertools.product(_FIELD_PIECES, repeat=n):
            for message in (b"".join(parts), b"X-B: c\r\n" + b"".join(parts)):
                taken, outcome = _remembered_outcome(message)
                taken_count += taken
                assert outcome == _parse_outcome(dkim_canon.ORIGINAL_PARSE, message), message
    assert taken_count > 10_000  # the derived parse was what was compared, most of the time


def test_a_parse_read_off_our_fields_is_dkimpys_on_long_random_messages():
    rng = random.Random(5)
    taken_count = 0
    for _ in range(4000):
        message = b"From: a@b\r\n" + b"".join(rng.choice(_FIELD_PIECES) for _ in range(rng.randrange(1, 50)))
        taken, outcome = _remembered_outcome(message)
        taken_count += taken
        assert outcome == _parse_outcome(dkim_canon.ORIGINAL_PARSE, message), message
    assert taken_count > 300


def test_a_p3_message_is_parsed_once_for_the_arc_verification(monkeypatch):
    """The gateway-relayed shape (ARC set, stamps, Received, DKIM-Signature, CRLF): validate_arc
    hands dkimpy's parse over from its own, and dkimpy's own parse is not run for it."""
    from mxgate.auth.arc import validate_arc

    message = (b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=mxgate.test; s=s; t=1; b=AAAA\r\n"
               b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=mxgate.test; s=s;\r\n"
               b" t=1; h=from; bh=AAAA; b=AAAA\r\n"
               b"ARC-Authentication-Results: i=1; gw.test; spf=pass smtp.mailfrom=a.test\r\n"
               b"Received: from x ([192.0.2.1])\r\n\tby gw.test; Wed, 02 Dec 2026 11:50:19 GMT\r\n"
               b"From: <a@a.test>\r\nSubject: s\r\n\r\nbody \r\n\r\n")
    expected = dkim_canon.ORIGINAL_PARSE(message)
    dkim_canon._parsed_messages.clear()
    calls = []
    real = dkim_canon._parse
    monkeypatch.setattr(dkim_canon, "_parse", lambda m: calls.append(m) or real(m))
    validate_arc(message, lambda name, timeout=5: None)
    assert calls == [] and dkim_canon.rfc822_parse(message) == expected
