"""adversarial.md §7: malformed MIME at the gateway — deep nesting, huge boundaries, broken
base64, bad charsets. No crash: each message gets a policy answer (accepted, tempfailed or
refused by a check), never "451 Local error", and the gateway keeps serving."""

from __future__ import annotations

import pytest

from gwkit import gw_port
from rig import INTERNET, send_message, simple_message

HEAD = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: odd\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <odd@fabrikam.test>\r\nMIME-Version: 1.0\r\n")


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ncore\r\n"
    for i in range(depth):
        b = b"b%d" % i
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body + b"--" + b + b"--\r\n"
    return HEAD + body


CASES = {
    "deep-nesting": nested(300),
    "huge-boundary": HEAD + b'Content-Type: multipart/mixed; boundary="' + b"q" * 900 + b'"\r\n\r\n--' + b"q" * 900
    + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + b"q" * 900 + b"--\r\n",
    "broken-base64": HEAD + b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nContent-Type: application/zip; "
    b"name=a.zip\r\nContent-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"!!!not*base64***\r\nUEsDBAo=====\r\n--Z--\r\n",
    "bad-charset": HEAD + b"Content-Type: text/plain; charset=x-no-such-charset\r\nContent-Transfer-Encoding: "
    b"quoted-printable\r\n\r\n=E9t=E9 =ZZ =\r\n",
    "unterminated-multipart": HEAD + b"Content-Type: multipart/alternative; boundary=never\r\n\r\nno parts at all\r\n",
    "8bit-headers": HEAD.replace(b"Subject: odd", b"Subject: \xff\xfe\x80 caf\xe9") + b"\r\nbody\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_mime_gets_a_policy_answer_and_the_gateway_keeps_serving(make_gateway, name):
    gw = make_gateway('[gateway.attachments]\naction = "reject"\n[gateway.score]\naction = "tag"\n')
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=CASES[name])
    code, text = r["end"]
    assert code in (250, 451, 550, 552, 554), text
    assert "Local error in processing" not in text  # a crash would answer this
    ok = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                      rcpts=["alice@contoso.test"], data=simple_message(sender="s@fabrikam.test"))
    assert ok["end"][0] == 250
