"""Issue 19, session 6: check_spf returns a remembered evaluation only when pyspf, evaluating
again, would read the same DNS answers — compared with evaluating every time, on records a
sender controls (macros of the address, the local part, the HELO and the clock, include,
redirect, a, mx, ptr, exists, exp=), with the world changing between messages."""

from __future__ import annotations

import random
import types

import pytest

from mxgate.auth import spf as spf_mod
from mxgate.auth.spf import check_spf

IPS = ["192.0.2.1", "192.0.2.77", "198.51.100.5", "2001:db8::1", "::ffff:192.0.2.1"]
SENDERS = ["a@d0.test", "b@d1.test", "c@d2.test", "", "<x@d3.test>", "bob@d4.test", "a@D0.test", "joe@d5.test"]
HELOS = ["d0.test", "mail.d1.test", "unknown.test", "d5.test."]
DOMAINS = [f"d{i}.test" for i in range(6)]
RECORDS = [
    "v=spf1 ip4:192.0.2.0/24 -all", "v=spf1 include:d1.test ~all", "v=spf1 redirect=d2.test", "v=spf1 a mx -all",
    "v=spf1 a:%{h} -all", "v=spf1 exists:%{i}.ok.d3.test -all", "v=spf1 exists:%{l}.users.%{d} -all",
    "v=spf1 -all exp=exp.d4.test", "v=spf1 ptr -all", "v=spf1 ptr:%{d} ?all", "v=spf1 -all exp=exp.%{d}",
    "v=spf1 ip4:198.51.100.0/24 -all exp=exp.d0.test", "v=spf1 ~all", "v=spf1 ip4:bad -all", "v=spf1 ip6:2001:db8::/32 -all",
    "v=spf1 include:d5.test -all", "v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all", "v=spf1 mx:%{o} -all", None, "two",
]
EXPS = ["Not allowed: %{i}", "Not allowed at %{t}", "see %{s} and %{h}", "at %{T}", None]


def _rev(ip: str) -> str:
    import ipaddress

    return ipaddress.ip_address(ip).reverse_pointer


