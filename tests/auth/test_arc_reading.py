"""arc._arc_reading (validate_arc's one pass over the ARC fields, issue 19) answers exactly what
the three readings it replaced answer (`_seals`, `_arc_fields`, `_auth_results`, kept for the
other callers), on header sections a sender writes: ARC fields with hostile i=, d= and tag lists,
in any number and order, and random edits of a real set."""

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.auth.arc import _arc_fields, _arc_reading, _auth_results, _seals
from mxgate.auth.headers import parse_fields

INSTANCES = ["1", "2", "01", "0", "50", "51", "99", "", "x", " 1", "1 ", "\u0661", "\u00b2", "2147483648", "1.0", "-1"]
NAMES = [b"ARC-Seal", b"arc-seal", b"ARC-Message-Signature", b"ARC-Authentication-Results", b"ARC-Other",
         b"DKIM-Signature"]


def reading(block: bytes):
    fields = parse_fields(block)
    try:
        old = ("ok", (_seals(fields), _arc_fields(fields), _auth_results(fields)))
    except Exception as exc:  # noqa: BLE001 - whatever the old code raised, the new must too
        old = ("raised", type(exc))
    try:
        new = ("ok", _arc_reading(fields))
    except Exception as exc:  # noqa: BLE001
        new = ("raised", type(exc))
    assert new == old, block
    return old[0] == "ok" and bool(old[1][1])


def field(name: bytes, instance: str, domain: str = "mxgate.test", extra: str = "") -> bytes:
    if name.lower() == b"arc-authentication-results":
        value = f"i={instance}; gw.test; spf=pass{extra}" if instance != "-" else f"gw.test; spf=pass{extra}"
    else:
        value = f"i={instance}; a=rsa-sha256; d={domain}; s=s1; b=AAAA{extra}"
    return name + b": " + value.encode("utf-8") + b"\r\n"


def test_one_and_two_fields_of_every_kind():
    hits = 0
    domains = ["mxgate.test", "MXGATE.test.", " a.test ", "", "\u00e9.test", "a;b"]
    extras = ["", "; i=2", "; x", "; d=dup", ";;", "; =v"]
    for name, instance, domain, extra in itertools.product(NAMES, INSTANCES + ["-"], domains, extras):
        hits += reading(field(name, instance, domain, extra) + b"From: a@b\r\n")
    for (n1, i1), (n2, i2) in itertools.product(itertools.product(NAMES[:4], INSTANCES[:8]), repeat=2):
        hits += reading(field(n1, i1) + field(n2, i2))
    assert hits > 2000


def test_random_sets():
    rng = random.Random(19)
    for _ in range(5000):
        block = b"".join(field(rng.choice(NAMES), rng.choice(INSTANCES + ["-"]), rng.choice(["d.test", "D.Test.", ""]),
                               rng.choice(["", "; i=3", "; bad"])) for _ in range(rng.randint(0, 6)))
        reading(block + b"Subject: x\r\n")


def test_random_edits_of_a_real_set():
    real = (b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=mxgate.test; s=mxgate-gw;\r\n t=1796220415;\r\n b=pQ9NPV/X==\r\n"
            b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;\r\n d=mxgate.test; s=mxgate-gw; h=from;\r\n"
            b" bh=4t+yaTcuw7Y3c8J=;\r\n b=LM3mz9bOBL2qN3=\r\n"
            b"ARC-Authentication-Results: i=1; gw.mxgate.test;\r\n spf=pass smtp.mailfrom=fabrikam.test\r\n")
    rng = random.Random(7)
    alphabet = [b";", b"=", b" ", b"\r\n", b"\r\n ", b"i", b"1", b"2", b"0", b"d", b"x", b":", b"\xff", b"5"]
    for _ in range(20000):
        block = bytearray(real)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(block) + 1)
            block[at:at + rng.choice([0, 1, 2])] = rng.choice(alphabet)
        reading(bytes(block))


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.text(alphabet="i=1250x;d. \u0661", max_size=12)),
                max_size=5))
def test_any_tag_text(pairs):
    reading(b"".join(name + b": " + text.encode("utf-8") + b"\r\n" for name, text in pairs))
