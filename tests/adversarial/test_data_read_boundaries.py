"""DATA's framing must not depend on where TCP (or TLS records) cut the stream: the same bytes are
the same message, or the same refusal, however they are split into reads (RFC 5321 §4.5.3.1.6:
a 998-character line is within the limit). Every split of the end of a long line into reads is
tried against the reader that splits nothing."""

from __future__ import annotations

import itertools

from mxgate.smtp.framing import DataReader

HEAD = b"Subject: long lines\r\n\r\n"


def _read(data: bytes, cuts: tuple[int, ...]) -> tuple[bytes, str | None, bytes]:
    reader, out, start = DataReader(10**7), b"", 0
    for end in (*cuts, len(data)):
        chunk, result = reader.feed(data[start:end])
        out += chunk
        start = end
        if result is not None:
            return out, result.problem, result.leftover + data[end:]
    raise AssertionError("no end of data")


def test_a_line_at_the_limit_is_kept_wherever_the_reads_end_around_its_crlf():
    for length in (995, 996, 997, 998):
        for after in (b".\r\nQUIT\r\n", b"next\r\n.\r\n"):
            data = HEAD + b"y" * length + b"\r\n" + after
            whole = _read(data, ())
            assert whole[1] is None and whole[0] == HEAD + b"y" * length + b"\r\n" + after[: after.index(b".")]
            line_start, line_end = len(HEAD), len(HEAD) + length
            # one read starts inside the line; the next ends anywhere from just before its CRLF to past the dot
            for first, second in itertools.product(range(line_start, line_end, 97), range(line_end - 2, line_end + 6)):
                assert _read(data, (first, second)) == whole, (length, after, first, second)


def test_a_line_over_the_limit_is_refused_wherever_the_reads_end():
    data = HEAD + b"y" * 999 + b"\r\n.\r\nQUIT\r\n"
    line_start, line_end = len(HEAD), len(HEAD) + 999
    for first, second in itertools.product(range(line_start, line_end, 97), range(line_end - 2, line_end + 6)):
        _out, problem, leftover = _read(data, (first, second))
        assert (problem, leftover) == ("line-too-long-data", b"QUIT\r\n")
