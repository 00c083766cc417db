"""Received-header parser: golden MTA shapes, unfolding, and hostile input."""

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.auth.received import (
    MAX_RECEIVED_CHARS,
    ReceivedHop,
    parse_ip_literal,
    parse_received,
    received_values,
)
from received_cases import CASES


@pytest.mark.parametrize("name,value,expected", CASES, ids=[c[0] for c in CASES])
def test_golden_shapes(name, value, expected):
    hop = parse_received(value)
    got = {key: getattr(hop, key) for key in expected}
    if got.get("ip") is not None:
        got["ip"] = str(got["ip"])
    assert got == expected


def test_golden_set_is_broad():
    assert len(CASES) >= 20
    assert sum(1 for _, _, exp in CASES if exp.get("ip")) >= 20


def test_ip_is_typed_and_v4_mapped_becomes_ipv4():
    hop = parse_received("from x (x [IPv6:::ffff:203.0.113.5]) by y with ESMTP;")
    assert hop.ip == ipaddress.IPv4Address("203.0.113.5")
    assert isinstance(hop.ip, ipaddress.IPv4Address)


def test_zone_id_is_dropped_from_the_address():
    hop = parse_received("from X ([fe80::1%eth0]) by X with mapi;")
    assert hop.ip == ipaddress.IPv6Address("fe80::1")
    assert hop.ip.scope_id is None


def test_exchange_by_address_is_never_taken_as_the_relay():
    hop = parse_received("from localhost by ex01.example.com (192.0.2.240) with SMTP;")
    assert hop.ip is None
    assert hop.from_helo == "localhost"


def test_an_unknown_mta_with_two_candidate_peers_is_unreadable():
    """Postfix-like (HELO first) the peer is the last element, Exim-like the first: for an MTA
    we cannot recognise, both readings must agree, or the hop has no peer at all."""
    hop = parse_received("from [10.1.1.1] (unknown [198.51.100.9]) [192.0.2.1] by mx;")
    assert hop.ip is None and "two ways" in hop.note
    assert hop.from_helo == "[10.1.1.1]"
    postfix = parse_received("from [10.1.1.1] (unknown [198.51.100.9]) by mx (Postfix) with ESMTP id 1;")
    assert postfix.ip == ipaddress.ip_address("198.51.100.9")


def test_keywords_inside_comments_do_not_start_clauses():
    hop = parse_received("by mx.example.org (Postfix, from userid 0 with SMTP for <x@y>) id 1;")
    assert (hop.has_from, hop.with_proto, hop.for_addr) == (False, None, None)


def test_nested_comment_cannot_supply_the_address():
    hop = parse_received("from a (rdns.example (fake [10.9.9.9]) [192.0.2.50]) by b;")
    assert hop.ip == ipaddress.ip_address("192.0.2.50")
    assert hop.rdns == "rdns.example"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[192.0.2.1]", "192.0.2.1"),
        ("[192.0.2.1]:25", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("[ipv6:2001:db8::1]:587", "2001:db8::1"),
        ("fe80::1%7", "fe80::1"),
        ("user@203.0.113.4", "203.0.113.4"),
        ("10.0.8.6.13219", "10.0.8.6"),
        ("192.0.2.1:2525", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("host.example", None),
        ("1.2", None),
        ("[999.1.1.1]", None),
        ("", None),
        ("[" + "1" * 200 + "]", None),
    ],
)
def test_parse_ip_literal(text, expected):
    got = parse_ip_literal(text)
    assert (str(got) if got is not None else None) == expected


