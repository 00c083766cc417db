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
