"""Issue 19, session 7: evaluate_authors returns a remembered DMARC result only when evaluating
again would read the same _dmarc TXT answers — compared with evaluating every time, on what a
sender controls (the From domains, its SPF and DKIM results and their domains, the records of
its own domains, changed between messages, lookups that fail) and a fresh pct= sample per
message. Each broken memo below (a key without one input, no replay of the answers, a `fail`
or a failed lookup remembered) is caught by the same comparison."""

from __future__ import annotations

import random
import string

import pytest

from mxgate.auth import dmarc as dmarc_mod
from mxgate.auth.dkim import DkimResult
from mxgate.auth.dmarc import evaluate_authors
from mxgate.auth.dns import DnsTemporaryError
from mxgate.auth.spf import SpfResult

# Author domains as written: organisational and sub-domains, a public suffix with two labels,
# an IDN, one hiding an invisible character, one that is no domain at all.
AUTHORS = ["fabrikam.test", "news.fabrikam.test", "a.b.fabrikam.test", "tailspin.test", "example.co.uk",
           "sub.example.co.uk", "bücher.test", "fab\u200brikam.test", "bad_domain..test", "FABRIKAM.test"]
IDENTIFIERS = ["fabrikam.test", "news.fabrikam.test", "tailspin.test", "example.co.uk", "esp.test",
               "xn--bcher-kva.test", "other.example.co.uk", ""]
RECORD_NAMES = ["fabrikam.test", "news.fabrikam.test", "a.b.fabrikam.test", "tailspin.test", "example.co.uk",
                "sub.example.co.uk", "xn--bcher-kva.test", "esp.test"]
RECORDS = ["v=DMARC1; p=reject", "v=DMARC1; p=quarantine; sp=none", "v=DMARC1; p=none", "v=DMARC1; p=reject; pct=50",
           "v=DMARC1; p=reject; adkim=s; aspf=s", "v=DMARC1; p=reject; sp=quarantine", "v=DMARC1; p=bogus",
           "v=DMARC1; p=bogus; rua=mailto:d@fabrikam.test", "v=DMARC1; p=quarantine; pct=0", "some-verification=1",
           "two", None]
# Passes weighted up: a remembered result is a pass, none or permerror.
SPF_WORDS = ["pass"] * 4 + ["fail", "softfail", "neutral", "none", "temperror", "permerror"]
DKIM_WORDS = ["pass"] * 4 + ["fail", "neutral", "temperror", "permerror"]