def test_received_values_unfolds_crlf_and_bare_lf_in_order():
    block = (
        b"Received: from a.example (a.example [192.0.2.1])\r\n"
        b"\tby mx.example.net with ESMTP;\r\n"
        b" Mon, 1 Jan 2018\r\n"
        b"Subject: hello\r\n"
        b"RECEIVED: from b.example (b.example [192.0.2.2])\n"
        b"  by a.example with SMTP; Mon, 1 Jan 2018\n"
        b"received : by c.example id 7;\n"
        b"\r\n"
        b"Received: from body (body [10.0.0.1]) by nobody;\r\n"
    )
    values = received_values(block)
    assert len(values) == 3
    assert values[0].startswith("from a.example") and "by mx.example.net" in values[0]
    assert parse_received(values[0]).ip == ipaddress.ip_address("192.0.2.1")
    assert parse_received(values[1]).by == "a.example"
    assert values[2] == "by c.example id 7;"


def test_received_values_survives_8bit_junk():
    block = b"Received: from h\xff\xfe\xe9 (x [192.0.2.3]) by y;\r\nX-Junk: \x80\x81\r\n"
    (value,) = received_values(block)
    value.encode("utf-8")  # no surrogates leak out
    hop = parse_received(value)
    assert hop.ip == ipaddress.ip_address("192.0.2.3")
    assert hop.from_helo == "h\xff\xfe\xe9"


def test_received_values_accepts_str_and_caps_length():
    long = "Received: from a (a [192.0.2.1]) by b " + "x" * 10_000 + "\n continued\n"
    (value,) = received_values(long)
    assert len(value) <= MAX_RECEIVED_CHARS
    assert parse_received(value).ip == ipaddress.ip_address("192.0.2.1")


def test_continuation_without_a_header_is_ignored():
    assert received_values(" orphan\nReceived: by x;\n") == ["by x;"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_fuzz_text_never_raises(text):
    hop = parse_received(text)
    assert isinstance(hop, ReceivedHop)
    assert hop.ip is None or isinstance(hop.ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))


