"""The remembered tag-list parse and key-record evaluation (auth/dkim_tags.py): a sender can
neither steer a verdict through them nor make them disagree with dkimpy's own functions.

Attacker's tests first: the key record is remembered by its TXT text only, so a revoked,
rotated or unreachable key takes effect on the next message exactly as it did before; callers
that change what they got back change nothing for the next one; errors are dkimpy's own."""

from __future__ import annotations

import base64
import itertools
import random

import dkim as dkimpy
import pytest

from mxgate.auth import dkim_tags
from mxgate.auth.dkim import sign_dkim, verify_dkim
from mxgate.auth.dns import DnsTemporaryError


def _outcome(function, *args):
    try:
        return ("ok", function(*args))
    except Exception as exc:  # noqa: BLE001 - the comparison is of whatever dkimpy raises
        return (type(exc).__name__, str(exc))


class _Records:
    """A dnsfunc whose answers the test changes between messages, counting the lookups."""

    def __init__(self):
        self.records: dict[str, object] = {}
        self.lookups = 0

    def __call__(self, name, timeout=5.0):
        self.lookups += 1
        name = name.decode() if isinstance(name, bytes) else name
        answer = self.records.get(name.rstrip(".").lower())
        if isinstance(answer, Exception):
            raise answer
        return answer.encode() if answer else None


def test_a_revoked_rotated_or_unreachable_key_takes_effect_on_the_next_message(dkim_keys, make_message):
    (key, txt), (_other_key, other_txt) = dkim_keys
    message = make_message()
    signed = sign_dkim(message, "fabrikam.test", "s1", key) + message
    dns = _Records()
    dns.records["s1._domainkey.fabrikam.test"] = txt
    assert verify_dkim(signed, dns)[0].result == "pass"
    assert verify_dkim(signed, dns)[0].result == "pass"  # the second time from the cache
    steps = [
        ("v=DKIM1; k=rsa; p=", "permerror"),  # revoked (RFC 6376 §3.6.1)
        (DnsTemporaryError("SERVFAIL"), "temperror"),  # a DNS error is never a remembered pass
        (None, "permerror"),  # the record removed
        (other_txt, "fail"),  # rotated to another key
        (txt, "pass"),
    ]
    for answer, expected in steps:
        dns.records["s1._domainkey.fabrikam.test"] = answer
        before = dns.lookups
        assert verify_dkim(signed, dns)[0].result == expected, answer
        assert dns.lookups == before + 1  # every message asks the resolver (its TTL decides)


def test_a_record_for_one_selector_never_stands_for_another(dkim_keys, make_message):
    (key, txt), (other_key, other_txt) = dkim_keys
    message = make_message()
    dns = _Records()
    dns.records["s1._domainkey.fabrikam.test"] = txt
    dns.records["s2._domainkey.fabrikam.test"] = other_txt
    by_s1 = sign_dkim(message, "fabrikam.test", "s1", key) + message
    claims_s2 = sign_dkim(message, "fabrikam.test", "s2", key) + message  # s2's key is another
    assert verify_dkim(by_s1, dns)[0].result == "pass"
    assert verify_dkim(claims_s2, dns)[0].result == "fail"


def test_what_a_caller_changes_is_not_seen_by_the_next_one(dkim_keys):
    field = b" v=1; a=rsa-sha256; d=fabrikam.test; s=s1; h=from; bh=AAAA; b=BBBB"
    first = dkim_tags.parse_tag_value(field)
    first[b"c"] = b"relaxed/relaxed"  # what dkimpy does to an ARC signature's dict
    first[b"d"] = b"attacker.test"
    assert dkim_tags.parse_tag_value(field) == dkim_tags.ORIGINAL_PARSE(field)
    record = dkim_keys[0][1].encode()
    pk, bits, ktag, tlsrpt = dkim_tags.evaluate_pk(b"name", record)
    pk["modulus"] = 3
    again = dkim_tags.evaluate_pk(b"name", record)
    assert again[0] == dkim_tags.ORIGINAL_EVALUATE(b"name", record)[0] and again[1:] == (bits, ktag, tlsrpt)


def test_installed_for_dkimpy():
    assert dkimpy.parse_tag_value is dkim_tags.parse_tag_value
    assert dkimpy.evaluate_pk is dkim_tags.evaluate_pk


TAG_PIECES = (b"a", b"=", b";", b" ", b"\t", b"\r\n ", b"b", b"1", b"\xff", b"a=b", b"A", b"_", b"\x0b")