class World:
    """Fake answers for pyspf's DNSLookup, as dnspython's returns them: [((name, qtype), value)]."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.data: dict[tuple[str, str], list] = {}
        self.now = 1_764_680_000
        for d in DOMAINS:
            self.set_record(d)
        for _ in range(40):
            self.mutate()

    def set_record(self, domain: str) -> None:
        rec = self.rng.choice(RECORDS)
        if rec is None:
            self.data.pop((domain, "TXT"), None)
        elif rec == "two":
            self.data[(domain, "TXT")] = [(b"v=spf1 -all",), (b"v=spf1 +all",)]
        else:
            self.data[(domain, "TXT")] = [(b"unrelated",), tuple(rec[i:i + 20].encode() for i in range(0, len(rec), 20))]

    def mutate(self) -> None:
        r = self.rng
        kind = r.randrange(6)
        d = r.choice(DOMAINS)
        ip = r.choice(IPS)
        v4 = [i for i in IPS if ":" not in i]
        if kind == 0:
            self.set_record(d)
        elif kind == 1:
            self.toggle((d, "A"), r.choice(v4))
            self.toggle((f"mx.{d}", "A"), r.choice(v4))
            self.data[(d, "MX")] = [(10, f"mx.{d}")]
        elif kind == 2:
            self.toggle((_rev(ip), "PTR"), r.choice(DOMAINS + ["mail.d1.test", "x.other.test"]))
            self.toggle((r.choice(HELOS).lower().rstrip("."), "A"), r.choice(v4))
        elif kind == 3:
            self.toggle((f"{ip}.ok.d3.test", "A"), "127.0.0.2")
            self.toggle((f"{r.choice(['a', 'b', 'bob', 'joe', 'postmaster'])}.users.{d}", "A"), "127.0.0.2")
        elif kind == 4:
            exp = r.choice(EXPS)
            if exp is None:
                self.data.pop((f"exp.{d}", "TXT"), None)
            else:
                self.data[(f"exp.{d}", "TXT")] = [(exp.encode(),)]
        else:
            self.toggle((f"{self.now + r.randrange(0, 4)}.t.d4.test", "A"), "127.0.0.2")

    def toggle(self, key, value) -> None:
        values = self.data.setdefault(key, [])
        if value in values:
            values.remove(value)
        else:
            values.append(value)
        if not values:
            del self.data[key]

    def lookup(self, name, qtype, *_args):
        name = str(name).lower().rstrip(".")
        return [((name, qtype), v) for v in self.data.get((name, qtype), [])]


@pytest.fixture
def world(monkeypatch):
    w = World(random.Random(19))
    monkeypatch.setattr(spf_mod, "_LOOKUP", w.lookup)
    monkeypatch.setattr(spf_mod.pyspf, "time", types.SimpleNamespace(time=lambda: w.now))
    monkeypatch.setattr(spf_mod, "_evaluated", {})
    return w


def _reference(monkeypatch, *args):
    with monkeypatch.context() as m:
        m.setattr(spf_mod, "MEMO", False)
        return check_spf(*args, timeout=5.0)


def test_a_remembered_result_is_the_evaluation_of_now(world, monkeypatch):
    rng = random.Random(7)
    hits = 0
    replay = spf_mod._answers_unchanged

    def counting(calls, timeout):
        nonlocal hits
        same = replay(calls, timeout)
        hits += same
        return same

    monkeypatch.setattr(spf_mod, "_answers_unchanged", counting)
    seen = set()
    for _ in range(6000):
        if rng.random() < 0.1:
            world.mutate()
        if rng.random() < 0.1:
            world.now += rng.randrange(1, 3)
        args = (rng.choice(IPS), rng.choice(SENDERS), rng.choice(HELOS))
        got = check_spf(*args, timeout=5.0)
        want = _reference(monkeypatch, *args)
        assert got == want, (args, got, want)
        seen.add(got.result)
    assert hits > 1500  # the shortcut is taken
    assert {"pass", "fail", "softfail", "neutral", "none", "permerror"} <= seen


def test_an_explanation_read_with_the_clock_is_evaluated_each_time(world, monkeypatch):
    """%{t} is allowed in exp= text only (RFC 7208 §7.3): the explanation carries the time."""
    world.data.clear()
    world.data[("d4.test", "TXT")] = [(b"v=spf1 -all exp=exp.d4.test",)]
    world.data[("exp.d4.test", "TXT")] = [(b"Not allowed at %{t}",)]
    args = ("192.0.2.1", "bob@d4.test", "d0.test")
    first = check_spf(*args, timeout=5.0)
    assert first.result == "fail" and str(world.now) in first.explanation
    world.now += 1  # the same answers for every name asked
    second = check_spf(*args, timeout=5.0)
    assert second == _reference(monkeypatch, *args) and str(world.now) in second.explanation
    assert not spf_mod._evaluated


def test_a_changed_answer_is_evaluated_again(world, monkeypatch):
    world.data.clear()
    world.data[("d0.test", "TXT")] = [(b"v=spf1 include:d1.test -all",)]
    world.data[("d1.test", "TXT")] = [(b"v=spf1 ip4:192.0.2.1 -all",)]
    args = ("192.0.2.1", "a@d0.test", "d0.test")
    assert check_spf(*args, timeout=5.0).result == "pass"
    assert check_spf(*args, timeout=5.0).result == "pass"
    world.data[("d1.test", "TXT")] = [(b"v=spf1 ip4:192.0.2.2 -all",)]  # the included record only
    assert check_spf(*args, timeout=5.0).result == "fail"


def test_the_helo_and_the_sender_are_part_of_the_key(world):
    world.data.clear()
    world.data[("d0.test", "TXT")] = [(b"v=spf1 a:%{h} -all",)]
    world.data[("mail.d1.test", "A")] = ["192.0.2.1"]
    assert check_spf("192.0.2.1", "a@d0.test", "mail.d1.test", timeout=5.0).result == "pass"
    assert check_spf("192.0.2.1", "a@d0.test", "unknown.test", timeout=5.0).result == "fail"
    world.data[("d0.test", "TXT")] = [(b"v=spf1 exists:%{l}.users.%{d} -all",)]
    world.data[("a.users.d0.test", "A")] = ["127.0.0.2"]
    assert check_spf("192.0.2.1", "a@d0.test", "d0.test", timeout=5.0).result == "pass"
    assert check_spf("192.0.2.1", "b@d0.test", "d0.test", timeout=5.0).result == "fail"


def test_a_failed_lookup_is_never_remembered(world, monkeypatch):
    def broken(name, qtype, *args):
        raise spf_mod.pyspf.TempError("DNS down")

    monkeypatch.setattr(spf_mod, "_LOOKUP", broken)
    assert check_spf("192.0.2.1", "a@d0.test", "d0.test", timeout=5.0).result == "temperror"
    assert not spf_mod._evaluated


def test_another_lookup_function_disables_the_memo(world, monkeypatch):
    """A DNSLookup put in place of ours records nothing: no result may then be remembered."""
    monkeypatch.setattr(spf_mod.pyspf, "DNSLookup", world.lookup)
    world.data[("d0.test", "TXT")] = [(b"v=spf1 ip4:192.0.2.1 -all",)]
    assert check_spf("192.0.2.1", "a@d0.test", "d0.test", timeout=5.0).result == "pass"
    assert not spf_mod._evaluated
