"""`has_long_line` (smtp/framing.py) passes many short lines per search instead of splitting the
message into lines; it must say exactly what splitting says, on hostile input too: lines just at
and just over the limit, CRLFs at the window's edges, bare CRs and LFs next to CRLFs, empty lines."""

from __future__ import annotations

import random

from mxgate.smtp.framing import ChunkReader, DataReader, has_long_line


def _by_splitting(data: bytes, max_line: int) -> bool:
    return max(map(len, data.split(b"\r\n"))) > max_line


def test_the_scan_agrees_with_splitting_on_random_and_edge_input():
    rng = random.Random(1903)
    pieces = [b"\r\n", b"\r", b"\n", b"\n\r", b"\r\r\n", b"x", b"xx"]
    for max_line in (1, 2, 3, 7, 998):
        for _ in range(3000 if max_line < 998 else 300):
            parts = []
            for _ in range(rng.randrange(0, 40)):
                if rng.random() < 0.5:
                    parts.append(b"y" * rng.choice((max_line - 1, max_line, max_line + 1, rng.randrange(0, max_line + 3))))
                else:
                    parts.append(rng.choice(pieces))
            data = b"".join(parts)
            assert has_long_line(data, max_line) == _by_splitting(data, max_line), (max_line, data)


def test_a_line_one_byte_over_the_limit_is_found_wherever_it_sits():
    short = b"a" * 998 + b"\r\n"
    for before in range(0, 4):
        for after in range(0, 4):
            data = b"\r\n" + short * before + b"b" * 999 + b"\r\n" + short * after
            assert has_long_line(data, 998)
            assert not has_long_line(data.replace(b"b" * 999, b"b" * 998), 998)


def test_data_and_bdat_refuse_a_999_byte_line_behind_short_ones_and_keep_998():
    head = b"Subject: x\r\n\r\n" + b"short line\r\n" * 50
    for length, problem in ((998, None), (999, "line-too-long-data")):
        message = head + b"z" * length + b"\r\n" + b"tail\r\n" * 5
        r = DataReader(10**7)
        _, result = r.feed(message + b".\r\n")
        assert result.problem == problem
        c = ChunkReader(10**7)
        c.feed_chunk(message)
        assert c.finish()[1].problem == problem
