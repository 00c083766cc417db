"""Issue 19, session 6: less repeated work between the end of DATA and the stamped message.

Each shortcut is compared with the code it replaced (kept here as the reference) on input a
sender controls: the stamped head's parse built from the checks' parse of the sender's head
(the seal read it again), `CheckSettings.action` by a dict read, the SPF client address text
remembered per address, the ARC key read without naming the file it would adopt.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from mxgate.auth import headers
from mxgate.auth.arc import seal_arc
from mxgate.auth.dkim import generate_dkim_key
from mxgate.auth.headers import parse_fields, remember_prepended, split_headers
from mxgate.auth.spf import _address_text, check_spf
from mxgate.policy.gateway_checks import ACTIONS, DEFAULTS, CheckSettings
from mxgate.verdict import CheckAction

# --- the stamped head: parse of prefix + head from the two parses -----------------------------

_LINES = [b"From: a@fabrikam.test\r\n", b"To: b@contoso.test\r\n", b"Subject: x\r\n", b" folded on\r\n",
          b"\tfolded tab\r\n", b"Received: from x\r\n", b"no colon here\r\n", b"Bad Name: v\r\n",
          b"X-Empty:\r\n", b"Name : v\r\n", b"From x@y Tue\r\n", b"\r\n", b"\n", b"Bare: lf\n", b" \r\n",
          b"DKIM-Signature: v=1; b=AAAA\r\n", b"X-Cr: a\rb\r\n", b"Authentication-Results: gw.mxgate.test; x\r\n"]


def _random_block(rng: random.Random, n: int) -> bytes:
    return b"".join(rng.choice(_LINES) for _ in range(n))


def _reference(prefix: bytes, head: bytes) -> tuple:
    """What the seal read before: parse_fields of split_headers(stamped message)'s block, parsed anew."""
    block, _ = split_headers(prefix + head + b"body\r\n")
    return block, headers._parse_fields(block)


def test_the_stamped_heads_parse_is_the_parse_of_the_whole_block():
    rng = random.Random(6)
    kept = 0
    for _ in range(20000):
        prefix = _random_block(rng, rng.randrange(0, 4))
        head = _random_block(rng, rng.randrange(0, 6)) + rng.choice([b"\r\n", b"\n", b"", b"\r\n\r\n"])
        headers._seeded.clear()
        headers._parse_fields_memo.cache_clear()
        headers._parse_block_memo.cache_clear()
        parse_fields(split_headers(head)[0])  # the checks' parse of the sender's head
        block, want = _reference(prefix, head)
        if remember_prepended(prefix, head):
            kept += 1
            assert list(headers._seeded) == [block]
            assert parse_fields(block) == want, (prefix, head)
            assert not headers._seeded  # taken once, then the memo's
        else:
            assert not headers._seeded
        assert parse_fields(block) == want
    assert kept > 2000  # the common shapes take the shortcut


def test_a_head_starting_with_a_continuation_line_is_not_joined():
    """The sender's first line " x" belongs to the prefix's last field in the whole parse."""
    prefix, head = b"X-Ours: 1\r\n", b" continued\r\nFrom: a@b\r\n\r\n"
    assert not remember_prepended(prefix, head)
    block, want = _reference(prefix, head)
    assert want[0].raw == b"X-Ours: 1\r\n continued\r\n"
    assert parse_fields(block) == want


@pytest.mark.parametrize("prefix", [b"X-Ours: 1", b"X-Ours: 1\r\n\r\n", b"X-Ours: 1\r\n\n", b"\r\nX: 1\r\n"])
def test_a_prefix_that_is_not_whole_lines_of_fields_is_not_joined(prefix):
    head = b"From: a@b\r\n\r\n"
    assert not remember_prepended(prefix, head)
    assert not headers._seeded