class World:
    """The TXT answers at _dmarc.<name> (a TxtLookup's txt_records), changed between messages."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.data: dict[str, tuple[bytes, ...]] = {}
        self.failing: set[str] = set()
        for name in RECORD_NAMES:
            self.set_record(name)

    def set_record(self, name: str) -> None:
        rec = self.rng.choice(RECORDS)
        key = "_dmarc." + name
        if rec is None:
            self.data.pop(key, None)
        elif rec == "two":
            self.data[key] = (b"v=DMARC1; p=none", b"v=DMARC1; p=reject")
        else:
            self.data[key] = (b"unrelated",) * self.rng.randrange(2) + (rec.encode(),)

    def mutate(self) -> None:
        name = self.rng.choice(RECORD_NAMES)
        if self.rng.random() < 0.25:
            self.failing ^= {"_dmarc." + name}  # the sender's DNS fails, or answers again
        else:
            self.set_record(name)

    def txt_records(self, name: str) -> tuple[bytes, ...]:
        if name in self.failing:
            raise DnsTemporaryError(f"TXT {name}: timeout")
        return self.data.get(name, ())


def _message(rng: random.Random, senders: list) -> tuple:
    """A message from a sender seen before (a stream of mail: the memo's case) or a new one;
    each message with its own DKIM b= and its own SPF explanation text."""
    if senders and rng.random() < 0.9:
        domains, words, spf_domain, spf_identity, signers = rng.choice(senders)
    elif senders and rng.random() < 0.7:  # a sender like one seen, one input changed
        sender = list(rng.choice(senders))
        i = rng.randrange(5)
        sender[i] = (tuple(rng.sample(AUTHORS, 1)), rng.choice(SPF_WORDS), rng.choice(IDENTIFIERS),
                     rng.choice(IDENTIFIERS), tuple((rng.choice(DKIM_WORDS), d) for _, d in sender[4]) or
                     ((rng.choice(DKIM_WORDS), rng.choice(IDENTIFIERS)),))[i]
        if i == 4 and sender[4] and rng.random() < 0.5:  # or only a signer's domain
            sender[4] = tuple((w, rng.choice(IDENTIFIERS)) for w, _ in sender[4])
        domains, words, spf_domain, spf_identity, signers = sender
        senders.append(tuple(sender))
    else:
        domains = tuple(rng.sample(AUTHORS, rng.choice([1, 1, 1, 2, 3])))
        words = rng.choice(SPF_WORDS)
        spf_identity = rng.choice(IDENTIFIERS)
        spf_domain = rng.choice([spf_identity, rng.choice(IDENTIFIERS)])
        signers = tuple((rng.choice(DKIM_WORDS), rng.choice(IDENTIFIERS)) for _ in range(rng.choice([0, 1, 1, 2])))
        senders.append((domains, words, spf_domain, spf_identity, signers))
    spf = SpfResult(words, f"explained {rng.random()}", spf_identity)
    dkim = tuple(DkimResult(word, domain, "sel", "".join(rng.choices(string.ascii_letters, k=8)))
                 for word, domain in signers)
    return domains, spf, spf_domain, dkim


def _mismatches(monkeypatch, rounds: int = 6000, seed: int = 19, first: bool = False) -> tuple[list, int]:
    """Every (inputs, memo's answer, evaluation's answer) that differ (only the first one with
    `first`); and how often the memo answered."""
    rng = random.Random(seed)
    world = World(rng)
    hits = 0
    replay = dmarc_mod._answers_unchanged

    def counting(calls, dnsfunc):
        nonlocal hits
        same = replay(calls, dnsfunc)
        hits += same
        return same

    monkeypatch.setattr(dmarc_mod, "_answers_unchanged", counting)
    monkeypatch.setattr(dmarc_mod, "_evaluated", {})
    bad, senders = [], []
    for _ in range(rounds):
        if rng.random() < 0.05:
            world.mutate()
        domains, spf, spf_domain, dkim = _message(rng, senders)
        sample = rng.uniform(0, 100)
        got = evaluate_authors(domains, spf, spf_domain, dkim, world, sample=sample)
        with monkeypatch.context() as m:
            m.setattr(dmarc_mod, "MEMO", False)
            want = evaluate_authors(domains, spf, spf_domain, dkim, world, sample=sample)
        if got != want:
            bad.append(((domains, spf, spf_domain, dkim, sample), got, want))
            if first:
                break
    return bad, hits


def test_a_remembered_result_is_the_evaluation_of_now(monkeypatch):
    bad, hits = _mismatches(monkeypatch)
    assert not bad, bad[:3]
    assert hits > 500  # the shortcut is taken


def test_the_results_cover_every_outcome(monkeypatch):
    """The comparison above meets every result word (so a memo cannot hide behind one)."""
    seen = set()
    original = dmarc_mod._evaluate_authors

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.add(result.result)
        return result

    monkeypatch.setattr(dmarc_mod, "_evaluate_authors", recording)
    _mismatches(monkeypatch, rounds=2000)
    assert seen == {"pass", "fail", "none", "temperror", "permerror"}


@pytest.mark.parametrize("broken", [
    "key without the DKIM results", "key without the DKIM domains", "key without the SPF result",
    "key without the SPF domain", "key without the author domains", "answers not looked up again",
    "a fail remembered (its pct= sample)", "a failed lookup remembered",
])
def test_each_broken_memo_is_caught(monkeypatch, broken):
    """The differential test above fails for a memo missing any one of its safeguards."""
    keys = {
        "key without the DKIM results": lambda d, s, sd, k: (tuple(d), s.result, sd, tuple(r.domain for r in k)),
        "key without the DKIM domains": lambda d, s, sd, k: (tuple(d), s.result, sd, tuple(r.result for r in k)),
        "key without the SPF result": lambda d, s, sd, k: (tuple(d), sd, tuple((r.result, r.domain) for r in k)),
        "key without the SPF domain": lambda d, s, sd, k: (tuple(d), s.result, tuple((r.result, r.domain) for r in k)),
        "key without the author domains": lambda d, s, sd, k: (s.result, sd, tuple((r.result, r.domain) for r in k)),
    }
    if broken in keys:
        monkeypatch.setattr(dmarc_mod, "_memo_key", keys[broken])
    elif broken == "answers not looked up again":
        monkeypatch.setattr(dmarc_mod, "_answers_unchanged", lambda calls, dnsfunc: True)
    elif broken == "a fail remembered (its pct= sample)":
        monkeypatch.setattr(dmarc_mod, "_REMEMBERED", dmarc_mod._REMEMBERED | {"fail"})
    else:
        monkeypatch.setattr(dmarc_mod, "_REMEMBERED", dmarc_mod._REMEMBERED | {"temperror"})
        monkeypatch.setattr(dmarc_mod._Recording, "failed", property(lambda self: False, lambda self, v: None))
    assert any(_mismatches(monkeypatch, rounds=6000, seed=seed, first=True)[0] for seed in (19, 20, 21, 22))


def test_a_failed_lookup_is_never_remembered_and_never_a_pass(monkeypatch):
    world = World(random.Random(1))
    world.data = {"_dmarc.fabrikam.test": (b"v=DMARC1; p=reject",)}
    monkeypatch.setattr(dmarc_mod, "_evaluated", {})
    spf = SpfResult("fail", "", "fabrikam.test")
    dkim = (DkimResult("pass", "esp.test", "s", "abcdefgh"),)
    world.failing = {"_dmarc.fabrikam.test"}
    assert evaluate_authors(("fabrikam.test",), spf, "fabrikam.test", dkim, world).result == "temperror"
    assert not dmarc_mod._evaluated
    world.failing = set()
    assert evaluate_authors(("fabrikam.test",), spf, "fabrikam.test", dkim, world).result == "fail"
    # A remembered pass, then the record changes or its lookup fails: never the old pass.
    ok = SpfResult("pass", "", "fabrikam.test")
    world.data = {"_dmarc.fabrikam.test": (b"v=DMARC1; p=none",)}
    assert evaluate_authors(("fabrikam.test",), ok, "fabrikam.test", (), world).result == "pass"
    assert dmarc_mod._evaluated
    world.failing = {"_dmarc.fabrikam.test"}
    assert evaluate_authors(("fabrikam.test",), ok, "fabrikam.test", (), world).result == "temperror"
    world.failing = set()
    world.data = {"_dmarc.fabrikam.test": (b"v=DMARC1; p=none",), "_dmarc.news.fabrikam.test": ()}
    assert evaluate_authors(("fabrikam.test",), ok, "fabrikam.test", (), world).result == "pass"
    world.data["_dmarc.fabrikam.test"] = (b"v=DMARC1; p=none", b"v=DMARC1; p=reject")  # two records now
    assert evaluate_authors(("fabrikam.test",), ok, "fabrikam.test", (), world).result == "none"


@pytest.mark.parametrize("shape", ["many authors", "long domains", "many signatures", "a long record"])
def test_what_a_sender_inflates_is_evaluated_not_remembered(monkeypatch, shape):
    """The memo's size stays bounded whatever the sender's From, signatures and records hold."""
    world = World(random.Random(2))
    world.data = {"_dmarc.d0.test": (b"v=DMARC1; p=none",)}
    monkeypatch.setattr(dmarc_mod, "_evaluated", {})
    domains, dkim = ("d0.test",), ()
    if shape == "many authors":
        domains = tuple(f"d{i}.test" for i in range(dmarc_mod.MEMO_AUTHORS + 1))
    elif shape == "long domains":
        domains = ("a" * 60 + "." + "b" * 60 + ".test",) * 3 + ("x" * (dmarc_mod.MEMO_KEY_CHARS - 300) + ".d0.test",)
    elif shape == "many signatures":
        dkim = tuple(DkimResult("pass", "d0.test", "s", "abcdefgh") for _ in range(dmarc_mod.MEMO_AUTHORS + 1))
    else:
        world.data["_dmarc.d0.test"] = (b"v=DMARC1; p=none; " + b"x" * dmarc_mod.MEMO_ANSWER_BYTES,)
    result = evaluate_authors(domains, SpfResult("pass", "", "d0.test"), "d0.test", dkim, world)
    assert result.result in ("pass", "none", "permerror")  # one a memo would keep
    assert not dmarc_mod._evaluated
