"""HeaderField.value (a field's unfolded value) is the same with issue 19's one-line shortcut as
the unfolding regex gives, on fields a sender writes: every short mix of the bytes that matter."""

import itertools
import random

from mxgate.auth.headers import _UNFOLD, HeaderField, parse_fields


def reference(raw: bytes) -> bytes:
    """The replaced code, as it was."""
    _, _, rest = raw.partition(b":")
    return _UNFOLD.sub(b"", rest).strip()


def test_every_short_field():
    pieces = [b"a", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n ", b"\n\t", b"\x0b", b"\xff", b"\r\n\r\n"]
    for size in range(0, 6):
        for parts in itertools.product(pieces, repeat=size):
            raw = b"Subject" + b"".join(parts)
            assert HeaderField(b"subject", raw).value == reference(raw), raw


def test_the_fields_of_random_header_blocks():
    rng = random.Random(19)
    for _ in range(3000):
        block = b"".join(rng.choice([b"From: a@b\r\n", b"X: 1\n", b" folded\r\n", b"\tmore\n", b"Y:\r\n",
                                     b"Z: v \r\n", b"junk line\r\n", b"W: x\ry\r\n", b"V: x\n\n", b"U: \xff\r\n"])
                         for _ in range(rng.randint(1, 8)))
        for field in parse_fields(block):
            assert HeaderField(field.name, field.raw).value == reference(field.raw), field.raw
