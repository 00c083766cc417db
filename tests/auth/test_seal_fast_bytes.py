"""The gateway's first ARC seal (dkim_fast.seal_first_set) and DKIM verification with the
issue 19 session 7 shortcuts: only the covered fields canonicalised, one b= cut per field (its
fold-and-cut remembered by the exact tag list), and dkimpy's parse of the stamped message read
off the header parse already made (arc._parse_with, dkim_canon.parse_from_fields). Each must
give dkimpy's own bytes: the reference is seal_arc over dkimpy's own code (its arc_sign, its
canonicalisation, its parse), and every seal is also verified by dkimpy's own arc_verify.
The last tests run the same comparison over deliberately broken variants of the shortcuts (a
parse that joins a leading continuation, a memo keyed too loosely) and show it catches them."""

from __future__ import annotations

import dkim as dkimpy
import pytest

from mxgate.auth import arc as arc_module
from mxgate.auth import dkim_canon, dkim_fast
from mxgate.auth.arc import seal_arc
from mxgate.auth.dkim import verify_dkim
from mxgate.auth.headers import parse_fields, split_headers
from test_auth_differential import dkimpy_own_code

AR = "gw.test; spf=pass smtp.mailfrom=fabrikam.test; dkim=pass header.d=fabrikam.test; arc=none"
BASE = (b"From: Alice <alice@fabrikam.test>\r\nTo: bob@contoso.test\r\nSubject: quarterly numbers\r\n"
        b"Date: Mon, 02 Jun 2025 10:00:00 +0000\r\nMessage-ID: <m1@fabrikam.test>\r\n\r\n"
        b"Hello  there,\t\r\nthe numbers \r\n\r\nare in.   \r\n\r\n\r\n")


def _shapes(signed: bytes) -> list[bytes]:
    """Folded fields, duplicates, odd whitespace, 8-bit, empty or missing body, bare LF, a
    leading continuation line, a first line that is no field: the header shapes a sender
    controls, over a plain and a DKIM-signed message."""
    out = []
    for m in (BASE, signed):
        head, _, body = m.partition(b"\r\n\r\n")
        out += [
            m,
            m.replace(b"Subject: quarterly numbers", b"Subject: quarterly\r\n\tnumbers\r\n  again"),  # folded
            m.replace(b"To: bob", b"To:   bob\t \t"),  # WSP runs and trailing WSP in a value
            m.replace(b"Subject:", b"SUBJECT :"),  # space before the colon (obs-optional)
            b"Subject: first\r\nFrom: Mallory <m@evil.test>\r\n" + m,  # duplicate Subject and From
            m.replace(b"\r\nTo:", b"\r\nTo: carol@contoso.test\r\nTo:"),
            m.replace(b"Subject: quarterly numbers", "Subject: Grüße ✓".encode()),  # 8-bit UTF-8
            m.replace(b"Subject: quarterly numbers", b"Subject: \xff\xfe raw 8-bit"),
            m.replace(b"numbers \r\n", "numbers é\xa0\r\n".encode()),  # 8-bit body
            head + b"\r\n\r\n",  # empty body
            head + b"\r\n",  # no blank line, no body
            m.replace(b"\r\n", b"\n"),  # bare LF throughout
            m.replace(b"\r\n", b"\n", 1),  # one bare LF, the rest CRLF
            b" leading continuation\r\n" + m,
            b"\tleading tab continuation\r\n" + m,
            b"From mbox-line 2025\r\n" + m,  # a line that is no field (dkimpy skips it)
            b"X-Empty:\r\n" + m,
            b"X-Long: " + b"word " * 300 + b"\r\n" + m,
            m.replace(b"\r\n\r\n", b"\r\nX-Trailing: x \r\n \r\n\r\n", 1),  # a whitespace-only continuation
        ]
    return out


def _seal(message, key, **kwargs):
    try:
        return seal_arc(message, "gw.test", "gw.test", "arc", key, AR, clauses=AR.split("; "), **kwargs)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


@pytest.fixture(scope="module")
def keys(dkim_keys):
    (key, txt), (arc_key, arc_txt) = dkim_keys
    records = {"s1._domainkey.fabrikam.test": txt, "arc._domainkey.gw.test": arc_txt}

    def dnsfunc(name, timeout=5.0):
        name = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        return records[name].encode() if name in records else None

    signed = dkimpy.sign(BASE, b"s1", b"fabrikam.test", key) + BASE
    return key, arc_key, dnsfunc, signed


def _differences(shapes, arc_key, dnsfunc, timestamps=(1_700_000_000, 1_700_000_001)):
    """(how many seals the fast path made, the shapes whose seal differs from dkimpy's own)."""
    taken, differ = 0, []
    for message in shapes:
        for t in timestamps:
            for headers in (None, ["From", "Subject", "Subject", "To"]):
                with dkimpy_own_code():
                    expected = _seal(message, arc_key, timestamp=t, sign_headers=headers)
                calls = []
                real = dkimpy.arc_sign
                dkimpy.arc_sign = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
                try:
                    got = _seal(message, arc_key, timestamp=t, sign_headers=headers)
                finally:
                    dkimpy.arc_sign = real
                if got != expected:
                    differ.append((message[:60], t, headers))
                taken += not calls and isinstance(got, bytes)
    return taken, differ


