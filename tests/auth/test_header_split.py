"""Where the header section ends: the first empty line, as the regex `\\r?\\n\\r?\\n` found it.

headers._header_end finds it with bytes.find (issue 19: the regex cost ~80 µs per call on the
mailbox's ARC path). An attacker chooses the line endings: a split that differs from what
dkimpy or the other checks see would let a header hide in the "body" of one reader and not of
another, so the cut must be exactly the regex's, whatever mix of CR, LF and CRLF arrives.
"""
from __future__ import annotations

import itertools
import re

from hypothesis import given, settings, strategies as st

from mxgate.auth.headers import _split, header_length

_REGEX = re.compile(rb"\r?\n\r?\n")


def _by_regex(message: bytes) -> tuple[bytes, bytes, bytes]:
    """The reference: the split as it was done before (a regex search)."""
    if message.startswith((b"\r\n", b"\n")):
        sep = b"\r\n" if message.startswith(b"\r\n") else b"\n"
        return b"", sep, message[len(sep):]
    m = _REGEX.search(message)
    if m is None:
        return message, b"", b""
    head_end = message.index(b"\n", m.start()) + 1
    return message[:head_end], message[head_end:m.end()], message[m.end():]


def test_every_short_mix_of_line_endings_splits_as_the_regex():
    for n in range(1, 8):
        for chars in itertools.product((b"a", b"\r", b"\n", b" "), repeat=n):
            message = b"".join(chars)
            assert _split(message) == _by_regex(message), message
            assert header_length(message) == len(_by_regex(message)[0]), message


def test_lf_lf_right_after_a_crlf_pair_is_cut_at_the_first_lf():
    # "\n\r\n\n": the regex matches "\n\r\n" at offset 0, before the bare "\n\n" at offset 2.
    message = b"A: 1\n\r\n\nbody"
    assert _split(message) == (b"A: 1\n", b"\r\n", b"\nbody")


@settings(max_examples=400)
@given(st.lists(st.sampled_from([b"X: y", b"\r\n", b"\n", b"\r", b" ", b"\t", b"b=abc"]), max_size=30))
def test_random_header_sections_split_as_the_regex(parts):
    message = b"".join(parts)
    assert _split(message) == _by_regex(message)
    assert header_length(message) == len(_by_regex(message)[0])


def _fields_by_findall(header_block: bytes):
    """The parse as it was before issue 19's session 3 (the oracle for the faster one)."""
    from mxgate.auth.headers import _FIELD_NAME, _LINE, HeaderField

    fields = []
    for line in _LINE.findall(header_block):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = HeaderField(fields[-1].name, fields[-1].raw + line)
            continue
        name, colon, _ = line.partition(b":")
        name = name.rstrip(b" \t")
        valid = colon and _FIELD_NAME.match(name)
        fields.append(HeaderField(name.lower() if valid else b"", line))
    return tuple(fields)


_FIELD_PIECES = (b"a", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"X-A: b", b"\xff", b"\r\n ", b"From")


def test_fields_are_the_findall_parses_on_every_short_block():
    import itertools

    from mxgate.auth.headers import _parse_fields

    for n in range(6):
        for parts in itertools.product(_FIELD_PIECES, repeat=n):
            block = b"".join(parts)
            assert _parse_fields(block) == _fields_by_findall(block), block


def test_fields_are_the_findall_parses_on_long_random_blocks():
    import random

    from mxgate.auth.headers import _parse_fields, parse_fields

    rng = random.Random(19)
    for _ in range(3000):
        block = b"".join(rng.choice(_FIELD_PIECES + (b"Received: from x\r\n\tby y\r\n", b"\x00", b"\n\n"))
                         for _ in range(rng.randrange(1, 60)))
        assert _parse_fields(block) == _fields_by_findall(block), block
        assert parse_fields(block) == _fields_by_findall(block)
