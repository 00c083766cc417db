"""Units of the one streaming MIME walk (filters/mimewalk.py): what it finds, and each limit
enforced while streaming (depth, parts, decoded bytes, compression ratio, archive members and
nesting), cheaply: a zip bomb costs little memory, and a cancelled budget stops the walk."""

from __future__ import annotations

import base64
import binascii
import io
import tracemalloc
import zipfile

import pytest

from mxgate.filters.mimewalk import LIMITS, InspectionLimit, Limits, walk
from mxgate.filters.result import Budget, BudgetExceeded

HEAD = b"From: a@fabrikam.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def att(name: str, payload: bytes, ctype: str = "application/octet-stream") -> bytes:
    return (f'Content-Type: {ctype}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'.encode()
            + base64.encodebytes(payload).replace(b"\n", b"\r\n"))


def multipart(*parts: bytes, boundary: bytes = b"B") -> bytes:
    out = b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\npreamble\r\n"
    for p in parts:
        out += b"--" + boundary + b"\r\n" + p + b"\r\n"
    return out + b"--" + boundary + b"--\r\nepilogue\r\n"


def nest(inner: bytes, depth: int) -> bytes:
    for i in range(depth):
        inner = multipart(inner, boundary=b"L%d" % i)
    return inner


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def names(data: bytes) -> list[tuple[str, str]]:
    return [(f.name, f.sniffed) for f in walk(HEAD + data).files]


