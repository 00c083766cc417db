"""Issue 17, observability of the gateway role: after real SMTP traffic through a gateway with the
admin role, /metrics shows sessions, refusals by role/stage/reason/outcome (4xx as deferred),
check latencies per check actually run, queue depth and oldest age per spool, DSNs sent and
quarantines; the log has one line per refusal and per session outcome; the trace shows a 4xx
refusal as "Deferred"."""

from __future__ import annotations

import logging
import re

import httpx

import rig
from gwkit import FAST_QUEUE, gateway_policy, spool_count
from rig import GATEWAY, INTERNET, RawSMTP, free_port, send_message, simple_message, wait_until


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def test_gateway_metrics_logs_and_trace_after_real_traffic(node_factory, dns, sink, test_ca, caplog):
    caplog.set_level(logging.INFO, logger="mxgate")
    dns.add("fabrikam.test", "TXT", f"v=spf1 ip4:{INTERNET} -all")
    dns.add("spoof.test", "TXT", "v=spf1 -all")
    dns.add("_dmarc.spoof.test", "TXT", "v=DMARC1; p=quarantine")
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    admin = f"127.0.0.1:{free_port()}"
    # Five connections a minute from one address; the sixth is deferred (421 at connect).
    checks = '[gateway.ratelimit]\naction = "tempfail"\nmax_connections = 5\n'
    gw = node_factory(gateway_policy(checks), roles={"mailbox": False, "gateway": True, "admin": True},
                      admin={"listen": admin},
                      gateway={"listen": [f"{GATEWAY}:{free_port(GATEWAY)}"], "downstream": [sink.address], "downstream_ca": test_ca["ca"],
                               "source_address": GATEWAY, "hostname": "gw.contoso.test",
                               **FAST_QUEUE, "cut_through": False},  # the queue's DSN for bob's 550
                      dns={"servers": [dns.address], "timeout": 2.0})
    port = gw.port("gateway")
    scrape = lambda: httpx.get(f"http://{admin}/metrics").text  # noqa: E731
    before = scrape()

    def send(sender, rcpts, subject):
        return send_message(GATEWAY, port, source=INTERNET, sender=sender, rcpts=rcpts,
                            data=simple_message(subject, sender=sender))

    assert send("s@fabrikam.test", ["alice@contoso.test"], "fine")["end"][0] == 250
    assert send("s@fabrikam.test", ["bob@contoso.test"], "bounces")["end"][0] == 250  # downstream 550 → DSN
    assert send("ceo@spoof.test", ["alice@contoso.test"], "quarantined")["end"][0] == 250
    r = send("s@fabrikam.test", ["x@elsewhere.example"], "relay")
    assert r["rcpt"][0][0] == 550
    with RawSMTP(GATEWAY, port, INTERNET) as c:  # a session that only says hello
        c.greeting()
        c.cmd("QUIT")
    with RawSMTP(GATEWAY, port, INTERNET) as c:
        assert c.greeting()[0] // 100 == 4
    assert wait_until(lambda: spool_count(gw) == 0 and len(sink.messages) >= 1, 20)
    after = scrape()

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("mxgate_smtp_sessions_total", role="gateway") == 6
    assert delta("mxgate_messages_accepted_total", role="gateway") == 3
    assert delta("mxgate_messages_quarantined_total", role="gateway") == 1
    assert delta("mxgate_messages_refused_total", role="gateway", stage="rcpt", reason="relay-denied",
                 outcome="rejected") == 1
    def deferred_at_connect(text):  # the registry is per process: earlier tests' deferrals count too
        return [m.groupdict() for m in re.finditer(
            r'mxgate_messages_refused_total\{outcome="deferred",reason="(?P<reason>[^"]+)",role="gateway",'
            r'stage="connect"\} (?P<n>[0-9.]+)', text)]

    deferred = deferred_at_connect(after)
    assert deferred and sum(float(d["n"]) for d in deferred) - sum(
        float(d["n"]) for d in deferred_at_connect(before)) == 1, deferred
    assert delta("mxgate_dsn_sent_total", queue="gateway") == 1
    for check in ("spf", "dkim", "dmarc", "attachments"):
        assert delta("mxgate_check_seconds_count", check=check) == 3, check
    assert sample(after, "mxgate_queue_depth", spool="gateway", queue="deferred") == 0
    assert 'mxgate_queue_oldest_seconds{spool="gateway"} 0.0' in after
    assert sample(after, "mxgate_policy_latest_version") == sample(after, "mxgate_policy_version") == 1
    assert sample(after, "mxgate_lockdown_uncovered_domains") == 0

    # The log: one line per refusal (4xx called deferred) and one per session with its outcome.
    text = caplog.text
    assert "rejected at rcpt: relay-denied" in text
    assert re.search(r"deferred at connect: \S+", text)
    assert len(re.findall(r"session \S+ from 127\.0\.0\.77 ended: ", text)) == 6
    assert "ended: accepted (accepted 1," in text and "ended: no mail" in text and "ended: deferred" in text
    assert "ended: rejected (accepted 0, quarantined 0, rejected 1" in text
    assert "Rejected" not in re.findall(r"deferred at connect.*", text)[0]

    gw.trace.flush()
    statuses = {(r["status"], r["reason"]) for r in gw.trace.search(ip=INTERNET, limit=50)}
    assert ("Rejected", "relay-denied") in statuses
    assert any(s == "Deferred" for s, _ in statuses), statuses

    # A queue that cannot deliver (the downstream defers): depth and the oldest entry's age grow.
    sink.refuse["alice@contoso.test"] = "451 4.3.0 try again later"
    r = send_message(GATEWAY, port, source="127.0.0.78", sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message("stuck"))
    assert r["end"][0] == 250
    assert wait_until(lambda: sample(scrape(), "mxgate_queue_oldest_seconds", spool="gateway") > 0, 10), \
        [line for line in scrape().splitlines() if "queue" in line]
    stuck = scrape()
    assert sample(stuck, "mxgate_queue_depth", spool="gateway") >= 1, [x for x in stuck.splitlines() if "queue" in x]