def test_first_seal_is_dkimpys_bytes_on_every_shape_and_dkimpy_verifies_it(keys):
    """Byte for byte dkimpy's arc_sign (or the same error) on every shape, two timestamps and
    two header lists; the fast path takes most of them; dkimpy's own arc_verify passes each
    fast seal (with our Authentication-Results on top, as the gateway relays it)."""
    _, arc_key, dnsfunc, signed = keys
    shapes = _shapes(signed)
    taken, differ = _differences(shapes, arc_key, dnsfunc)
    assert differ == []
    assert taken >= len(shapes) * 2  # the fast path carries the usual shapes
    verified = 0
    for message in shapes:
        sealed = _seal(message, arc_key, timestamp=1_700_000_000)
        if not isinstance(sealed, bytes):
            continue
        eol = b"\n" if message.split(b"\n", 1)[0][-1:] != b"\r" else b"\r\n"
        whole = sealed + b"Authentication-Results: " + AR.encode() + eol + message
        with dkimpy_own_code():
            cv, _, reason = dkimpy.arc_verify(whole, dnsfunc=dnsfunc)
        if eol == b"\r\n" and not message.startswith((b" ", b"\t", b"From ")):
            assert cv == dkimpy.CV_Pass, (message[:80], reason)
            verified += 1
    assert verified >= 20


def test_the_stamped_parse_read_off_our_fields_is_dkimpys(keys):
    """arc._parse_with gives dkimpy's rfc822_parse of `our field + message` exactly, or None;
    it answers for the usual shapes."""
    signed = keys[3]
    our = b"Authentication-Results: " + AR.encode() + b"\r\n"
    answered = 0
    for message in _shapes(signed) + [b"", b"\r\n", b"\r\nbody\r\n", b"X: y", b"X: y\r\n\r\n", b"\n\nbody"]:
        head, body = split_headers(message)
        got = arc_module._parse_with(our + message, our, parse_fields(head), body)
        if got is not None:
            answered += 1
            assert (got[0], got[1]) == tuple(dkim_canon._parse(our + message)), message[:80]
    assert answered >= 20


def test_verify_dkim_keeps_dkimpys_parse_and_verdicts(keys):
    """verify_dkim now leaves dkimpy's parse of the message read off its own header parse: it
    is dkimpy's parse, and the verdicts are dkimpy's own on every shape."""
    key, _, dnsfunc, signed = keys
    checked = 0
    for message in _shapes(signed):
        if b"DKIM" not in message:
            try:
                message = dkimpy.sign(message, b"s1", b"fabrikam.test", key) + message
            except (dkimpy.DKIMException, IndexError):
                pass  # dkimpy cannot parse it: verified as it is
        dkim_canon._parsed_messages.clear()
        ours = _verified(message, dnsfunc)
        kept = dkim_canon._parsed_messages.get(message)
        if kept is not None:
            assert list(kept) == list(dkim_canon._parse(message)), message[:80]
            checked += 1
        with dkimpy_own_code():
            assert _verified(message, dnsfunc) == ours, message[:80]
    assert checked >= 20


def _verified(message, dnsfunc):
    try:
        return verify_dkim(message, dnsfunc)
    except Exception as exc:  # a leading continuation line: dkimpy's own parse raises IndexError
        return ("raised", type(exc).__name__)


# --- the comparison catches broken variants of the shortcuts ----------------------------------

def test_a_parse_shortcut_that_takes_too_much_is_caught(keys, monkeypatch):
    """Two broken variants of the stamped-message parse, each caught: (a) without the one-line
    check on our field, a value carrying a line break and another field would be read as one
    field where dkimpy reads two (the parse comparison finds it); (b) without the CRLF
    normalisation of a bare-LF message, the body hashed differs from dkimpy's (the seal
    comparison finds it)."""
    from mxgate.auth.headers import HeaderField

    _, arc_key, dnsfunc, signed = keys
    our = b"Authentication-Results: gw.test; dkim=pass\r\nX-Injected: 1\r\n"
    head, body = split_headers(BASE)
    assert arc_module._parse_with(our + BASE, our, parse_fields(head), body) is None
    careless = dkim_canon.parse_from_fields(our + BASE, (HeaderField(b"authentication-results", our),) +
                                            parse_fields(head), body)
    assert careless is not None and list(careless) != list(dkim_canon._parse(our + BASE))

    shapes = [BASE.replace(b"\r\n", b"\n"), signed.replace(b"\r\n", b"\n")]
    assert _differences(shapes, arc_key, dnsfunc)[1] == []

    def not_normalising(message, fields, body):
        return [[f.raw[:len(f.name)], f.raw[len(f.name) + 1:]] for f in fields], body

    monkeypatch.setattr(dkim_canon, "parse_from_fields", not_normalising)
    assert _differences(shapes, arc_key, dnsfunc)[1] != []


def test_a_fold_memo_keyed_too_loosely_is_caught(keys, monkeypatch):
    """The folded, cut tag list is remembered by the whole tag list (t=, d=, s=, h=, bh=): a
    memo keyed on less (here the field name's length only) reuses another seal's t= and the
    comparison with dkimpy's bytes finds it at the second timestamp."""
    _, arc_key, dnsfunc, _ = keys
    assert _differences([BASE], arc_key, dnsfunc)[1] == []
    loose: dict = {}
    real = dkim_fast._unsigned_value.__wrapped__

    def keyed_by_length(namelen, tags):
        if namelen not in loose:
            loose[namelen] = real(namelen, tags)
        return loose[namelen]

    monkeypatch.setattr(dkim_fast, "_unsigned_value", keyed_by_length)
    assert _differences([BASE], arc_key, dnsfunc)[1] != []