def test_tag_lists_parse_as_dkimpy_parses_them_every_short_mix_twice():
    for n in range(5):
        for parts in itertools.product(TAG_PIECES, repeat=n):
            value = b"".join(parts)
            expected = _outcome(dkim_tags.ORIGINAL_PARSE, value)
            assert _outcome(dkim_tags.parse_tag_value, value) == expected, value
            assert _outcome(dkim_tags.parse_tag_value, value) == expected, value  # from the cache
    rng = random.Random(19)
    for _ in range(30_000):
        value = b"".join(rng.choice(TAG_PIECES + (b"bh", b"; ", b"==", b"\xc3\xa9")) for _ in range(rng.randrange(6, 16)))
        assert _outcome(dkim_tags.parse_tag_value, value) == _outcome(dkim_tags.ORIGINAL_PARSE, value), value


def test_long_odd_and_non_bytes_tag_lists_parse_as_dkimpy_does():
    rng = random.Random(19)
    for size in (200, dkim_tags.MAX_REMEMBERED, dkim_tags.MAX_REMEMBERED + 1, 40_000):
        value = b"".join(rng.choice(TAG_PIECES + (b"; x=", b"bh=Zm9v")) for _ in range(size))[:size]
        assert _outcome(dkim_tags.parse_tag_value, value) == _outcome(dkim_tags.ORIGINAL_PARSE, value)
    big = b"; ".join(b"t%d=%d" % (i, i) for i in range(2000))
    before = dkim_tags._parsed.cache_info().currsize
    assert dkim_tags.parse_tag_value(big) == dkim_tags.ORIGINAL_PARSE(big)
    assert dkim_tags._parsed.cache_info().currsize == before  # too large to remember
    assert dkim_tags._parsed.cache_info().maxsize == dkim_tags.TAG_LISTS  # bounded


def _records(dkim_keys):
    txt = dkim_keys[0][1]
    p = txt.split("p=", 1)[1]
    return [
        txt, txt.encode(), b"", None, b"p=", b"v=DKIM1; p=", b"v=DKIM2; p=" + p.encode(),
        b"v=DKIM1; k=rsa", b"p=!!!notbase64", b"p=" + base64.b64encode(b"not a key"),
        b"v=DKIM1; k=dsa; p=" + p.encode(), b"v=DKIM1; k=ed25519; p=AAAA",
        b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(32)),
        b"v=DKIM1; s=tlsrpt; p=" + p.encode(), b"v=DKIM1; s=web; p=" + p.encode(),
        b"v=DKIM1; s=*; t=y; p=" + p.encode(), b"v=DKIM1; p=" + p.encode() + b"; p=" + p.encode(),
        b"v=DKIM1;; p=" + p.encode(), b"p=" + p.encode()[:-8], b"V=DKIM1; P=" + p.encode(),
        b"p=" + p.encode() + b" " * 5000,
    ]


def test_key_records_evaluate_as_dkimpy_evaluates_them_twice(dkim_keys):
    for record in _records(dkim_keys):
        expected = _outcome(dkim_tags.ORIGINAL_EVALUATE, b"s._domainkey.d.", record)
        for _ in range(2):
            got = _outcome(dkim_tags.evaluate_pk, b"s._domainkey.d.", record)
            if expected[0] == "ok" and expected[1][2] == b"ed25519":  # nacl keys compare by bytes
                assert bytes(got[1][0]) == bytes(expected[1][0]) and got[1][1:] == expected[1][1:]
            else:
                assert got == expected, record


@pytest.mark.parametrize("junk", [b"\r\n", b"\x00", b"p=;", b"=", b";;;", b"; p=;", b"x"])
def test_a_signature_with_a_hostile_key_record_gets_the_verdict_it_got_before(dkim_keys, make_message, junk):
    (key, txt), _ = dkim_keys
    message = make_message()
    signed = sign_dkim(message, "fabrikam.test", "s1", key) + message
    dns = _Records()
    dns.records["s1._domainkey.fabrikam.test"] = txt + junk.decode("latin-1")
    ours = verify_dkim(signed, dns)
    saved = dkimpy.parse_tag_value, dkimpy.evaluate_pk
    dkimpy.parse_tag_value, dkimpy.evaluate_pk = dkim_tags.ORIGINAL_PARSE, dkim_tags.ORIGINAL_EVALUATE
    try:
        theirs = verify_dkim(signed, dns)
    finally:
        dkimpy.parse_tag_value, dkimpy.evaluate_pk = saved
    assert ours == theirs


def test_a_key_record_that_is_not_base64_is_permerror_not_an_exception(dkim_keys, make_message):
    (key, txt), _ = dkim_keys
    message = make_message()
    signed = sign_dkim(message, "fabrikam.test", "s1", key) + message
    dns = _Records()
    dns.records["s1._domainkey.fabrikam.test"] = txt + "; p=;"  # binascii.Error inside dkimpy
    assert verify_dkim(signed, dns)[0].result == "permerror"