FOUND = [  # (what, message body, files found)
    ("named exe", multipart(b"Content-Type: text/plain\r\n\r\nhi", att("setup.exe", b"MZ\x90")), [("setup.exe", "exe")]),
    ("RFC 2047 name", multipart(att("=?utf-8?b?c2V0dXAuZXhl?=", b"x")), [("setup.exe", "")]),
    ("RFC 2231 name", multipart(b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                                b"filename*=utf-8''run%2Escr\r\n\r\nx"), [("run.scr", "")]),
    ("ELF named pdf", multipart(att("a.pdf", b"\x7fELF\x02")), [("a.pdf", "elf")]),
    ("zip member", multipart(att("d.zip", zip_of({"in/run.js": b"x"}))), [("d.zip", "zip"), ("d.zip/in/run.js", "")]),
    ("nested zip", multipart(att("d.zip", zip_of({"i.zip": zip_of({"a.jpg": b"MZ"})}))),
     [("d.zip", "zip"), ("d.zip/i.zip", "zip"), ("d.zip/i.zip/a.jpg", "exe")]),
    ("message/rfc822", multipart(b"Content-Type: message/rfc822\r\n\r\n" + HEAD + multipart(att("x.exe", b"MZ"), boundary=b"I")),
     [("x.exe", "exe")]),
    ("quoted-printable", multipart(b"Content-Type: application/octet-stream; name=q.bin\r\n"
                                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\nMZ=90=00"), [("q.bin", "exe")]),
    ("boundary with trailing space", multipart(att("a.exe", b"MZ")).replace(b"--B\r\n", b"--B  \r\n"), [("a.exe", "exe")]),
    ("unterminated multipart", b"Content-Type: multipart/mixed; boundary=U\r\n\r\n--U\r\n" + att("u.exe", b"MZ"),
     [("u.exe", "exe")]),
    ("text only", b"Content-Type: text/plain\r\n\r\nhello", []),
    ("uuencoded in text", multipart(b"Content-Type: text/plain\r\n\r\nhi\r\nbegin 644 a.txt\r\n"
                                    + binascii.b2a_uu(b"MZ\x90\x00").replace(b"\n", b"\r\n") + b"`\r\nend"),
     [("a.txt", "exe")]),
    ("yEnc in text", multipart(b"Content-Type: text/plain\r\n\r\n=ybegin line=128 size=3 name=my file.scr\r\nabc"),
     [("my file.scr", "")]),
]


@pytest.mark.parametrize("what,body,files", FOUND, ids=[c[0] for c in FOUND])
def test_walk_finds(what, body, files):
    assert names(body) == files


def test_text_sample_is_decoded_text_for_the_score():
    body = multipart(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                     + base64.encodebytes(b"please wire transfer today").replace(b"\n", b"\r\n"))
    assert b"wire transfer" in walk(HEAD + body).text


LIMIT_CASES = [  # (what, message body, limits, code)
    ("depth", nest(att("a.exe", b"MZ"), LIMITS.depth + 1), LIMITS, "mime-depth"),
    ("depth 1000", nest(att("a.exe", b"MZ"), 1000), LIMITS, "mime-depth"),
    ("message/rfc822 depth", b"Content-Type: message/rfc822\r\n\r\n" * (LIMITS.depth + 2) + b"\r\nx", LIMITS, "mime-depth"),
    ("parts", multipart(*[b"Content-Type: text/plain\r\n\r\nx"] * 11), Limits(parts=10), "mime-parts"),
    ("decoded bytes", multipart(att("a.bin", b"x" * 5000)), Limits(decoded_bytes=4000), "decoded-bytes"),
    ("part header", multipart(b"X-Pad: " + b"a" * 900 + b"\r\n" * 1 + b"X-Pad: " + b"a" * 900 + b"\r\n\r\nx"),
     Limits(part_header=1000), "part-header"),
    ("archive members", multipart(att("d.zip", zip_of({f"f{i}": b"x" for i in range(11)}))),
     Limits(archive_members=10), "archive-members"),
    ("archive ratio", multipart(att("d.zip", zip_of({"z": bytes(5 * 1024 * 1024)}))), LIMITS, "archive-ratio"),
    ("archive depth", multipart(att("d.zip", zip_of({"1.zip": zip_of({"2.zip": zip_of({"3.zip": zip_of({"x": b"1"})})})}))),
     Limits(archive_depth=3), "archive-depth"),
    ("archive declared size", multipart(att("d.zip", zip_of({"a": bytes(3000)}))),
     Limits(decoded_bytes=2500, ratio_floor=10**9), "decoded-bytes"),
    ("corrupt archive", multipart(att("d.zip", b"PK\x03\x04garbage")), LIMITS, "archive-unreadable"),
    ("two boundaries", multipart(att("a.exe", b"MZ")).replace(b"boundary=B", b"boundary=A; boundary=B", 1), LIMITS,
     "mime-ambiguous"),
    ("two Content-Type fields", multipart(b"Content-Type: text/plain\r\nContent-Type: application/x-js; name=run.js"
                                          b"\r\n\r\nx"), LIMITS, "mime-ambiguous"),
    ("two transfer encodings", multipart(b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: 7bit\r\n"
                                         b"Content-Transfer-Encoding: base64\r\n\r\nTVqQ"), LIMITS, "mime-ambiguous"),
]


@pytest.mark.parametrize("what,body,limits,code", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_stop_the_walk(what, body, limits, code):
    with pytest.raises(InspectionLimit) as info:
        walk(HEAD + body, limits=limits)
    assert info.value.code == code


def test_zip_bomb_is_refused_with_little_memory_and_little_work():
    """3 members of 40 MB of zeros in ~120 KB: the directory's ratio stops it before inflating."""
    bomb = zip_of({f"p{i}": bytes(40 * 1024 * 1024) for i in range(3)})
    data = HEAD + multipart(att("d.zip", bomb))
    tracemalloc.start()
    try:
        with pytest.raises(InspectionLimit) as info:
            walk(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == "archive-ratio"
    assert peak < 4 * 1024 * 1024, peak  # the message itself is 160 KB; nothing near 120 MB was inflated


def test_inflated_bytes_of_nested_archives_count_toward_the_decoded_limit():
    """Each level's inflated bytes are counted as they stream (zipfile also cuts a member at the
    size its directory declares, so a lying directory cannot inflate more than it claims)."""
    inner = zip_of({"z": bytes(3 * 1024 * 1024)})
    data = HEAD + multipart(att("d.zip", zip_of({"inner.zip": inner})))
    loose = Limits(ratio_floor=10**9)
    assert walk(data, limits=loose).decoded > len(inner)
    with pytest.raises(InspectionLimit) as info:
        walk(data, limits=Limits(ratio_floor=10**9, decoded_bytes=len(inner) + 3 * 1024 * 1024 - 1))
    assert info.value.code == "decoded-bytes"


def test_a_cancelled_budget_stops_the_walk():
    budget = Budget(60)
    budget.cancel()
    with pytest.raises(BudgetExceeded):
        walk(HEAD + multipart(*[b"Content-Type: text/plain\r\n\r\nx"] * 200), budget=budget)


def test_an_expired_budget_stops_the_walk():
    now = [0.0]
    budget = Budget(1.0, clock=lambda: now[0])
    now[0] = 2.0
    with pytest.raises(BudgetExceeded):
        walk(HEAD + multipart(*[b"Content-Type: text/plain\r\n\r\nx"] * 200), budget=budget)


def test_a_budget_running_out_inside_a_nested_archive_is_out_of_time_not_uninspectable():
    """The budget may run out at any of its looks, inside an archive member too: that is the walk
    running out of time (the pipeline then walks again in a worker, or answers 451 at the message's
    budget), never "archive-unreadable" — a permanent 554 for a sender's clean nested zip only
    because the gateway was busy (tests/gateway/test_checks.py saw it under load)."""
    data = HEAD + multipart(att("docs.zip", zip_of({"inner.zip": zip_of({"photo.jpg": b"\x7fELF\x02\x01" * 40000}),
                                                    "b.txt": b"b" * 200_000})))
    reference = walk(data, budget=Budget(60))
    assert {f.name for f in reference.files} >= {"docs.zip/inner.zip", "docs.zip/inner.zip/photo.jpg"}
    looks = [0]

    def clock() -> float:
        looks[0] += 1
        return float(looks[0])

    looks[0] = 0
    walk(data, budget=Budget(10**6, clock=clock))
    total = looks[0]  # the whole walk's looks at its budget (and the one at its start)
    stopped_in_archive = 0
    for k in range(total):
        looks[0] = 0
        budget = Budget(k + 0.5, clock=clock)  # out of time at the (k+1)-th look
        try:
            walked = walk(data, budget=budget)
        except BudgetExceeded as exc:
            stopped_in_archive += exc.__traceback__ is not None and "archive" in "".join(
                f.co_name for f in _frames(exc.__traceback__))
            continue
        assert walked.files == reference.files
    assert stopped_in_archive >= 2  # the nested member's inflation and the outer archive's loop


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame.f_code
        tb = tb.tb_next


def _b64_message(inner: bytes, levels: int) -> bytes:
    """`inner` (a message) as a base64 message/rfc822 part, `levels` times over."""
    for _ in range(levels):
        inner = HEAD + b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + \
            base64.encodebytes(inner).replace(b"\n", b"\r\n")
    return inner[len(HEAD):]


def test_an_encoded_message_rfc822_is_walked_decoded():
    """RFC 2046 §5.2.1 forbids encoding a message/rfc822 body; readers decode one and show what it
    holds. The enclosed files and text are found as in a plain one, the part itself counted too."""
    inner = HEAD + multipart(b"Content-Type: text/plain\r\n\r\nplease wire transfer", att("x.exe", b"MZ"), boundary=b"I")
    w = walk(HEAD + multipart(_b64_message(inner, 1)))
    assert [(f.name, f.sniffed) for f in w.files] == [("(unnamed)", ""), ("x.exe", "exe")]
    assert b"wire transfer" in w.text
    qp = multipart(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                   + (HEAD + multipart(att("q.exe", b"MZ"), boundary=b"Q")).replace(b"=", b"=3D"))
    assert ("q.exe", "exe") in names(qp)


def test_encoded_messages_nested_past_the_depth_limit_stop_the_walk():
    body = _b64_message(HEAD + multipart(att("x.exe", b"MZ"), boundary=b"I"), LIMITS.depth + 1)
    with pytest.raises(InspectionLimit) as info:
        walk(HEAD + body)
    assert info.value.code == "mime-depth"
    assert ("x.exe", "exe") in names(_b64_message(HEAD + multipart(att("x.exe", b"MZ"), boundary=b"I"), 5))


NAMED = [  # (what, the part's fields, the name judged first, every other name)
    ("type name and disposition filename", b'Content-Type: application/octet-stream; name="run.js"\r\n'
     b'Content-Disposition: attachment; filename="a.txt"\r\n', "a.txt", ("run.js",)),
    ("filename and filename*", b"Content-Type: application/octet-stream\r\n"
     b"Content-Disposition: attachment; filename=\"a.txt\"; filename*=UTF-8''run.js\r\n", "a.txt", ("run.js",)),
    ("filename* continuations", b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
     b"filename=\"a.txt\"; filename*0*=utf-8''ru; filename*1*=n%2Ejs\r\n", "a.txt", ("run.js",)),
    ("filename twice", b"Content-Type: application/octet-stream\r\n"
     b"Content-Disposition: attachment; filename=\"a.txt\"; filename=\"=?utf-8?q?run=2Ejs?=\"\r\n", "a.txt", ("run.js",)),
    ("an encoded word with a bad byte", b'Content-Type: application/x-js; name="=?utf-8?q?run=FF.js?="\r\n',
     "run\ufffd.js", ()),
    ("an encoded word in an unknown charset", b'Content-Type: application/x-js; name="=?x-unknown?q?run.js?="\r\n',
     "run.js", ()),
    ("the same name everywhere", b'Content-Type: application/pdf; name="a.pdf"\r\n'
     b'Content-Disposition: attachment; filename="a.pdf"\r\n', "a.pdf", ()),
]


@pytest.mark.parametrize("what,fields,name,also", NAMED, ids=[c[0] for c in NAMED])
def test_every_name_of_a_part_is_found(what, fields, name, also):
    [found] = walk(HEAD + multipart(fields + b"\r\nx")).files
    assert (found.name, found.also) == (name, also)
