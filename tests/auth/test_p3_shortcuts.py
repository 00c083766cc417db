"""The mailbox's P3 path (issue 19, session 4): every shortcut answers exactly what the long way
answered. Differential tests against the previous implementations (kept here, verbatim, as the
reference) on generated, hostile input, plus the golden corpus."""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from mxgate.auth import received as R
from mxgate.auth.skiplist import SkipListSettings, find_original_sender
from received_cases import ATTACKS, CASES

# --- the reference: the Received tokenizer before the one-pass lexer (two regex passes) --------

_OLD_TOKEN = re.compile(
    r"""
      (?P<open>\()
    | (?P<close>\))
    | (?P<literal>\[[^\[\]()<>\s]*\](?::\d{1,5})?)
    | (?P<angle><[^<>()]*>)
    | (?P<semi>;)
    | (?P<word>[^\s()\[\]<>;]+)
    | (?P<stray>[\[\]<>])
    """,
    re.VERBOSE,
)


def _old_scan(value: str):
    tokens = []
    depth = 0
    balanced = True
    comment: list[str] = []
    for match in _OLD_TOKEN.finditer(value):
        kind = match.lastgroup or "stray"
        text = match.group()
        if kind == "open":
            depth += 1
            continue
        if kind == "close":
            if depth == 0:
                balanced = False
                continue
            if depth == 1:
                tokens.append(R._Token("comment", "", tuple(comment)))
                comment = []
            depth -= 1
            continue
        if depth == 1 and kind in ("literal", "word", "angle"):
            comment.append(text)
        elif depth == 0 and (kind != "stray" or text in "[]"):
            tokens.append(R._Token(kind, text))
    if depth > 0:
        balanced = False
        if comment:
            tokens.append(R._Token("comment", "", tuple(comment)))
    return tokens, balanced


def _old_before_date(value: str):
    depth, cut, balanced = 0, None, True
    for match in _OLD_TOKEN.finditer(value):
        kind = match.lastgroup
        if kind == "open":
            depth += 1
        elif kind == "close":
            balanced = balanced and depth > 0
            depth = max(depth - 1, 0)
        elif kind == "semi" and depth == 0:
            cut = match.start()
    return (value if cut is None else value[:cut]), balanced and depth == 0


def _old_parse(value: str) -> R.ReceivedHop:
    text = value[:R.MAX_RECEIVED_CHARS].replace("\r", " ").replace("\n", " ")
    text = R._WRAPPED_FROM.sub(r"from \1", text, count=1)
    head, balanced_overall = _old_before_date(text)
    tokens, balanced = _old_scan(head)
    balanced = balanced and balanced_overall
    tokens = [t for t in tokens if t.kind != "semi"]
    start = R._keyword_index(tokens, "from")
    has_from = start is not None
    by_at = R._keyword_index(tokens, "by", (start + 1) if has_from else 0, last=has_from)
    if by_at is not None and by_at + 1 >= len(tokens):
        by_at = None
    by_part = tokens[by_at + 1:] if by_at is not None else []
    family = R._family(by_part)
    helo = rdns = ip = None
    note = ""
    if has_from:
        from_part = tokens[start + 1:by_at] if by_at is not None else tokens[start + 1:]
        if not balanced:
            note = "unbalanced parentheses in the header"
            helo = R._first_text(from_part)
        elif R._quoted_structure(text):  # session 10: a quoted envelope address holding a clause
            note = "a quoted string in the header holds parentheses, angle brackets or `by`"
            helo = R._first_text(from_part)
        else:
            helo, rdns, ip, note = R._read_from(from_part, family)
    return R.ReceivedHop(from_helo=helo, rdns=rdns, ip=ip, by=R._first_text(by_part),
                         with_proto=R._upper(R._clause_value(by_part, "with")), for_addr=R._read_for(by_part),
                         has_from=has_from, family=family, note=note)


_OLD_HEADER_NAME = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$", re.DOTALL)


def _old_received_values(header_block) -> list[str]:
    text = R._decode(header_block)
    values: list[str] = []
    current = None
    length = 0
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if line == "" or line == "\r":
            break
        if line[0] in " \t":
            if current is not None and length < R.MAX_RECEIVED_CHARS:
                current.append(line)
                length += len(line)
            continue
        if current is not None:
            values.append(R._finish(current))
            current = None
        match = _OLD_HEADER_NAME.match(line[:R.MAX_RECEIVED_CHARS])
        if match and match.group(1).lower() == "received":
            current = [match.group(2)]
            length = len(current[0])
    if current is not None:
        values.append(R._finish(current))
    return values


# --- generated Received values: the pieces MTAs and attackers write --------------------------