def test_the_seal_is_the_same_bytes_with_the_stamped_parse_remembered():
    key, _ = generate_dkim_key()
    rng = random.Random(61)
    for i in range(60):
        head = (b"From: <a@fabrikam.test>\r\nTo: b@contoso.test\r\nSubject: s %d\r\n" % i
                + _random_block(rng, rng.randrange(0, 4)).replace(b"Authentication-Results", b"X-A")
                + b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\n\r\n")
        prefix = b"X-Mxgate-Checks: spf=pass\r\nReceived: from x by gw.mxgate.test id T%d\r\n" % i
        message = prefix + head + b"body %d\r\n" % i
        ar = "gw.mxgate.test; spf=pass smtp.mailfrom=a@fabrikam.test; arc=none"

        def seal():
            try:
                return seal_arc(message, "gw.mxgate.test", "mxgate.test", "s", key, ar, timestamp=1764676800,
                                clauses=ar.split("; "))
            except Exception as exc:  # noqa: BLE001 - the same refusal either way
                return repr(exc)

        headers._parse_fields_memo.cache_clear()
        headers._parse_block_memo.cache_clear()
        headers._seeded.clear()
        before = seal()
        headers._parse_fields_memo.cache_clear()
        headers._parse_block_memo.cache_clear()
        parse_fields(split_headers(head)[0])
        remember_prepended(prefix, head)
        assert seal() == before


# --- CheckSettings.action: the enum member by a dict read --------------------------------------

@pytest.mark.parametrize("word", [*ACTIONS, *CheckAction])
def test_check_action_is_the_enums_member(word):
    cfg = CheckSettings("spf", {**DEFAULTS["spf"], "action": word})
    assert cfg.action is CheckAction(word)
    assert cfg.enabled == (CheckAction(word) is not CheckAction.OFF)


@pytest.mark.parametrize("word", ["Reject", "reject ", "", "none", 1, None])
def test_an_unknown_action_word_fails_as_the_enum_does(word):
    cfg = CheckSettings("spf", {**DEFAULTS["spf"], "action": word})
    with pytest.raises(ValueError):
        CheckAction(word)
    with pytest.raises(ValueError):
        cfg.action


# --- SPF: the client's address text, once per address -----------------------------------------

@pytest.mark.parametrize("ip", ["192.0.2.1", "[192.0.2.1]", "2001:DB8::1", "[2001:db8:0::1]", "::ffff:192.0.2.1",
                                "010.0.0.1", "192.0.2.256", "", "[]", "x", "2001:db8::1%eth0"])
def test_the_address_text_is_the_one_made_each_time(ip):
    try:
        want = str(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        for _ in range(2):  # refused each time: an error is never remembered
            with pytest.raises(ValueError):
                _address_text(ip)
            with pytest.raises(ValueError):
                check_spf(ip, "a@fabrikam.test", "helo.test", timeout=0.1)
        return
    assert _address_text(ip) == want
    assert _address_text(ip) == want


# --- the ARC key: the file is only named when the store has no key yet -------------------------

def test_the_arc_key_is_adopted_from_its_file_once_then_read_from_the_cache(tmp_path):
    from mxgate.store.db import open_engine
    from mxgate.store.keys import KeyRing
    from mxgate.server.gateway import ensure_arc_key

    ensure_arc_key(tmp_path, "gw")
    pem = (tmp_path / "arc-gw.pem").read_bytes()
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        ring = KeyRing(engine, tmp_path, clock=lambda: 1000.0)
        assert not ring.cached("arc", "arc")
        assert ring.arc("gw") == ("gw", pem)  # adopted: the node's file key is the cluster's first
        assert ring.cached("arc", "arc")
        (tmp_path / "arc-gw.pem").unlink()  # read from the cache (and the store), not the file
        assert ring.arc("gw") == ("gw", pem)
        assert KeyRing(engine, None).arc("other") == ("gw", pem)  # the store's key, whatever the base
    finally:
        engine.dispose()


# --- split_headers: the last message's parts kept for its next reader --------------------------

def test_a_split_is_the_split_of_those_bytes_whatever_was_split_before():
    rng = random.Random(66)
    pool = [_random_block(rng, rng.randrange(0, 5)) + rng.choice([b"\r\n", b"\n", b""]) + b"body\r\n" * rng.randrange(3)
            for _ in range(40)]
    for _ in range(20000):
        m = rng.choice(pool)
        if rng.random() < 0.3:
            m = bytes(bytearray(m))  # equal bytes, another object
        assert headers._split(m) == headers._split_now(m)
        assert split_headers(m) == headers._split_now(m)[::2]


def test_a_mutable_buffer_is_split_as_it_is_now():
    buf = bytearray(b"From: a@b\r\n\r\nbody\r\n")
    assert headers._split(buf) == (b"From: a@b\r\n", b"\r\n", b"body\r\n")
    buf[:4] = b"To  "
    assert headers._split(buf) == (b"To  : a@b\r\n", b"\r\n", b"body\r\n")


def test_a_large_message_is_not_kept():
    big = b"From: a@b\r\n\r\n" + b"x" * headers.SPLIT_KEPT
    headers._split(big)
    assert headers._last_split[0] is not big
