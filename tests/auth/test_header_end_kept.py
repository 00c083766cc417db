"""headers._header_end keeps the last few messages' answers by identity (issue 19, session 6):
every answer is still the two finds' (`_find_header_end`), on every short mix of the line ends
a sender chooses, for the same object asked again, for equal but distinct objects, past the
number kept, for a bytearray changed between two questions, and from several threads at once."""

import itertools
import random
import threading

from mxgate.auth import headers
from mxgate.auth.headers import _find_header_end, _header_end, header_length, split_headers

PIECES = [b"a", b":", b"\r", b"\n", b"\r\n", b" ", b"\r\n\r\n", b"\n\n", b"\n\r\n", b"\r\r\n"]


def test_every_short_message_asked_twice_and_as_a_copy():
    for size in range(0, 6):
        for parts in itertools.product(PIECES, repeat=size):
            message = b"".join(parts)
            expected = _find_header_end(message)
            assert _header_end(message) == expected, message
            assert _header_end(message) == expected, message  # kept
            assert _header_end(bytes(bytearray(message))) == expected, message  # an equal copy


def test_answers_past_the_number_kept_and_interleaved():
    rng = random.Random(19)
    messages = [b"A: %d\r\n" % i + rng.choice([b"\r\n", b"\n", b"", b"B: c\n\n"]) + b"body %d" % i for i in range(50)]
    for _ in range(5000):
        message = rng.choice(messages)
        assert _header_end(message) == _find_header_end(message)
        assert header_length(message) == len(split_headers(message)[0])


def test_a_changed_bytearray_is_read_again():
    buffer = bytearray(b"A: b\r\n\r\nbody")
    assert _header_end(buffer) == (6, 8)
    buffer[4:8] = b"\r\nC:"
    assert _header_end(buffer) == _find_header_end(buffer) is None


def test_a_large_message_is_answered_and_not_kept():
    big = b"A: b\r\n\r\n" + b"x" * (headers._ENDS_MAX + 1)
    assert _header_end(big) == (6, 8)
    assert all(seen is not big for seen, _ in headers._ends)


def test_threads_asking_at_once_get_their_own_answers():
    rng = random.Random(7)
    messages = [b"X: %d\r\n" % i + b"Y: z\r\n" * rng.randrange(5) + rng.choice([b"\r\n", b"\n"]) + b"b" for i in range(40)]
    failures = []

    def ask(seed):
        local = random.Random(seed)
        for _ in range(3000):
            message = local.choice(messages)
            if _header_end(message) != _find_header_end(message):
                failures.append(message)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