_PIECES = ["from", "by", "with", "id", "for", "via", "FROM", "By", "helo", "HELO", "EHLO", "helo=x.test",
           "claiming", "to", "be", '"evil"', "account", "u", "Authenticated", "sender:", "IDENT:a@b.test",
           "mx.contoso.test", "gw.contoso.test", "bench.fabrikam.test", "unknown", "ESMTPS", "ESMTP", "LOCAL",
           "(", ")", "((", "))", "[", "]", "<", ">", ";", ";;", "[127.0.0.77]", "[127.0.0.10]:2525",
           "[IPv6:2001:db8::1]", "[198.51.100.7]", "203.0.113.9", "user@192.0.2.1", "10.0.8.6.13219",
           "<alice@contoso.test>", "<a;b@c>", "[a;b]", "[(x)]", "(mxgate)", "(Postfix)", "(Exim 4.96)",
           "(8.17.1/8.17.1)", "with Microsoft SMTP Server", "mx.google.com", "(using TLSv1.3 with cipher X (256 bits))",
           "Wed, 02 Dec 2026 07:29:10 GMT", "+0000", "(CET)", "\t", "\r\n\t", "é", "\x00", "verified", "rdns",
           "fa4305009f6c10e3", ":", "=", "\\", '"', "'"]


@st.composite
def _received(draw) -> str:
    parts = draw(st.lists(st.sampled_from(_PIECES) | st.text(max_size=6), max_size=30))
    joiners = draw(st.lists(st.sampled_from([" ", "", "\t", "  "]), min_size=len(parts), max_size=len(parts)))
    return "".join(p + j for p, j in zip(parts, joiners))


def _mxgate_like(helo: str, ip: str, tail: str) -> str:
    return (f"from {helo} ([{ip}])\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\tby "
            f"gw.contoso.test (mxgate)\twith ESMTPS id fa4305009f6c10e3\tfor <alice@contoso.test>;{tail}")


@settings(max_examples=1500, deadline=None)
@given(_received())
def test_received_parse_answers_what_the_two_pass_parse_answered(value):
    assert R._parse(value) == _old_parse(value)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_PIECES + ["bench.fabrikam.test", "a) by evil.test (mxgate", "x;y", "[127.0.0.1]"]),
       st.sampled_from(["127.0.0.77", "198.51.100.7", "::ffff:192.0.2.1", "x"]), st.text(max_size=40))
def test_the_gateways_own_header_with_a_hostile_helo_reads_as_before(helo, ip, tail):
    value = _mxgate_like(helo, ip, tail)
    assert R._parse(value) == _old_parse(value)


def test_the_golden_corpus_reads_as_before():
    for _name, value, _expected in CASES:
        assert R._parse(value) == _old_parse(value), _name
    for _name, value, _peer in ATTACKS:
        assert R._parse(value) == _old_parse(value), _name


@settings(max_examples=1000, deadline=None)
@given(_received())
def test_each_lexeme_is_the_named_patterns_match_and_its_kind(value):
    # The group-less lexer and `_kind` against the named pattern they replace.
    named = [(m.lastgroup, m.group()) for m in _OLD_TOKEN.finditer(value)]
    assert R._lex(value) == [text for _, text in named]
    for group, text in named:
        if group not in ("open", "close", "semi"):
            assert R._kind(text) == group


# --- received_values: the first-eight-characters filter ---------------------------------------

_NAMES = ["Received", "received", "RECEIVED", "Received ", "Received\t", "ReceivedX", "X-Received", "Receive",
          "Re\u0130eived", "R\u00e9ceived", "Received-SPF", "Subject", "From", "K\u212aeceived", " Received", "\tReceived",
          "Received:Received", "rEcEiVeD"]


@st.composite
def _blocks(draw):
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(_NAMES))
        value = draw(st.sampled_from(["", " from a ([1.2.3.4]) by b (mxgate); x", " by-only", ":", " \xff"]) | st.text(max_size=8))
        lines.append(name + draw(st.sampled_from([":", " :", "\t:", "", ";"])) + value)
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from([" ", "\t"])) + draw(st.text(max_size=10)).replace("\n", " "))
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    text = eol.join(lines) + eol + draw(st.sampled_from(["", eol + "Received: body line" + eol]))
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text


@settings(max_examples=1000, deadline=None)
@given(_blocks())
def test_received_values_answers_what_the_full_line_match_answered(block):
    try:
        expected = _old_received_values(block)
    except UnicodeEncodeError:
        return
    assert R.received_values(block) == expected


def test_a_forged_received_below_the_trusted_hop_is_still_never_read():
    # The gateway (127.0.0.10, trusted) names the Internet sender; a header below it, written by
    # the sender, names a "non-routable" address: the walk must stop at the gateway's header.
    block = ("Received: " + _mxgate_like("evil.test", "198.51.100.7", " Wed, 02 Dec 2026 07:29:10 GMT") + "\r\n"
             "Received: from x ([10.0.0.1]) by evil.test (mxgate) with ESMTP; Wed, 02 Dec 2026 07:29:10 GMT\r\n"
             "\r\nbody").encode()
    walk = find_original_sender(R.received_values(block), "127.0.0.10", SkipListSettings(False, ("127.0.0.10/32",)))
    assert (walk.status, str(walk.original_ip), walk.header_index) == ("detected", "198.51.100.7", 0)


# --- the walk's remembered connecting IP and the remembered A-labels ---------------------------

