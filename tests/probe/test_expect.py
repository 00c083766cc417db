"""--expect grammar and judging: pure, no sockets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, strategies as st

from mxgate.names import parse_hostport
from mxgate.probe.client import ProbeResult
from mxgate.probe.expect import STAGES, Expectation, ExpectationError, judge, parse_expect


def result(outcome="reject", stage="rcpt", code=550, enhanced="5.7.51") -> ProbeResult:
    return ProbeResult(outcome=outcome, stage=stage, code=code, enhanced=enhanced, reply="x",
                       transcript=(), tls=None, duration=0.1)


@pytest.mark.parametrize("text, exp", [
    ("accept", Expectation("accept")),
    ("reject", Expectation("reject")),
    ("reject:550", Expectation("reject", code=550)),
    ("reject:5.7.51", Expectation("reject", enhanced="5.7.51")),
    ("reject@rcpt", Expectation("reject", stage="rcpt")),
    ("reject:554@connect", Expectation("reject", code=554, stage="connect")),
    ("REJECT:5.7.1@MAIL", Expectation("reject", enhanced="5.7.1", stage="mail")),
    ("tempfail:451@data", Expectation("tempfail", code=451, stage="data")),
    (" reject@starttls ", Expectation("reject", stage="starttls")),
])
def test_parse(text, exp):
    assert parse_expect(text) == exp


@pytest.mark.parametrize("text, words", [
    ("", "cannot parse"), ("deny", "unknown outcome"), ("reject@quit", "unknown stage"),
    ("accept:250", "accept takes no"), ("accept@rcpt", "accept takes no"),
    ("reject:55", "bad code"), ("reject:5.7", "bad code"), ("reject:5.7.1234", "bad code"),
    ("reject:451", "did you mean tempfail:451"), ("tempfail:550", "did you mean reject:550"),
    ("reject:4.7.1", "did you mean tempfail"), ("reject:250", "bad code"), ("reject:550@", "cannot parse"),
])
def test_parse_errors_say_what_is_wrong(text, words):
    with pytest.raises(ExpectationError, match=words):
        parse_expect(text)


def test_every_stage_and_code_combination():
    outcomes = {"reject": (550, "5.7.51"), "tempfail": (451, "4.3.0")}
    for (kind, (code, enh)), stage, got_stage in itertools.product(outcomes.items(), STAGES, STAGES):
        got = result(kind, got_stage, code, enh)
        for spec in (f"{kind}@{stage}", f"{kind}:{code}@{stage}", f"{kind}:{enh}@{stage}"):
            ok, why = judge(parse_expect(spec), got)
            assert ok == (stage == got_stage), (spec, got_stage, why)
        other = "reject" if kind == "tempfail" else "tempfail"
        assert not judge(parse_expect(f"{other}@{stage}"), got)[0]
        assert not judge(parse_expect("accept"), got)[0]


def test_code_mismatches_are_explained():
    got = result("reject", "rcpt", 550, "5.7.51")
    ok, why = judge(parse_expect("reject:554@connect"), got)
    assert not ok and "stage rcpt instead of connect" in why and "code 550 instead of 554" in why
    ok, why = judge(parse_expect("reject:5.7.1"), got)
    assert not ok and "enhanced code 5.7.51 instead of 5.7.1" in why
    ok, why = judge(parse_expect("reject:5.7.1"), result(enhanced=None))
    assert not ok and "enhanced code none" in why


def test_accept_and_error():
    assert judge(parse_expect("accept"), result("accept", "done", 250, None)) == (True, "as expected: accept")
    ok, why = judge(parse_expect("reject"), result("error", "starttls", None, None))
    assert not ok and "error@starttls" in why
    assert not judge(parse_expect("accept"), result("error", "connect", None, None))[0]


@given(kind=st.sampled_from(["reject", "tempfail"]),
       code=st.one_of(st.none(), st.integers(0, 99), st.tuples(st.integers(0, 999), st.integers(0, 999))),
       stage=st.one_of(st.none(), st.sampled_from(STAGES)))
def test_str_round_trips(kind, code, stage):
    cls = "5" if kind == "reject" else "4"
    if code is None:
        exp = Expectation(kind, stage=stage)
    elif isinstance(code, int):
        exp = Expectation(kind, code=int(f"{cls}{code:02d}"), stage=stage)
    else:
        exp = Expectation(kind, enhanced=f"{cls}.{code[0]}.{code[1]}", stage=stage)
    assert parse_expect(str(exp)) == exp


@given(st.text(max_size=30))
def test_parse_never_raises_anything_but_expectation_error(text):
    try:
        exp = parse_expect(text)
    except ExpectationError:
        return
    assert exp.kind in ("accept", "reject", "tempfail")


@pytest.mark.parametrize("text, parsed", [
    ("mx.test", ("mx.test", 25)), ("mx.test:2525", ("mx.test", 2525)),
    ("127.0.0.1:26", ("127.0.0.1", 26)), ("[::1]:2525", ("::1", 2525)), ("[::1]", ("::1", 25)),
    ("2001:db8::1", ("2001:db8::1", 25)),
])
def test_parse_hostport(text, parsed):
    assert parse_hostport(text, 25) == parsed


@pytest.mark.parametrize("text", ["", ":25", "mx.test:0", "mx.test:70000", "mx.test:x", "[::1", "[::1]x"])
def test_parse_hostport_errors(text):
    with pytest.raises(ValueError):
        parse_hostport(text, 25)
