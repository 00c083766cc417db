"""received_values' ASCII fast path (only the Received lines are unfolded) against the loop over
the whole decoded block it replaced, on sender-controlled header blocks: folded, duplicate,
odd-cased, bare-LF, 8-bit Received fields, lookalike names, early blank lines, oversized values."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from mxgate.auth import received
from mxgate.auth.received import MAX_RECEIVED_CHARS, received_values


def whole_block(block: bytes) -> list[str]:
    """The loop as it ran before the fast path: the whole block decoded, every line stepped over."""
    return received._unfold(received._decode(block))


NAMES = [b"Received", b"received", b"RECEIVED", b"rEcEiVeD", b"X-Received", b"Received-SPF", b"Receivedx",
         b"Receive", b"ARC-Seal", b"Subject", b"From", b"received ", b"Received\t", b" Received", b"\tReceived",
         b"\rReceived", b"Re\xc3\xa7eived", b""]
COLONS = [b":", b": ", b" :", b"\t:", b"", b"::"]
VALUES = [b"from a.example ([192.0.2.1]) by mx.example; Tue, 1 Dec 2026 10:00:00 +0000",
          b"from helo (rdns [2001:db8::1]:25) by b", b"", b" ", b"\t", b"(comment", b"x\ry", b"\r",
          b"by mx (Postfix) with ESMTPS id ABC", b"caf\xc3\xa9", b"\xff\xfe", b"a" * (MAX_RECEIVED_CHARS - 3),
          b"b" * (MAX_RECEIVED_CHARS + 10), b"\x1c\x1f ", b"received: nested"]
ENDS = [b"\r\n", b"\n", b"\r\r\n", b"\r\r\r\n", b"\r"]
CONTINUATIONS = [b" ", b"\t", b"  ", b" \r", b"\tby x", b" for <u@example>"]


def random_block(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 14)):
        roll = rng.random()
        if roll < 0.08:
            lines.append(rng.choice([b"", b"\r", b"\r\r"]))  # a blank line: the header section ends
        elif roll < 0.3:
            lines.append(rng.choice(CONTINUATIONS) + rng.choice(VALUES))
        else:
            lines.append(rng.choice(NAMES) + rng.choice(COLONS) + rng.choice(VALUES))
    block = b"".join(line + rng.choice(ENDS) for line in lines)
    if rng.random() < 0.3:
        block = block.rstrip(b"\n")  # no line end after the last line
    if rng.random() < 0.1:
        block += b"\r\nbody\r\nReceived: from body.example by x\r\n"  # a whole message
    return block


def test_random_blocks_match_the_whole_block_loop():
    rng = random.Random(19)
    ascii_blocks = 0
    for _ in range(20_000):
        block = random_block(rng)
        ascii_blocks += block.isascii()
        assert received_values(block) == whole_block(block), block
    assert ascii_blocks > 5_000  # the fast path was exercised


def test_edge_blocks():
    for block in [b"", b"\n", b"\r\n", b"\r\r\n", b"\r", b"\r\r", b"\r\r\r\n", b"Received:x", b"Received:x\n",
                  b"\nReceived: x", b"\r\nReceived: x", b"Received: a\n\tb\n c\nReceived: d",
                  b"Received: a\n\n Received: b", b"Received: a\n \nReceived: b\n\r\nReceived: c",
                  b"X:y\n received: z\nReceived: w\r", b"Received: a\r\n\r", b"Received: a\n\r\r",
                  b"Received: a\n\r\r\rReceived: b", b"RECEIVED :  x  \r\n\t y \r\n"]:
        assert received_values(block) == whole_block(block), block


piece = st.sampled_from(NAMES + COLONS + VALUES + ENDS + CONTINUATIONS + [b"\n", b"\r", b" ", b"\t", b"\n\n"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(piece, st.binary(max_size=6)), max_size=40))
def test_hypothesis_blocks_match_the_whole_block_loop(pieces):
    block = b"".join(pieces)
    assert received_values(block) == whole_block(block)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="Rr eceivdECEIVD:\r\n\t-Xx", max_size=80))
def test_hypothesis_ascii_soup(text):
    block = text.encode()
    assert received_values(block) == whole_block(block)
