"""Domain patterns (`*`, `*.x`, `x`) and envelope address parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.policy.domains import pattern_matches, validate_pattern
from mxgate.names import normalize_domain
from mxgate.smtp.address import AddressSyntaxError, parse_path

label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)


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


@pytest.mark.parametrize("path", ["<a@b@c.test>", "<a@>", "<@>", "a@b.test", "<a..b@c.test>", "<a@b..c>", "<a@[1.2.3]>"])
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
