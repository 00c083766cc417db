"""Issue 19, session 7: the MIME walk takes the top-level header block the gateway split off
(MessageSource.head) at once instead of reading it line by line — only where the line by line
read takes exactly that block. The same walk (files, text, counts, header block) or the same
InspectionLimit either way, on header blocks a sender shapes: bare LF lines, a blank line before
the end, lines longer than a readline takes, blocks past the part-header limit, a multipart or
message/rfc822 top-level type. Each broken shortcut below is caught by the same comparison."""

from __future__ import annotations

import base64
import random

import pytest

from mxgate.filters import mimewalk
from mxgate.filters.mimewalk import InspectionLimit, Limits, walk
from mxgate.smtp.limits import MAX_HEADER_BLOCK
from mxgate.smtp.source import MessageSource

SMALL = Limits(part_header=4096)  # a sender's block past it must stop the walk as before

LINES = [b"From: a@fabrikam.test\r\n", b"Subject: s\r\n", b"MIME-Version: 1.0\r\n", b" folded on\r\n",
         b"X-Bare: lf\n", b"\n", b"\r\n", b"X-Long: " + b"a" * 8180 + b"\r\n", b"X-Long: " + b"b" * 8182 + b"\r\n",
         b"X-Long: " + b"c" * 8183 + b"\r\n", b"X-Long: " + b"d" * 9000 + b"\r\n", b"X-Pad: " + b"p" * 1000 + b"\r\n",
         b"Content-Type: multipart/mixed; boundary=B\r\n", b"Content-Type: message/rfc822\r\n",
         b"Content-Type: application/octet-stream; name=\"top.exe\"\r\n", b"Content-Transfer-Encoding: base64\r\n",
         b"--B\r\n", b"no colon here\r\n", b"X-CR: a\rb\r\n"]
EXE = base64.encodebytes(b"MZ\x90\x00" * 8).replace(b"\n", b"\r\n")
BODIES = [b"hello\r\n", EXE,
          b"pre\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: application/octet-stream; "
          b"name=\"run.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + EXE + b"--B--\r\n",
          b"From: x@y.test\r\nContent-Type: multipart/mixed; boundary=I\r\n\r\n--I\r\nContent-Type: application/x; "
          b"name=\"in.scr\"\r\n\r\nMZ\r\n--I--\r\n", b""]


def _message(rng: random.Random) -> bytes:
    head = b"".join(rng.choice(LINES) for _ in range(rng.randrange(0, 12)))
    if rng.random() < 0.1:
        return head  # no blank line: the whole message is its header block
    return head + b"\r\n" + rng.choice(BODIES)


def _outcome(source: MessageSource, limits: Limits):
    try:
        w = walk(source, limits=limits)
        return "walk", w.header_block, w.files, w.text, w.parts, w.decoded, w.max_depth
    except InspectionLimit as exc:
        return "limit", exc.code


def _mismatches(monkeypatch, rounds: int = 3000, seed: int = 19) -> list:
    rng = random.Random(seed)
    shortcut = mimewalk._read_header
    taken, bad = 0, []
    for _ in range(rounds):
        message = _message(rng)
        limits = rng.choice([mimewalk.LIMITS, SMALL])
        source = MessageSource.from_bytes(message).split_head(MAX_HEADER_BLOCK)
        taken += shortcut(source.head, limits) is not None
        got = _outcome(source, limits)
        with monkeypatch.context() as m:
            m.setattr(mimewalk, "_read_header", lambda head, limits: None)
            want = _outcome(MessageSource.from_bytes(message).split_head(MAX_HEADER_BLOCK), limits)
        if got != want:
            bad.append((message[:200], got, want))
    return bad, taken


def test_the_split_header_is_read_as_the_walk_reads_it(monkeypatch):
    bad, taken = _mismatches(monkeypatch)
    assert not bad, bad[:2]
    assert taken > 300  # the shortcut is taken


def test_a_usual_gateway_message_takes_the_shortcut():
    source = MessageSource.from_bytes(b"From: a@fabrikam.test\r\nSubject: s\r\n\r\nhello\r\n").split_head(4096)
    assert mimewalk._read_header(source.head, mimewalk.LIMITS) == (b"From: a@fabrikam.test\r\nSubject: s\r\n", 3)
    assert walk(source).header_block == source.head


def _without(condition: str):
    """_read_header with one of its conditions left out."""
    def broken(head: bytes, limits: Limits):
        raw = head[:-2]
        if head[-2:] != b"\r\n":
            return None
        if condition != "ends in LF" and raw and raw[-1:] != b"\n":
            return None
        if condition != "part_header" and len(raw) > limits.part_header:
            return None
        if condition != "blank line" and (raw.startswith((b"\n", b"\r\n")) or b"\n\n" in raw or b"\n\r\n" in raw):
            return None
        if condition != "line length" and len(raw) > mimewalk._LINE and \
                max(map(len, raw.split(b"\n"))) + 1 > mimewalk._LINE:
            return None
        return raw, raw.count(b"\n") + 1
    return broken


@pytest.mark.parametrize("condition", ["ends in LF", "part_header", "blank line", "line length"])
def test_each_broken_shortcut_is_caught(monkeypatch, condition):
    monkeypatch.setattr(mimewalk, "_read_header", _without(condition))
    bad, _ = _mismatches(monkeypatch, rounds=3000)
    assert bad
