"""Pure parts of the gateway: settings validation (policy apply exit 2), DNSBL names, rate windows,
greylist timing, score thresholds, verdict combination; and callahead recipient validation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from gwkit import gw_port
from rig import INTERNET, RawSMTP

from mxgate.filters import dnsbl, greylist, ratelimit, score
from mxgate.filters.pipeline import decide_message
from mxgate.filters.result import CheckResult, fired, passed
from mxgate.policy.gateway_checks import load_checks, validate_gateway_checks
from mxgate.policy.model import GatewayPolicy, policy_from_dict
from mxgate.smtp.replies import REPLIES
from mxgate.verdict import Action


def gp(**tables) -> GatewayPolicy:
    return policy_from_dict({"gateway": tables}).gateway


@pytest.mark.parametrize("tables,rule", [
    ({"spam": {"action": "reject"}}, "unknown-check"),
    ({"dnsbl": {"zone": ["x"]}}, "unknown-key"),
    ({"dnsbl": {"action": "drop"}}, "invalid-value"),
    ({"dnsbl": {"zones": "zen.example.test"}}, "invalid-type"),
    ({"clamd": {"timeout": 0}}, "invalid-value"),
    ({"rdns": {"require": "maybe"}}, "invalid-value"),
    ({"score": {"tag_threshold": 20.0}}, "threshold-order"),
    # NaN passed `< 0` and `<= 0` alike; uvloop's call_later(nan) raises ValueError, so a check with
    # `timeout = nan` (TOML has nan; the API's JSON NaN, the page's "nan") failed on every message.
    ({"spf": {"timeout": float("nan")}}, "invalid-value"),
    ({"ratelimit": {"window": float("nan")}}, "invalid-value"),
])
def test_bad_gateway_settings_are_refused(tables, rule):
    issues = validate_gateway_checks(gp(**tables))
    assert [i.rule for i in issues] == [rule]


def test_defaults_and_overrides():
    checks = load_checks(gp(dnsbl={"zones": ["zen.example.test"]}))
    assert checks["dnsbl"]["zones"] == ("zen.example.test",) and checks["dnsbl"].action == "reject"
    assert checks["greylist"].action == "off" and checks["clamd"].fail_closed and not checks["spf"].fail_closed


def test_policy_apply_refuses_bad_gateway_table_with_exit_2(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[accepted_domain]]\nname = "contoso.test"\n[gateway.dnsbl]\naction = "explode"\n')
    r = subprocess.run([sys.executable, "-m", "mxgate", "--home", str(tmp_path / "h"), "policy", "apply", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "gateway check 'dnsbl': action" in r.stderr


def test_dnsbl_query_names_rfc5782():
    assert dnsbl.query_name("192.0.2.99", "zen.example.test") == "99.2.0.192.zen.example.test"
    assert dnsbl.query_name("::ffff:192.0.2.99", "z.test") == "99.2.0.192.z.test"
    assert dnsbl.query_name("2001:db8::1", "z.test").startswith("1.0.0.0.0.0.0.0") and \
        dnsbl.query_name("2001:db8::1", "z.test").endswith("8.b.d.0.1.0.0.2.z.test")


def test_sliding_window():
    w = ratelimit.SlidingWindow(10.0, 2)
    assert w.hit("a", 0) and w.hit("a", 1) and not w.hit("a", 2) and w.hit("b", 2)
    assert w.hit("a", 10.5)  # the first event left the window


def test_greylist_timing():
    cfg = load_checks(gp(greylist={"action": "tempfail", "delay": 60.0, "retry_window": 100.0}))["greylist"]
    g = greylist.Greylist()
    assert g.check("192.0.2.1", "a@x", "b@y", cfg, 0).fired
    assert g.check("192.0.2.200", "a@x", "b@y", cfg, 30).fired  # same /24, too early
    assert not g.check("192.0.2.7", "A@X", "b@y", cfg, 61).fired  # retried in time (case-insensitive)
    assert not g.check("192.0.2.1", "a@x", "b@y", cfg, 5000).fired  # remembered
    assert g.check("198.51.100.1", "a@x", "b@y", cfg, 5000).fired  # other network


def test_score_thresholds_and_rules():
    cfg = load_checks(gp(score={"tag_threshold": 2.0, "quarantine_threshold": 4.0, "reject_threshold": 6.0}))["score"]
    clean = b"From: a@x.test\r\nDate: x\r\nMessage-ID: <1@x>\r\nSubject: hi\r\n\r\nhello\r\n"
    assert score.compute({}, clean, b"", cfg).verdict == "clean"
    res = {"spf": fired("spf", "tag", "spf-fail", "", result="fail")}
    s = score.compute(res, clean, b"", cfg)
    assert s.rules == (("SPF_FAIL", 3.0),) and s.verdict == "tag"
    s = score.compute({**res, "dnsbl": passed("dnsbl", listed=["z"], allowed=[])}, clean, b"", cfg)
    assert s.total == 8.0 and s.verdict == "reject"
    capped = load_checks(gp(score={"action": "tag"}))["score"]
    assert score.decide(score.Score(99.0, (), "reject"), capped).action == "tag"


def test_spam_phrases_on_lowered_text_match_the_case_insensitive_pattern():
    """Differential (issue 19): the phrase rule now matches a plain pattern against the lowered
    text; the same phrases are found as with the old (?i) pattern, on random mixes of phrases in
    random case, word characters at their edges, bytes above 127 and line breaks."""
    import random
    import re

    old = re.compile(rb"(?i)\b(wire transfer|verify your account|lottery|winner|act now|100% free|"
                     rb"click here|bitcoin|password expire|urgent payment|inheritance)\b")
    phrases = [b"wire transfer", b"verify your account", b"lottery", b"winner", b"act now", b"100% free",
               b"click here", b"bitcoin", b"password expire", b"urgent payment", b"inheritance"]
    bits = [b" ", b"_", b"x", b"9", b"\r\n", b"\xc3\x89", b"\xff", b"%", b"-", b"K", b"\xe2\x84\xaa"]
    rnd = random.Random(19)
    for _ in range(3000):
        parts = []
        for _ in range(rnd.randint(1, 8)):
            if rnd.random() < 0.5:
                p = rnd.choice(phrases)
                parts.append(bytes(c ^ 0x20 if 97 <= c <= 122 and rnd.random() < 0.5 else c for c in p))
            else:
                parts.append(b"".join(rnd.choice(bits) for _ in range(rnd.randint(0, 3))))
        head, text = b"Subject: " + b"".join(parts[::2]), b"".join(parts[1::2])
        want = {m.group(1).lower() for m in old.finditer(head + b"\n" + text)}
        assert {m.group(1) for m in score._PHRASES.finditer((head + b"\n" + text).lower())} == want
        hits = score._header_rules(head, text).count("SPAM_PHRASE")
        assert hits == min(len(want), score.MAX_PHRASE_HITS), (head, text)
    clean = b"From: a@x.test\r\nDate: x\r\nMessage-ID: <1@x>\r\nSubject: You are a WINNER\r\n\r\n"
    assert score._header_rules(clean, b"Click Here for BitCoin") == ["SPAM_PHRASE"] * 3


def test_decide_message_precedence():
    sc = score.Score(0.0, (), "clean")
    r = {"spf": fired("spf", "reject", "spf-fail", "x"), "clamd": fired("clamd", "reject", "malware", "y"),
         "dmarc": fired("dmarc", "quarantine", "dmarc-policy", "z")}
    assert decide_message(r, sc).verdict.reason == "malware"
    t = {"dnsbl": fired("dnsbl", "tempfail", "dnsbl", "x"), "dmarc": fired("dmarc", "quarantine", "dmarc-policy", "z")}
    v = decide_message(t, sc).verdict
    assert v.action is Action.TEMPFAIL and REPLIES[v.reason].code == 451  # never a 5xx text on a tempfail
    q = decide_message({"dmarc": fired("dmarc", "quarantine", "dmarc-policy", "z")}, sc).verdict
    assert q.action is Action.QUARANTINE
    assert decide_message({"x": CheckResult("x", "timeout", action="off")}, sc).verdict.reason == "queued"


def test_callahead_validates_recipients_at_rcpt_and_caches(make_gateway, sink, test_ca):
    sink.refuse["ghost@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], recipient_validation="callahead")
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO s.test")
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        # Pipelined RCPTs keep their order while the callahead runs.
        c.send("RCPT TO:<ghost@contoso.test>\r\nRCPT TO:<carol@contoso.test>\r\nNOOP\r\n")
        assert c.read_reply() == (550, str(REPLIES["unknown-recipient"]))
        assert c.read_reply()[0] == 250  # carol is not in the directory, but the downstream takes her
        assert c.read_reply()[0] == 250
        calls = len(sink.peers)
        assert c.cmd("RCPT TO:<ghost@contoso.test>")[0] == 550
        assert len(sink.peers) == calls  # answered from the cache
        assert c.cmd("RCPT TO:<x@victim.example>") == (550, str(REPLIES["relay-denied"]))


def test_check_worker_slots_per_client_free_fast_and_bounded_when_held(monkeypatch):
    """A client's share of the check workers: a free slot is taken at once (issue 19: without a
    Task per check), a held one makes the next check of that client wait at most QUEUE_WAIT and
    count as timed out, others are served meanwhile, and every slot is given back."""
    import asyncio
    import threading

    from mxgate.filters import pipeline as pipeline_module
    from mxgate.filters.pipeline import Pipeline
    from mxgate.filters.result import Budget

    monkeypatch.setattr(pipeline_module, "QUEUE_WAIT", 0.05)  # the bound under test, not a sync
    hold = threading.Event()

    async def main():
        p = Pipeline(workers=4, per_client=4)  # a client gets half of the workers: 2 slots
        try:
            assert await p._in_worker("192.0.2.1", Budget(10), lambda: "free") == ("ok", "free")
            held = [asyncio.ensure_future(p._in_worker("192.0.2.1", Budget(10), hold.wait, 10)) for _ in range(2)]
            while p.running < 2:  # both of the client's slots are busy in workers
                await asyncio.sleep(0)
            assert await p._in_worker("192.0.2.1", Budget(10), lambda: "late") == ("timeout", None)
            assert await p._in_worker("198.51.100.7", Budget(10), lambda: "other") == ("ok", "other")
            hold.set()
            assert [await h for h in held] == [("ok", True), ("ok", True)]
            assert await p._in_worker("192.0.2.1", Budget(10), lambda: "again") == ("ok", "again")
            assert not p._slots["192.0.2.1"].locked()
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


def test_a_check_queued_longer_than_its_budget_still_gets_its_whole_budget_from_its_start(monkeypatch):
    """The budget counts from when a worker starts the job (issue 19: one timer per job instead
    of a start Future and two asyncio.wait): a job that waited in the queue through several of
    the timer's looks is neither timed out for the wait nor stopped early, and one that then
    overruns is stopped at its own deadline and awaited — nothing left running."""
    import asyncio
    import threading

    from mxgate.filters import pipeline as pipeline_module
    from mxgate.filters.pipeline import Pipeline, _Job
    from mxgate.filters.result import Budget, current_budget

    hold = threading.Event()
    looks = []
    real_look = _Job._look
    monkeypatch.setattr(_Job, "_look", lambda self: (looks.append(self.started), real_look(self)))
    monkeypatch.setattr(pipeline_module, "QUEUE_WAIT", 60.0)

    def overrun():
        budget = current_budget()
        while not budget.cancelled:  # ends only when told (the pipeline cancels at the deadline)
            hold.wait(0.001)
        return "finished after its budget"  # still a timeout: the answer came too late

    async def main():
        p = Pipeline(workers=2, per_client=4)  # one worker slot per client
        try:
            held = [asyncio.ensure_future(p._in_worker(ip, Budget(30), hold.wait, 30))
                    for ip in ("192.0.2.1", "192.0.2.2")]
            while p.running < 2:
                await asyncio.sleep(0)
            late = asyncio.ensure_future(p._in_worker("192.0.2.3", Budget(0.02), lambda: "late"))
            while looks.count(False) < 3:  # the queued job's timer looked three times: > 3 budgets queued
                await asyncio.sleep(0.005)
            assert not late.done()
            hold.set()
            assert await late == ("ok", "late")
            assert [await h for h in held] == [("ok", True), ("ok", True)]
            budget = Budget(0.05)
            assert await p._in_worker("192.0.2.3", budget, overrun) == ("timeout", None)
            assert budget.cancelled and p.running == 0
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


def test_closing_the_pipeline_answers_queued_checks_at_once_and_never_as_a_pass(monkeypatch):
    import asyncio
    import threading

    from mxgate.filters.pipeline import Pipeline
    from mxgate.filters.result import Budget

    hold = threading.Event()

    async def main():
        p = Pipeline(workers=2, per_client=4)
        try:
            held = [asyncio.ensure_future(p._in_worker(ip, Budget(600), hold.wait, 600))
                    for ip in ("192.0.2.1", "192.0.2.2")]
            while p.running < 2:
                await asyncio.sleep(0)
            queued = asyncio.ensure_future(p._in_worker("192.0.2.3", Budget(600), lambda: "never"))
            await asyncio.sleep(0)
            p.close()
            assert await asyncio.wait_for(queued, 10) == ("timeout", None)  # not at its 600 s timer
            assert await p._in_worker("192.0.2.4", Budget(1), lambda: "after") == ("timeout", None)
            hold.set()
            assert [await h for h in held] == [("ok", True), ("ok", True)]  # they were running: they end
            assert p.running == 0
        finally:
            hold.set()
            p.close()

    asyncio.run(main())


@pytest.mark.parametrize("walk_error,outcome,action", [
    (None, "pass", "off"),
    ("budget", "timeout", "tempfail"),  # on_timeout = closed by default
    ("limit", "error", "reject"),  # on_error = reject by default
])
def test_attachments_on_the_loop_keeps_the_walks_outcome_never_a_pass(walk_error, outcome, action):
    """The attachments check reads the walk on the loop (issue 19, no worker hop): a walk that
    ran out of time is still its timeout, one that stopped at a limit its error."""
    import asyncio

    from mxgate.filters import attachments, mimewalk
    from mxgate.filters.pipeline import Pipeline, _runs_on_loop
    from mxgate.filters.result import BudgetExceeded, CheckEnv, MessageFacts
    from mxgate.policy.gateway_checks import CheckSettings, DEFAULTS

    cfg = CheckSettings("attachments", {**DEFAULTS["attachments"], "action": "reject"})
    assert _runs_on_loop(attachments, cfg)
    env = CheckEnv(None, None)
    if walk_error == "budget":
        env.walk_error = BudgetExceeded("MIME walk over 10s")
    elif walk_error == "limit":
        env.walk_error = mimewalk.InspectionLimit("mime-depth", "more than 1000 levels")
    else:
        env.walk = mimewalk.Walk()
    facts = MessageFacts("192.0.2.1", "h", "a@b.test", ("c@d.test",), None)

    async def main():
        p = Pipeline(workers=2)
        try:
            return await p._run_one(attachments, facts, cfg, env)
        finally:
            p.close()

    result = asyncio.run(main())
    assert (result.outcome, result.action) == (outcome, action)


def test_a_queued_check_with_a_tiny_budget_does_not_spin_the_loop(monkeypatch):
    """A queued job's timer looks once per budget, but never more often than LOOK_FLOOR: a policy
    with a 0.1 ms timeout must not turn every queued check into a busy timer."""
    import asyncio
    import threading
    import time

    from mxgate.filters import pipeline as pipeline_module
    from mxgate.filters.pipeline import LOOK_FLOOR, Pipeline, _Job
    from mxgate.filters.result import Budget

    hold = threading.Event()
    looks: list[float] = []
    real_look = _Job._look
    monkeypatch.setattr(_Job, "_look", lambda self: (looks.append(time.monotonic()), real_look(self)))
    monkeypatch.setattr(pipeline_module, "QUEUE_WAIT", 60.0)

    async def main():
        p = Pipeline(workers=2, per_client=4)
        try:
            held = [asyncio.ensure_future(p._in_worker(ip, Budget(30), hold.wait, 30)) for ip in ("192.0.2.1", "192.0.2.2")]
            while p.running < 2:
                await asyncio.sleep(0)
            late = asyncio.ensure_future(p._in_worker("192.0.2.3", Budget(0.0001), lambda: "late"))
            while len(looks) < 4:
                await asyncio.sleep(0.001)
            assert not late.done()
            hold.set()
            assert await late == ("ok", "late")
            await asyncio.gather(*held)
        finally:
            hold.set()
            p.close()

    asyncio.run(main())
    gaps = [b - a for a, b in zip(looks, looks[1:4])]
    assert min(gaps) >= LOOK_FLOOR * 0.9, gaps  # timers may fire a hair early, never a loop of them


def test_dnsbl_runs_on_the_loop_only_when_it_has_no_zone_to_ask(dns):
    """DNSBL with no zone (the default) asks nothing: answered on the loop, "not listed". With a
    zone it is a DNS lookup in a worker, and a listing still fires."""
    import asyncio

    from mxgate.auth.dns import make_resolver
    from mxgate.filters.pipeline import Pipeline, _runs_on_loop
    from mxgate.filters.result import CheckEnv, MessageFacts
    from mxgate.policy.gateway_checks import CheckSettings, DEFAULTS

    facts = MessageFacts("192.0.2.9", "h", "a@b.test", ("c@d.test",), None)
    idle = CheckSettings("dnsbl", dict(DEFAULTS["dnsbl"]))
    zoned = CheckSettings("dnsbl", {**DEFAULTS["dnsbl"], "zones": ("bl.test",)})
    allow_only = CheckSettings("dnsbl", {**DEFAULTS["dnsbl"], "allow_zones": ("wl.test",)})
    assert _runs_on_loop(dnsbl, idle) and not _runs_on_loop(dnsbl, zoned) and not _runs_on_loop(dnsbl, allow_only)
    dns.add("9.2.0.192.bl.test", "A", "127.0.0.2")
    env = CheckEnv(make_resolver([dns.address], 2.0), None)

    async def main():
        p = Pipeline(workers=2)
        try:
            return [await p._run_one(dnsbl, facts, cfg, env) for cfg in (idle, zoned)]
        finally:
            p.close()

    quiet, listed = asyncio.run(main())
    assert (quiet.outcome, quiet.detail) == ("pass", "not listed")
    assert listed.outcome == "fire" and "bl.test=127.0.0.2" in listed.detail
