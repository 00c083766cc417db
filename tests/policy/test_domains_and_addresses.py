"""Domain patterns (`*`, `*.x`, `x`) and envelope address parsing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxgate.policy.domains import pattern_matches, validate_pattern
from mxgate.names import normalize_domain
from mxgate.smtp.address import AddressSyntaxError, parse_path

label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)


@settings(suppress_health_check=[HealthCheck.too_slow])  # generation speed depends on the shared machine's load
@given(domain, domain)
def test_pattern_semantics_against_definition(base, other):
    assert pattern_matches("*", other)
    assert pattern_matches(base, base.upper() + ".")
    assert pattern_matches("*." + base, base)
    assert pattern_matches("*." + base, "sub." + base)
    assert pattern_matches("*." + base, other) == (other == base or other.endswith("." + base))
    assert pattern_matches(base, other) == (normalize_domain(base) == normalize_domain(other))


@pytest.mark.parametrize("pattern, ok", [
    ("*", True), ("*.contoso.com", True), ("contoso.com", True), ("Contoso.COM.", True),
    ("a.*.b", False), ("contoso.*", False), ("**.x", False), ("-bad.com", False), ("", False)])
def test_pattern_validation(pattern, ok):
    assert (validate_pattern(pattern) is None) is ok


@pytest.mark.parametrize("path, local, dom", [
    ("<a@B.Example.>", "a", "b.example"),
    ("<@relay.test,@other.test:u@d.test>", "u", "d.test"),
    ('<"x@y"@d.test>', '"x@y"', "d.test"),
    ("<u%v@d.test>", "u%v", "d.test"),
])
def test_paths(path, local, dom):
    a = parse_path(path, allow_null=False)
    assert (a.local, a.domain) == (local, dom)


@pytest.mark.parametrize("path", ["<a@b@c.test>", "<a@>", "<@>", "a@b.test", "<a..b@c.test>", "<a@b..c>", "<a@[1.2.3]>",
                                  # one trailing dot is the root; two leave an empty label (RFC 1035 §3.1)
                                  "<ceo@contoso.test..>", "<a@.>", "<a@..>"])
def test_bad_paths(path):
    with pytest.raises(AddressSyntaxError):
        parse_path(path, allow_null=False)


def test_null_and_postmaster_and_utf8():
    assert parse_path("<>", allow_null=True).is_null
    assert str(parse_path("<postmaster>", allow_null=False)) == "postmaster"
    with pytest.raises(AddressSyntaxError) as e:
        parse_path("<jöhn@d.test>", allow_null=False)
    assert e.value.reason == "non-ascii"
    assert parse_path("<jöhn@d.test>", allow_null=False, smtputf8=True).local == "jöhn"


@given(st.text(max_size=80))
def test_parser_never_raises_anything_but_syntax_errors(text):
    try:
        parse_path(text, allow_null=True, smtputf8=True)
    except AddressSyntaxError:
        pass


# --- issue 14: RFC 5321 / 6531 paths -------------------------------------------------------------

PATHS = [  # (path, smtputf8, expected str(address) or None for a syntax error)
    ("<a@b.test>", False, "a@b.test"),
    ("< a@b.test>", False, None),  # RFC 5321 §4.1.2: no space inside the brackets
    ("<a@b.test >", False, None),
    ("<a @b.test>", False, None),
    ("<a@\tb.test>", False, None),
    ('<"a b"@b.test>', False, '"a b"@b.test'),  # a space inside quotes is qtextSMTP
    ('<"a\\"b"@b.test>', False, '"a\\"b"@b.test'),  # quoted-pairSMTP
    ('<"a\x01b"@b.test>', False, None),  # control characters: never, quoted or not
    ('<"a\\\x01b"@b.test>', False, None),
    ('<"a\x7fb"@b.test>', False, None),
    ('<"a\x1bb"@b.test>', False, None),
    ('<"j\u00f6hn"@b.test>', True, '"j\u00f6hn"@b.test'),  # RFC 6531 §3.3: UTF-8 in quotes with SMTPUTF8
    ('<"a\u0085b"@b.test>', True, None),  # a C1 control is still a control
    ("<a@stra\u00dfe.de>", True, "a@xn--strae-oqa.de"),  # IDNA2008 keeps ß (IDNA2003 made it "strasse")
    ("<a@B\u00fccher.DE>", True, "a@xn--bcher-kva.de"),  # UTS #46 mapping lower-cases first
    ("<a@xn--bcher-kva.de>", False, "a@xn--bcher-kva.de"),
    ("<a@xn--zz.test>", False, None),  # an A-label that does not decode
    ("<a@\u2603.net>", True, None),  # a symbol IDNA2008 disallows (IDNA2003 allowed it)
    ("<a@-b.test>", False, None),
]


@pytest.mark.parametrize("path,utf8,expected", PATHS, ids=[repr(p[0]) for p in PATHS])
def test_rfc5321_paths(path, utf8, expected):
    if expected is None:
        with pytest.raises(AddressSyntaxError):
            parse_path(path, allow_null=False, smtputf8=utf8)
    else:
        assert str(parse_path(path, allow_null=False, smtputf8=utf8)) == expected


# parse_path remembers what it parsed (issue 19): the remembered answer must be the parser's, for
# every flag combination, on the first and on later calls; refusals are never remembered.
_MEMO_CASES = [p for p, _, _ in PATHS] + ["<>", "<postmaster>", "<a@b@c.test>", "<jöhn@d.test>", "<A@B.Example.>",
                                          "<@relay.test,@other.test:u@d.test>", "< a@b.test>", "<a@[1.2.3.4]>"]


def _outcome(fn, text, allow_null, utf8):
    try:
        return ("ok", fn(text, allow_null=allow_null, smtputf8=utf8))
    except AddressSyntaxError as exc:
        return ("error", exc.reason)


@pytest.mark.parametrize("text", _MEMO_CASES)
def test_remembered_parse_is_the_parse(text):
    from mxgate.smtp import address
    for allow_null in (False, True):
        for utf8 in (False, True):
            fresh = _outcome(address._parse_path, text, allow_null, utf8)
            assert _outcome(parse_path, text, allow_null, utf8) == fresh  # first call (maybe a miss)
            assert _outcome(parse_path, text, allow_null, utf8) == fresh  # remembered
            if fresh[0] == "error":
                assert (text, allow_null, utf8) not in address._PARSED


@given(st.text(max_size=60), st.booleans(), st.booleans())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_remembered_parse_differential(text, allow_null, utf8):
    from mxgate.smtp import address
    fresh = _outcome(address._parse_path, text, allow_null, utf8)
    assert _outcome(parse_path, text, allow_null, utf8) == fresh
    assert _outcome(parse_path, text, allow_null, utf8) == fresh


def test_remembered_paths_are_bounded(monkeypatch):
    from mxgate.smtp import address
    monkeypatch.setattr(address, "_PARSED", {})
    for i in range(address._PARSED_KEPT + 10):  # a client cycling through addresses
        parse_path(f"<u{i}@d.test>", allow_null=False)
    assert len(address._PARSED) <= address._PARSED_KEPT
    assert parse_path("<u1@d.test>", allow_null=False) == address._parse_path("<u1@d.test>", allow_null=False,
                                                                           smtputf8=False)