_WALK_IPS = ["127.0.0.10", "::ffff:127.0.0.10", "127.0.0.66", "2001:db8::10", "::FFFF:7F00:000A", " 127.0.0.10"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_WALK_IPS), st.lists(_received(), max_size=3), st.booleans())
def test_the_walk_answers_alike_for_a_connecting_ip_given_as_text_or_parsed(connecting, values, last):
    import ipaddress
    from mxgate.names import normalize_ip
    config = SkipListSettings(last, () if last else ("127.0.0.10/32", "2001:db8::/64"))
    parsed = normalize_ip(ipaddress.ip_address(connecting.strip()))
    try:
        by_text = find_original_sender(values, connecting, config)
    except ValueError:  # " 127.0.0.10": not an address, as before
        assert connecting != connecting.strip()
        return
    assert by_text == find_original_sender(values, parsed, config)
    assert by_text == find_original_sender(values, connecting, config)  # the remembered answer


def test_a_connecting_ip_that_is_not_an_address_still_raises_every_time():
    import pytest
    for _ in range(2):
        with pytest.raises(ValueError):
            find_original_sender([], "gw.contoso.test", SkipListSettings(True, ()))


_DOMAINS = ["fabrikam.test", "FABRIKAM.test.", "mxgate.test", "bücher.example", "xn--bcher-kva.example", "xn--zz.test",
            "a..b", "", " ", "-a.test", "a" * 64 + ".test", "ß.test", "sub.fabrikam.test", "fabrikam.test..", "\u200b.test"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_DOMAINS) | st.text(max_size=20) | st.text(min_size=290, max_size=320))
def test_a_remembered_a_label_is_the_a_label(domain):
    from mxgate.auth import dmarc
    expected = dmarc._a_label(domain)
    assert dmarc.a_label(domain) == expected
    assert dmarc.a_label(domain) == expected  # asked again: the remembered answer


# --- our Authentication-Results: pvalue and the fold, as they were ------------------------------

def _old_pvalue(text: str) -> str:
    from mxgate.auth.results import _BARE, MAX_VALUE
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:MAX_VALUE]
    if text and _BARE.match(text) and text.count("@") <= 1 and not text.startswith("@"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _old_fold(name: str, value: str, eol: bytes = b"\r\n") -> bytes:
    from mxgate.auth.headers import _FIELD_NAME, MAX_LINE
    raw_name = name.encode("ascii")
    if not _FIELD_NAME.match(raw_name):
        raise ValueError(f"invalid header field name {name!r}")
    raw = value.encode("utf-8")
    if re.search(rb"\r(?!\n)|(?<!\r)\n(?![ \t])|\r\n(?![ \t])", raw.rstrip(b"\r\n")):
        raise ValueError(f"header {name} value contains a line break that is not a fold")
    raw = raw.rstrip(b"\r\n")
    if b"\n" in raw:
        return raw_name + b": " + re.sub(rb"\r?\n", eol, raw.lstrip()) + eol
    lines: list[bytes] = []
    current = raw_name + b":"
    for word in re.split(rb"(?<=\S)(?=[ \t])", b" " + raw.lstrip()):
        if len(current) + len(word) > MAX_LINE and current.strip() and len(current) > len(raw_name) + 1:
            lines.append(current)
            current = b""
        current += word
    lines.append(current)
    return eol.join(lines) + eol


_AR_PIECES = ["fabrikam.test", "R/Hr1Fzf", "a b", '"q"', "\\", "@", "a@b", "@a", "a@@b", "\x7f", "\x00", "\t", "é",
              "\u2028", "~", " ", "x" * 120, "(c)", ";", "\r", "\n", "\r\n ", "\r\n", "\n\t", "dkim=pass header.b=x"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_AR_PIECES) | st.text(max_size=12), max_size=8).map("".join))
def test_pvalue_answers_what_the_character_walk_answered(text):
    from mxgate.auth.results import pvalue
    assert pvalue(text) == _old_pvalue(text)
    assert pvalue(text * 40) == _old_pvalue(text * 40)  # past MAX_VALUE


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_AR_PIECES) | st.text(max_size=12), max_size=12).map("".join),
       st.sampled_from([b"\r\n", b"\n"]), st.sampled_from(["Authentication-Results", "X-MXGate-Test", "Bad Name"]))
def test_fold_header_answers_what_it_answered_and_still_refuses_injection(value, eol, name):
    from mxgate.auth.headers import fold_header
    try:
        expected = _old_fold(name, value, eol)
    except (ValueError, UnicodeEncodeError) as exc:
        import pytest
        with pytest.raises(type(exc)):
            fold_header.__wrapped__(name, value, eol)
        return
    assert fold_header.__wrapped__(name, value, eol) == expected


def test_an_injected_header_in_a_result_value_is_still_refused():
    import pytest
    from mxgate.auth.headers import fold_header
    for value in ("spf=pass\r\nX-MXGate-Spam-Verdict: clean", "a\nFrom: b", "a\rb"):
        with pytest.raises(ValueError):
            fold_header.__wrapped__("Authentication-Results", value)
