"""Issue 19, session 8: fast paths in the gateway's checks compared with the general code they
stand for, on sender-controlled input built to find where they could differ."""

from __future__ import annotations

import random

import pytest

from mxgate.filters import score

_PIECES = [b"wire transfer", b"verify your account", b"lottery", b"winner", b"act now", b"100% free",
           b"click here", b"bitcoin", b"password expire", b"urgent payment", b"inheritance",
           b"wire", b"transfer", b"win", b"winnerwinner", b"lotterywinner", b"100%", b"free", b"act",
           b"xwinner", b"_winner", b"9lottery", b"WINNER", b"Bitcoin", b"wire  transfer", b"click\there"]
_GLUE = [b"", b" ", b"x", b"_", b"1", b"-", b"\n", b"\r\n", b".", b"%", b"\xe9", b"\xff", b"\x00", b"a", b"Z"]


def _general(text: bytes) -> set[bytes]:
    return {m.group(1) for m in score._PHRASES.finditer(text)}


def _hostile(rng: random.Random) -> bytes:
    return b"".join(rng.choice(_PIECES) + rng.choice(_GLUE) if rng.random() < 0.6 else rng.choice(_GLUE)
                    for _ in range(rng.randrange(0, 14)))


@pytest.mark.parametrize("seed", range(4))
def test_phrase_scan_finds_what_the_general_regex_finds(seed):
    rng = random.Random(seed)
    for _ in range(5000):
        text = _hostile(rng)
        assert score._phrases(text) == _general(text), text
        lowered = text.lower()
        assert score._phrases(lowered) == _general(lowered), lowered


def test_phrase_scan_edges():
    for text, want in [(b"winner", {b"winner"}), (b"xwinner", set()), (b"winnerx", set()), (b"_winner", set()),
                       (b"\xe9winner", {b"winner"}), (b"xwinner winner", {b"winner"}), (b"wwinner", set()),
                       (b"lotterywinner lottery", {b"lottery"}), (b"a100% free", set()), (b"%100% free", {b"100% free"}),
                       (b"", set()), (b"act nowadays act now", {b"act now"})]:
        assert score._phrases(text) == _general(text) == want, text


def test_header_rules_count_the_same_phrases():
    head = b"From: a@fabrikam.test\r\nSubject: winner winner lottery\r\n\r\n"
    assert score._header_rules(head, b"click here; bitcoin, xinheritance").count("SPAM_PHRASE") == 3
    assert score._header_rules(head, b"xclick here").count("SPAM_PHRASE") == 2


def test_phrase_scan_with_phrases_inside_phrases(monkeypatch):
    """A phrase starting after a space inside another one (none in the list today): a match
    refused for its start must not hide one starting inside it."""
    import re

    general = re.compile(rb"\b(wire transfer|transfer now|a b|b c|100% free|free)\b")
    monkeypatch.setattr(score, "_PHRASES", general)
    monkeypatch.setattr(score, "_PHRASES_AT", re.compile(general.pattern[2:]))
    rng = random.Random(7)
    pieces = [b"wire transfer", b"transfer now", b"a b", b"b c", b"100% free", b"free", b"wire", b"now", b"a", b"b", b"c"]
    for _ in range(20000):
        text = b"".join(rng.choice(pieces) + rng.choice([b"", b" ", b"x", b"%", b"."]) for _ in range(rng.randrange(0, 8)))
        assert score._phrases(text) == _general(text), text
    assert score._phrases(b"xwire transfer now") == _general(b"xwire transfer now") == {b"transfer now"}


# --- the seal's fold (auth/dkim_fast.fold) against dkimpy's ---------------------------------------

def test_fold_is_dkimpys_fold():
    import dkim

    from mxgate.auth.dkim_fast import fold

    rng = random.Random(8)
    pieces = [b" ", b"  ", b"\r\n ", b"\r\n", b";", b"b=", b"x" * 70, b"y" * 140, b"ab", b"\t", b"z" * 71, b"w" * 72]
    for _ in range(20000):
        header = b"".join(rng.choice(pieces) if rng.random() < 0.5 else bytes(rng.choices(b"ab =;\r\n", k=rng.randrange(0, 90)))
                          for _ in range(rng.randrange(0, 12)))
        namelen = rng.choice([0, 1, 8, 21, 40, 70, 71, rng.randrange(0, 72)])
        assert fold(header, namelen) == dkim.fold(header, namelen=namelen, linesep=b"\r\n"), (header, namelen)


def test_fold_of_a_seal_field():
    import base64

    import dkim

    from mxgate.auth.dkim_fast import fold

    for n in range(0, 400, 7):
        value = (b"i=1; a=rsa-sha256; c=relaxed/relaxed; d=mxgate.test; s=gw; t=1764676800; h=from : to : subject;"
                 b" bh=" + base64.b64encode(bytes(32)) + b"; b=" + base64.b64encode(bytes(range(256)) * 2)[:n] + b"\r\n")
        for name in (b"ARC-Seal", b"ARC-Message-Signature"):
            assert fold(value, len(name)) == dkim.fold(value, namelen=len(name), linesep=b"\r\n")


# --- parse_fields: each block's answer remembered whole ------------------------------------------

def test_parse_fields_remembered_is_the_fresh_parse():
    from mxgate.auth import headers

    rng = random.Random(9)
    pieces = [b"From: a@b\r\n", b"Subject: x\r\n", b" folded\r\n", b"\r\n", b"\n", b"X: y\n", b"junk", b"\r\n\r\n",
              b"DKIM-Signature: v=1;\r\n\tb=abc\r\n", b"No-Colon\r\n", b"A : b\r\n"]
    for _ in range(20000):
        block = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 7)))
        want = headers._parse_fields(block)
        assert headers.parse_fields(block) == want, block
        assert headers.parse_fields(bytes(bytearray(block))) == want  # equal, not the same object
        mutable = bytearray(block)
        assert headers.parse_fields(mutable) == want
        mutable += b"Late: 1\r\n"  # a bytearray changed after a read is read anew
        assert headers.parse_fields(mutable) == headers._parse_fields(bytes(mutable))


# --- the loop's copy of a check's environment ---------------------------------------------------

def test_shallow_copy_is_copy_copy():
    import copy
    import threading

    from mxgate.filters.pipeline import _shallow_copy
    from mxgate.filters.result import CheckEnv

    env = CheckEnv("resolver", "dnsfunc", raw={"spf": 1}, heavy=threading.Semaphore(1))
    env.extra = "set later"
    mine, theirs = _shallow_copy(env), copy.copy(env)
    assert type(mine) is CheckEnv and mine is not env and vars(mine) == vars(theirs) == vars(env)
    assert mine.raw is env.raw  # shallow: the checks' raw answers stay shared, as copy.copy shares them
    mine.heavy = None
    assert env.heavy is not None


# --- the walk: a part with no file name ---------------------------------------------------------

@pytest.mark.parametrize("header, want", [
    (b"Content-Type: text/plain\r\n", ""), (b"", ""), (b"Content-Type: application/pdf; name=\"\"\r\n", ""),
    (b"Content-Disposition: attachment; filename=\"=?utf-8?q?r=C3=A9sum=C3=A9.exe?=\"\r\n", "résumé.exe"),
    (b"Content-Type: application/octet-stream; name=\" spaced.zip \"\r\n", "spaced.zip"),
    (b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.exe\r\n", "€.exe")])
def test_entity_name_is_the_decoded_name(header, want):
    """A part naming no file skips the email package's decoding of "" (which gives "")."""
    from mxgate.filters import mimewalk

    assert mimewalk._decode_words("") == ""
    assert mimewalk._entity(header).name == want
