"""The trace's Subject/Message-ID reader (smtp/message.py header_value): the shortcut for values
without an RFC 2047 encoded word gives what the full email.header decoding gives."""
from __future__ import annotations

from email.header import decode_header, make_header

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.smtp.message import header_value


def _reference(raw: bytes) -> str:
    try:
        return str(make_header(decode_header(raw.decode("utf-8", "replace"))))
    except Exception:
        return raw.decode("utf-8", "replace")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=60))
def test_value_matches_full_decoding(value):
    headers = b"To: x@y.test\r\nSubject: " + value.encode("utf-8") + b"\r\nFrom: a@b.test\r\n"
    assert header_value(headers, "Subject") == _reference(value.encode("utf-8").strip())


def test_encoded_words_are_still_decoded_and_folds_unfolded():
    headers = b"subject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\nMessage-ID: <1@b.test>\r\n"
    assert header_value(headers, "Subject") == "café and more"
    assert header_value(headers, "Message-ID") == "<1@b.test>"
    assert header_value(headers, "Date") == ""


def test_received_date_is_the_messages_own_second():
    """Our Received field's date is formatted once per second (smtp/message.py): each message
    still gets the date of its own second, in any order."""
    import email.utils

    from mxgate.smtp.message import received_header

    for now in (1796162858.2, 1796162858.9, 1796162859.0, 1796162858.5, 0.0 + 86400):
        field = received_header(helo="h.test", peer_ip="127.0.0.10", by="mx.test", protocol="ESMTPS", trace_id="t",
                                recipient=None, now=now)
        assert field.endswith(f"; {email.utils.formatdate(int(now), usegmt=True)}\r\n".encode())


# header_value and count_received find candidate lines by bytes.find, then match the pattern
# there (issue 19): the same field as the MULTILINE regex search, whatever a sender puts where.
_NAME_PIECES = (b"Subject", b"subject", b"SUBJ", b"Received", b"rEcEiVeD", b":", b" ", b"\t", b"\r\n", b"\n",
                b"\r", b"x", b"\r\n ", b"Message-ID")


def _reference_value(headers: bytes, name: str) -> bytes | None:
    import re

    m = re.compile(rb"^" + re.escape(name.encode()) + rb"[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)",
                   re.IGNORECASE | re.MULTILINE).search(headers)
    return m and m.group(1).replace(b"\r\n", b"").strip()


def _reference_count(headers: bytes) -> int:
    import re

    return len(re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE).findall(headers))


def test_finds_the_field_the_regex_search_finds_on_every_short_block():
    import itertools

    from mxgate.smtp.message import count_received

    for n in range(5):
        for parts in itertools.product(_NAME_PIECES, repeat=n):
            headers = b"".join(parts)
            for name in ("Subject", "Received"):
                ref = _reference_value(headers, name)
                assert header_value(headers, name) == ("" if ref is None else ref.decode("utf-8", "replace")), headers
            assert count_received(headers) == _reference_count(headers), headers


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_NAME_PIECES + (b"Received: from a", b"subject: hi")), max_size=40))
def test_finds_the_field_the_regex_search_finds_on_random_blocks(parts):
    from mxgate.smtp.message import count_received

    headers = b"".join(parts)
    ref = _reference_value(headers, "Subject")
    assert header_value(headers, "Subject") == ("" if ref is None else ref.decode("utf-8", "replace"))
    assert count_received(headers) == _reference_count(headers)


# header_values (the trace's Subject and Message-ID) lower-cases the block once for all names: the
# same answers as header_value asked name by name, in any order, whatever the block holds.
_BOTH_PIECES = _NAME_PIECES + (b"message-id: <a@b>", b"MESSAGE-ID:\r\n <c@d>", b"Subject: =?utf-8?q?caf=C3=A9?=",
                               b"\xc3\x89", b"\xffSubject: x", b"subject-x: y", b"Message-IDs: z")


def test_values_read_together_match_each_read_alone_on_short_blocks():
    import itertools

    from mxgate.smtp.message import header_values

    for n in range(4):
        for parts in itertools.product(_BOTH_PIECES, repeat=n):
            headers = b"".join(parts)
            for names in (("Subject", "Message-ID"), ("Message-ID", "Subject"), ("Subject",), ("Received", "subject")):
                assert header_values(headers, *names) == tuple(header_value(headers, n) for n in names), headers


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_BOTH_PIECES), max_size=40))
def test_values_read_together_match_each_read_alone_on_random_blocks(parts):
    from mxgate.smtp.message import header_values

    headers = b"".join(parts)
    assert header_values(headers, "Subject", "Message-ID") == (header_value(headers, "Subject"),
                                                               header_value(headers, "Message-ID"))
