"""The fast reading of mxgate's own Received field (auth/received.py `_ours`) answers exactly what
the general parser (`_parse`) answers, on fields whose every piece a sender may have chosen or
forged: the HELO, the rDNS name, the address literal, the TLS comment, the by host, protocol, id,
recipient and date, with keywords, sender-text markers, brackets, `;`, Unicode spaces and line
ends in each, and on random edits of whole fields. `_ours` may decline (None); when it answers,
its answer is `_parse`'s."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.auth import received
from mxgate.auth.received import MAX_RECEIVED_CHARS, _ours, _parse, parse_received, received_values
from mxgate.smtp.message import received_header

DEFAULTS = {
    "helo": "bench.fabrikam.test",
    "rdns": "",
    "ip": "127.0.0.77",
    "tls": "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    "bits": " (256 bits)",
    "by": "gw.contoso.test",
    "connector": "",
    "proto": "ESMTPS",
    "id": "79c55e77d02fac46",
    "rcpt": "alice@contoso.test",
    "date": "Wed, 02 Dec 2026 14:06:55 GMT",
}

# Words the general parser reads: clause keywords, sender-text markers, MTA family names.
WORDS = ["from", "by", "with", "for", "id", "via", "helo", "HELO", "ehlo", "Ehlo", "helo=x", "using", "user",
         "client", "account", "auth", "authenticated", "login", "claiming", "mxgate", "postfix", "exim",
         "unknown", "softdnserr", "verified", "may", "IDENT:u@h", "a.b.c", "1.2.3.4", "10.0.0.1.25", "x", "X-1_2",
         "Microsoft", "with"]
SPECIAL = ["", " ", "\t", "  ", "(", ")", "[", "]", "<", ">", ";", ":", "=", "@", '"', "'", "\\", "\r\n", "\r\n\t",
           "\n", "\xa0", "\u2028", "\x1c", ".", "-", "_", "/", ",", "+", "é", "(mxgate)", "[1.2.3.4]",
           "([10.9.8.7])", " by x", " for <a@b>", "; d", "(using x)", " (connector y)"]
LITERALS = ["127.0.0.77", "IPv6:2001:db8::5", "2001:db8::5", "IPv6:::ffff:203.0.113.5", "::1", "1.2.3", "999.1.1.1",
            "1.2.3.4:25", "IPv6:fe80::1", "ipv6:2001:db8::1", "0.0.0.0", "abc", "", "1.2.3.4.5", "fe80::1%1",
            "FFFF::1", "IPv6:1.2.3.4"]


def field(**pieces) -> str:
    """mxgate's Received value (as received_values reads it: folds joined, tabs kept)."""
    p = {**DEFAULTS, **pieces}
    tcp = f"({p['rdns']} [{p['ip']}])" if p["rdns"] else f"([{p['ip']}])"
    parts = [f"from {p['helo']} {tcp}"]
    if p["tls"] is not None:
        parts.append(f"(using {p['tls']}{p['bits']})")
    parts.append(f"by {p['by']} (mxgate)")
    if p["connector"]:
        parts.append(f"(connector {p['connector']})")
    parts.append(f"with {p['proto']} id {p['id']}")
    if p["rcpt"] is not None:
        parts.append(f"for <{p['rcpt']}>")
    return "\t".join(parts) + "; " + p["date"]


def same(value: str) -> bool:
    """True when `_ours` answered (and the answer is `_parse`'s); asserts when they differ."""
    fast = _ours(value)
    if fast is None:
        return False
    assert fast == _parse(value), value
    assert parse_received(value) == fast
    return True


def slot_values(slot: str) -> list[str]:
    base = DEFAULTS[slot]
    out = list(WORDS) + list(SPECIAL) + [w.upper() for w in WORDS]
    out += [base + s for s in SPECIAL] + [s + base for s in SPECIAL] + [base + " " + w for w in WORDS]
    out += [w + " " + base for w in WORDS] + [base[: len(base) // 2] + s + base[len(base) // 2:] for s in SPECIAL]
    if slot == "ip":
        out += LITERALS
    return out


def test_every_hostile_piece_in_every_slot():
    hits = total = 0
    for slot in DEFAULTS:
        for piece in slot_values(slot):
            for other in ({}, {"rdns": "mail.example"}, {"tls": None, "rcpt": None}, {"connector": "Partner_1"}):
                if slot in other:
                    continue
                total += 1
                hits += same(field(**{slot: piece}, **other))
    assert total > 3000
    assert hits > 500  # the fast reading is exercised, not only declined


def test_pairs_of_hostile_words_in_the_by_part_and_the_tcp_info():
    hits = 0
    for a in WORDS:
        for b in WORDS:
            hits += same(field(rdns=a, by=b))
            hits += same(field(proto=a, id=b))
            hits += same(field(helo=a, tls=f"x {b}"))
            hits += same(field(by=a, rcpt=f"{b}@x"))
    assert hits > 1000


def test_random_edits_of_whole_fields():
    rng = random.Random(19)
    alphabet = SPECIAL + WORDS + list("abcXYZ0129 \t")
    hits = 0
    for _ in range(30000):
        value = field(rdns=rng.choice(["", "", "rdns.example"]), connector=rng.choice(["", "C_1"]),
                      ip=rng.choice(LITERALS[:4]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(value) + 1)
            cut = rng.choice([0, 0, 1, 2, 5])
            value = value[:at] + rng.choice(alphabet + [""]) + value[at + cut:]
        hits += same(value)
    assert hits > 1000


def test_fields_past_the_length_bound_are_the_general_parsers():
    """`_parse` reads the first MAX_RECEIVED_CHARS characters only: so must the answer."""
    for slot in ("helo", "rcpt", "tls", "by", "id", "date"):
        for extra in (MAX_RECEIVED_CHARS - 300, MAX_RECEIVED_CHARS - 150, MAX_RECEIVED_CHARS, 2 * MAX_RECEIVED_CHARS):
            long = DEFAULTS[slot] + "a" * extra if slot not in ("rcpt", "date") else "a" * extra + DEFAULTS[slot]
            value = field(**{slot: long})
            assert _ours(value) is None or len(value) <= MAX_RECEIVED_CHARS
            assert parse_received(value) == _parse(value)


@settings(max_examples=3000, deadline=None)
@given(slot=st.sampled_from(sorted(DEFAULTS)),
       text=st.lists(st.sampled_from(list("aZ09.-_:@[]()<>;= \t\"'\\\r\n\xa0") + ["by", "for", "with", "helo", "HELO"]),
                     max_size=12).map("".join))
def test_any_text_in_any_slot(slot, text):
    same(field(**{slot: text}))


def test_what_our_session_writes_is_read_fast():
    for helo, ip, rcpt, tls in (("bench.fabrikam.test", "127.0.0.77", "alice@contoso.test", "using TLSv1.3 with cipher X"),
                                ("mail.example", "2001:db8::5", None, ""), ("a-b_c.d", "::ffff:192.0.2.1", "b@c.d", "")):
        raw = received_header(helo=helo, peer_ip=ip, by="gw.contoso.test", protocol="ESMTPS", trace_id="0123abcd",
                              recipient=rcpt, tls=tls, connector="Third party")
        (value,) = received_values(raw)
        assert same(value), value


def test_a_parser_error_in_the_fast_reading_is_a_parser_error(monkeypatch):
    def boom(value):
        raise RuntimeError("bug")

    monkeypatch.setattr(received, "_ours", boom)
    assert parse_received(field()).note == "parser error"
