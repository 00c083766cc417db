"""Session 10, from the sender's side: a blocked file dressed so that the gateway judges one name
(or no file at all) while a mail reader saves or opens another. End to end through a running
gateway (real sockets); the walk's units are in tests/gateway/test_mimewalk.py.

- RFC 2046 §5.2.1 forbids a transfer encoding on message/rfc822, yet readers decode one and show
  the enclosed message with its attachments: a base64 message/rfc822 hid a setup.exe;
- a part carries two names (Content-Type `name`, Content-Disposition `filename`, RFC 2231
  `filename*`, a parameter or a field given twice): readers differ in which they take (RFC 6266
  §4.3 prefers `filename*`), so every name must be judged, not only the first one read.
"""

from __future__ import annotations

import base64
import binascii

import pytest
from rig import INTERNET, send_message
from gwkit import gw_port

from mxgate.smtp.replies import REPLIES

HEAD = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: files\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <d@fabrikam.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n")
EXE = b"MZ\x90\x00" + b"\x00" * 60
BLOCKED = (554, str(REPLIES["blocked-attachment"]))


def message(part_head: bytes, payload: bytes) -> bytes:
    """HEAD, then one part with `part_head` (its fields) and `payload` (its body as sent)."""
    return HEAD + part_head + b"\r\n" + payload + b"\r\n--XX--\r\n"


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")


INNER = (b"From: a@fabrikam.test\r\nSubject: the invoice\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=IN\r\n\r\n--IN\r\nContent-Type: text/plain\r\n\r\nrun it\r\n"
         b"--IN\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(EXE) + b"\r\n--IN--\r\n")


def send(gw, data: bytes):
    return send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                        rcpts=["alice@contoso.test"], data=data)


OCTET = b"Content-Type: application/octet-stream\r\n"
NAMES = {  # a script named run.js by one field or parameter, report.txt by the one read first
    "type-name-vs-disposition-filename": b'Content-Type: application/octet-stream; name="run.js"\r\n'
                                         b'Content-Disposition: attachment; filename="report.txt"\r\n',
    "filename-star-beside-filename": OCTET + b"Content-Disposition: attachment; filename=\"report.txt\"; "
                                             b"filename*=UTF-8''run.js\r\n",
    "name-star-beside-filename": b"Content-Type: application/octet-stream; name*=UTF-8''run.js\r\n"
                                 b'Content-Disposition: attachment; filename="report.txt"\r\n',
    "filename-twice": OCTET + b'Content-Disposition: attachment; filename="report.txt"; filename="run.js"\r\n',
    "encoded-word-with-a-bad-byte": b'Content-Type: application/octet-stream; name="=?utf-8?q?run=FF.js?="\r\n',
    "encoded-word-in-an-unknown-charset": b'Content-Type: application/octet-stream; name="=?x-unknown?q?run.js?="\r\n',
    "name-cut-at-a-nul": b'Content-Type: application/octet-stream; name="run.js\x00.txt"\r\n',
    "name-past-a-nul": b'Content-Type: application/octet-stream; name="run.txt\x00.js"\r\n',
    "disposition-twice": OCTET + b'Content-Disposition: attachment; filename="report.txt"\r\n'
                                 b'Content-Disposition: attachment; filename="run.js"\r\n',
}
DISGUISES = [
    ("rfc822-in-base64", message(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n", b64(INNER))),
    ("rfc822-in-quoted-printable", message(
        b"Content-Type: message/rfc822; name=\"fwd.eml\"\r\nContent-Transfer-Encoding: quoted-printable\r\n",
        INNER.replace(b"=", b"=3D"))),
] + [(name, message(fields, b"WScript.Echo(1)")) for name, fields in NAMES.items()]


@pytest.mark.parametrize("name,data", DISGUISES, ids=[d[0] for d in DISGUISES])
def test_a_disguised_blocked_file_is_refused(make_gateway, name, data):
    gw = make_gateway()
    assert send(gw, data)["end"] == BLOCKED


def test_an_attached_message_with_a_harmless_file_is_delivered(make_gateway, mailbox):
    """The control: the same base64 message/rfc822 enclosing a PDF is judged, and passes."""
    inner = INNER.replace(b"setup.exe", b"invoice.pdf").replace(b64(EXE), b64(b"%PDF-1.7 ..."))
    gw = make_gateway()
    data = message(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n", b64(inner))
    assert send(gw, data)["end"][0] == 250


# Readers differ in which of two values they take (the first, the last): a walk that takes the
# other one misses what they show. RFC 2045 §5 and RFC 2046 §5.1.1 allow one of each; the walk
# cannot know the reader's choice, so the part is uninspectable (`on_error`), never passed.
HIDDEN = b"Content-Type: application/octet-stream; name=\"setup.exe\"\r\n\r\nMZ\x90\x00\r\n"
AMBIGUOUS = [
    ("boundary-twice", b"Content-Type: multipart/mixed; boundary=\"AAA\"; boundary=\"BBB\"\r\n\r\n"
                       b"--BBB\r\n" + HIDDEN + b"--BBB--\r\n"),
    ("content-type-twice", b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=BBB\r\n\r\n"
                           b"--BBB\r\n" + HIDDEN + b"--BBB--\r\n"),
    ("transfer-encoding-twice", message(b'Content-Type: application/octet-stream; name="invoice.pdf"\r\n'
                                        b"Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n",
                                        b64(EXE))),
]
UNINSPECTABLE = (554, str(REPLIES["content-uninspectable"]))


@pytest.mark.parametrize("name,body", AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
def test_a_part_readers_may_read_two_ways_is_never_passed(make_gateway, name, body):
    gw = make_gateway()
    data = body if body.startswith(HEAD) else HEAD.split(b"MIME-Version")[0] + b"MIME-Version: 1.0\r\n" + body
    assert send(gw, data)["end"] == UNINSPECTABLE


def _uuencoded(name: str, data: bytes) -> bytes:
    lines = [binascii.b2a_uu(data[i:i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    return f"begin 644 {name}\r\n".encode() + b"\r\n".join(lines) + b"\r\n`\r\nend\r\n"


# A text part is no file to the walk, but mail readers (Thunderbird's text parser, Outlook's
# before it) show a uuencoded or yEnc block inside plain text as an attachment with its name.
IN_TEXT = [
    ("uuencode", b"Content-Type: text/plain\r\n\r\nthe file:\r\n" + _uuencoded("setup.exe", EXE)),
    ("uuencode-after-the-text-sample", b"Content-Type: text/plain\r\n\r\n" + b"padding line\r\n" * 22000
     + _uuencoded("run.js", b"WScript.Echo(1)")),
    ("uuencode-in-base64-text", b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     + b64(b"see below\r\n" + _uuencoded("setup.exe", EXE))),
    ("yenc", b"Content-Type: text/plain\r\n\r\n=ybegin line=128 size=15 name=run.js\r\nxyz\r\n=yend size=15\r\n"),
]


@pytest.mark.parametrize("name,part", IN_TEXT, ids=[t[0] for t in IN_TEXT])
def test_a_file_encoded_inside_a_text_part_is_judged(make_gateway, name, part):
    gw = make_gateway()
    assert send(gw, HEAD + part + b"\r\n--XX--\r\n")["end"] == BLOCKED
