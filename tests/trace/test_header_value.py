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