_SHAPE = st.lists(
    st.sampled_from(
        ["from", "by", "with", "for", "id", "(", ")", "[", "]", "<", ">", ";", " ", "helo=",
         "HELO", "[IPv6:", "192.0.2.1", "::ffff:", "%7", ":25", "@", "unknown", "IDENT:", "."]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_SHAPE)
def test_fuzz_header_like_text_never_raises(text):
    assert isinstance(parse_received(text), ReceivedHop)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_bytes_never_raise(block):
    for value in received_values(b"Received: " + block):
        assert isinstance(parse_received(value), ReceivedHop)


@pytest.mark.parametrize(
    "hostile",
    ["(" * 4000, ")" * 4000, "[" * 4000, "<" * 4000, "from " * 1000, "from a " + "(b " * 2000],
)
def test_pathological_headers_are_fast(hostile):
    # CPU time, not wall time: a loaded machine must not fail it; backtracking blow-ups cost
    # seconds to hours, linear parsing milliseconds.
    start = time.process_time()
    parse_received(hostile * 100)
    assert time.process_time() - start < 2.0


def test_500_headers_one_megabyte_in_bounded_time():
    one = (
        "Received: from out-9.example.net (out-9.example.net [192.0.2.192]) (using TLSv1.2)\r\n"
        "\tby mx.example.org (Postfix) with ESMTPS id C7B1A30014A for <x@example.org>; "
        + "(UTC)" * 380 + "\r\n"
    )
    block = (one * 500).encode()
    assert len(block) >= 1_000_000
    start = time.process_time()
    hops = [parse_received(v) for v in received_values(block)]
    assert time.process_time() - start < 5.0
    assert len(hops) == 500
    assert all(h.ip == ipaddress.ip_address("192.0.2.192") for h in hops)


from received_cases import ATTACKS  # noqa: E402


@pytest.mark.parametrize("name,value,peer", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_sender_chosen_text_never_becomes_the_peer(name, value, peer):
    hop = parse_received(value)
    assert (str(hop.ip) if hop.ip is not None else None) == peer
    if peer is None:
        assert hop.has_from and hop.note  # the reason the walk will show


def test_attack_table_covers_the_families():
    families = {parse_received(value).family for _, value, _ in ATTACKS}
    assert {"postfix", "exim", "sendmail", "exchange", "gmail", "communigate", "domino", "mimecast",
            "sendmail", "barracuda", "ironport", "gmx", "ecelerity", "mxgate"} <= families


# Where each MTA family writes the client's HELO, raw, next to the peer it recorded (203.0.113.5).
HELO_SLOTS = {
    "postfix": "from {h} (unknown [203.0.113.5]) by mx.example.org (Postfix) with ESMTP id 1; Mon, 1 Jan 2024",
    "postfix-rdns": "from {h} (host.example [203.0.113.5]) (using TLSv1.3) by mx.example.org (Postfix) with ESMTPS id 1; d",
    "sendmail": "from {h} (host.example [203.0.113.5] (may be forged)) by mx.example.org (8.17.1/8.17.1) with ESMTP id 1; d",
    "qmail": "from unknown (HELO {h}) (203.0.113.5) by mail.example.net with SMTP; d",
    "exim": "from [203.0.113.5] (helo={h}) by mx.example.org with esmtp (Exim 4.96) id 1qA; d",
    "exim-rdns": "from host.example ([203.0.113.5]:4321 helo={h}) by mx.example.org with esmtp (Exim 4.96) id 1qA; d",
    "communigate": "from [203.0.113.5] (account u HELO {h}) by mx.example.org (CommuniGate Pro SMTP 6.3) with ESMTPA id 1; d",
    "exchange": "from {h} (203.0.113.5) by ex.contoso.com (10.0.0.2) with Microsoft SMTP Server id 15.2.1; d",
    "gmail": "from {h} (host.example. [203.0.113.5]) by mx.google.com with ESMTPS id x1; d",
    "gmx": "from host.example (EHLO {h}) [203.0.113.5] by mail.gmx.net (mp033) with SMTP; d",
    "ironport": "from unknown (HELO {h}) ([203.0.113.5]) by esa1.example.iphmx.com with ESMTP; d",
    "domino": "from {h} ([203.0.113.5]) by notes.example.org (Lotus Domino Release 9.0.1) with ESMTP id 1 ; d",
    "zmailer": 'from host.example ([203.0.113.5]:6337 "EHLO {h}" rhost-flags-OK-OK-OK-OK) by vger.example.org with ESMTP id S1; d',
}
_HELO_TEXT = st.lists(st.sampled_from(
    ["(", ")", "[", "]", " ", ";", "by", "from", "with", "helo=", "HELO", "EHLO", "unknown", "x", "192.0.2.99",
     "[192.0.2.99]", "[IPv6:2001:db8::99]", "(unknown [192.0.2.99])", "@", ":25", '"', "account", "claiming to be",
     "(192.0.2.99)", "(x@192.0.2.99)", "([192.0.2.99] verified)", "(EHLO x)", "(HELO", "helo=[192.0.2.99]", "\\"]),
    max_size=14).map("".join)


@settings(max_examples=1500, deadline=None)
@given(family=st.sampled_from(sorted(HELO_SLOTS)), helo=_HELO_TEXT)
def test_no_helo_text_can_choose_the_peer(family, helo):
    """adversarial.md §9 as a property: whatever a client says in HELO, the parsed peer of the
    trusted hop is the recorded one (203.0.113.5) or none at all (the walk then stops)."""
    hop = parse_received(HELO_SLOTS[family].format(h=helo))
    assert hop.ip is None or str(hop.ip) == "203.0.113.5", (family, helo, hop)


@settings(max_examples=200, deadline=None)
@given(helo=_HELO_TEXT)
def test_mxgate_own_hop_always_names_its_peer(helo):
    from mxgate.smtp.message import received_header

    raw = received_header(helo=helo, peer_ip="203.0.113.5", by="gw.contoso.test", protocol="ESMTPS",
                          trace_id="4f1a", recipient="a@contoso.test", now=0)
    [value] = received_values(raw)
    assert str(parse_received(value).ip) == "203.0.113.5"


# Issue 19: addresses read once per distinct text. The remembered answer must be the computed one
# for any text a sender can write, and what one header made of a text never changes another's.
_LITERALS = ["[127.0.0.1]", "[1.2.3.4]:25", "[IPv6:2001:db8::1]", "[IPv6:::ffff:203.0.113.5]", "fe80::1%7",
             "user@1.2.3.4", "10.0.8.6.13219", "1.2.3.4:25", "unknown", "mx.fabrikam.test", "", " [1.2.3.4] ",
             "[1.2.3.4", "1.2.3.4]", "[999.1.1.1]", "[::ffff:127.0.0.66]", "IPV6:::1", "[IPv6:1.2.3.4]", "0x7f.1"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(_LITERALS), st.text(max_size=90),
                 st.text(alphabet="0123456789abcdef.:[]%@IPv6 ", max_size=60)))
def test_remembered_addresses_are_the_computed_ones(text):
    from mxgate.auth import received

    computed = received._literal.__wrapped__(text) if len(text) <= 80 else None
    assert parse_ip_literal(text) == computed
    assert parse_ip_literal(text) == computed  # the second time from the cache
    assert type(parse_ip_literal(text)) is type(computed)


def test_the_address_cache_is_bounded_and_skips_long_text():
    from mxgate.auth import received

    assert received._literal.cache_info().maxsize == 4096
    before = received._literal.cache_info().currsize
    assert parse_ip_literal("[" + "1" * 200 + "]") is None
    assert received._literal.cache_info().currsize == before


# An envelope address is sender-chosen text too, and MTAs write it *after* `by` (RFC 5321 §4.4
# `for <path>`; Exim's and Haraka's `envelope-from <path>`). A quoted local part may hold spaces,
# parentheses, `by`, `;` and address literals (RFC 5321 §4.1.2 qtextSMTP), so a client could put a
# whole fake `(peer) by host (Postfix)` clause after the real one, and the last top-level `by`
# would then be its own. The peer read must stay the one the MTA recorded (203.0.113.5), or none.
ENVELOPE_SLOTS = {
    "postfix-for": "from host.example (host.example [203.0.113.5]) by mx.example.org (Postfix) with ESMTPS"
                   " id 1 for <{a}@contoso.test>; Mon, 1 Jan 2024 00:00:00 +0000",
    "exim-envelope-from": "from [203.0.113.5] (helo=host.example) by mx.example.org with esmtp (Exim 4.96)"
                          " (envelope-from <{a}@evil.example>) id 1qA for alice@contoso.test; d",
    "haraka-envelope-from": "from host.example ([203.0.113.5]) by mx.example.org (Haraka/2.8.18) with ESMTP"
                            " id 349C envelope-from <{a}@evil.example>; d",
    "sendmail-for": "from host.example (host.example [203.0.113.5]) by mx.example.org (8.17.1/8.17.1) with"
                    " ESMTP id h2F0 for <{a}@contoso.test>; d",
}
STEERING_LOCAL_PARTS = [
    '"(192.0.2.99) by mx (Postfix)"',
    '"x (unknown [192.0.2.99]) by gw.example (Postfix) with"',
    '"x) (192.0.2.99) by mx (Postfix) (y"',
    '"a>b (192.0.2.99) by mx (Postfix) <c"',
    '"\\"(192.0.2.99) by mx (Postfix)\\""',
    '"x;y (192.0.2.99) by mx (Postfix)"',
]


@pytest.mark.parametrize("local", STEERING_LOCAL_PARTS)
@pytest.mark.parametrize("family", sorted(ENVELOPE_SLOTS))
def test_an_envelope_address_after_by_never_chooses_the_peer(family, local):
    hop = parse_received(ENVELOPE_SLOTS[family].format(a=local))
    assert hop.ip is None or str(hop.ip) == "203.0.113.5", (family, local, hop)


_QUOTED_TEXT = st.lists(st.sampled_from(
    ["(", ")", "[", "]", " ", ";", "by", "from", "with", "for", "mx.example", "(Postfix)", "(Exim 4.96)",
     "192.0.2.99", "[192.0.2.99]", "(192.0.2.99)", "(unknown [192.0.2.99])", "<", ">", "@", "\\\"", "\\\\",
     "helo=", "x"]), max_size=12).map(lambda parts: '"' + "".join(parts) + '"')


@settings(max_examples=600, deadline=None)
@given(family=st.sampled_from(sorted(ENVELOPE_SLOTS)), local=_QUOTED_TEXT)
def test_no_quoted_envelope_address_can_choose_the_peer(family, local):
    hop = parse_received(ENVELOPE_SLOTS[family].format(a=local))
    assert hop.ip is None or str(hop.ip) == "203.0.113.5", (family, local, hop)


@pytest.mark.parametrize("local", STEERING_LOCAL_PARTS)
def test_the_gateways_own_hop_names_its_peer_whatever_the_recipient(local):
    """The gateway writes `for <recipient>` into the field the mailbox's walk trusts; the
    recipient is the sender's choice (one a relay domain accepts: `internal_relay`)."""
    from mxgate.smtp.address import parse_path
    from mxgate.smtp.message import received_header

    recipient = str(parse_path(f"<{local}@contoso.test>", allow_null=False))  # a path the gateway accepts
    raw = received_header(helo="evil.example", peer_ip="203.0.113.5", by="gw.contoso.test", protocol="ESMTPS",
                          trace_id="4f1a", recipient=recipient, now=0,
                          tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits)")
    [value] = received_values(raw)
    assert str(parse_received(value).ip) == "203.0.113.5"


# The MTA family decides where the peer is read (HELO first or last), and it is read from the
# `by` part — which ends with the sender's envelope addresses. A recipient (or an Exim/Haraka
# envelope sender) whose name holds another family's word (`exim-users@`, `domino.reports@`)
# must not turn a HELO-first family into a HELO-last one: the HELO's injected `(x [ip])` would
# then be the first TCP-info and be read as the peer.
FAMILY_BY_ADDRESS = [
    ("sendmail", "from x (y [192.0.2.99]) (host.example [203.0.113.5] (may be forged)) by mx.example.org"
                 " (8.17.1/8.17.1) with ESMTP id h2F0 for <{a}@contoso.test>; d"),
    ("exchange", "from x ([192.0.2.99]) (203.0.113.5) by ex.contoso.com (10.0.0.2) with Microsoft SMTP Server"
                 " id 15.2.1 for <{a}@contoso.test>; d"),
    ("gmail", "from x (y [192.0.2.99]) (host.example. [203.0.113.5]) by mx.google.com with ESMTPS id x1"
              " for <{a}@contoso.test>; d"),
    ("domino", "from x (y [192.0.2.99]) ([203.0.113.5]) by notes.example.org (Lotus Domino Release 9.0.1)"
               " with ESMTP id 1 for <{a}@contoso.test>; d"),
]


@pytest.mark.parametrize("local", ["exim-users", "communigate", "ecelerity.alerts", "x.exim"])
@pytest.mark.parametrize("family,value", FAMILY_BY_ADDRESS, ids=[f[0] for f in FAMILY_BY_ADDRESS])
def test_an_envelope_address_never_chooses_the_family(family, value, local):
    hop = parse_received(value.format(a=local))
    assert hop.family == family and str(hop.ip) == "203.0.113.5", hop


def test_quoted_words_before_by_keep_the_hop_readable():
    """The quoted-structure rule reads from the first ` by ` on: a client certificate's names
    before it (Postfix writes them, an issuer may hold parentheses) leave the peer readable."""
    hop = parse_received('from h (h [203.0.113.5]) (using TLSv1.3) (Client CN "x (1)", Issuer "Foo (Test) CA"'
                         ' (verified OK)) by mx.example.org (Postfix) with ESMTPS id 1 for <"a b"@contoso.test>; d')
    assert str(hop.ip) == "203.0.113.5" and hop.note == ""
