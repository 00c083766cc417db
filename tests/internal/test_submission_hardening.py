"""Issue 17: submission AUTH throttling holds against sessions opened beforehand (every AUTH on
every open session is checked, attempts are counted before the slow check), counts IPv6 per /64,
and prunes its table; the submission role's metrics move with real traffic."""

from __future__ import annotations

import base64
import re

import pytest

import rig
from rig import RawSMTP, free_port

from mxgate import metrics
from mxgate.auth.credentials import set_mailbox_password
from mxgate.server import submission as sub
from mxgate.server.submission import AuthThrottle, throttle_key

PROXY = "127.0.0.5"
PASSWORD = "alice's long password"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture
def submission_node(node_factory):
    n = node_factory(rig.GUIDE_POLICY, roles={"mailbox": True, "submission": True},
                     submission={"listen": [f"127.0.0.1:{free_port()}"], "trusted_proxies": [PROXY]})
    set_mailbox_password(n.node.engine, n.node.policy_store.current().policy, "alice@contoso.test", PASSWORD)
    return n


@pytest.fixture
def checks(monkeypatch):
    """Every password the submission role actually verifies."""
    seen = []
    real = sub.verify_credentials

    def counting(engine, username, secret):
        seen.append(secret)
        return real(engine, username, secret)

    monkeypatch.setattr(sub, "verify_credentials", counting)
    return seen


def _ready_session(port: int, source: str = "127.0.0.1", proxy_from: str | None = None) -> RawSMTP:
    c = RawSMTP("127.0.0.1", port, PROXY if proxy_from else source)
    if proxy_from:
        c.send(f"PROXY TCP6 {proxy_from} ::1 40000 587\r\n".encode())
    assert c.greeting()[0] == 220
    c.cmd("EHLO client.test")
    c.starttls()
    c.cmd("EHLO client.test")
    return c


def test_twenty_pre_opened_sessions_check_at_most_five_passwords(submission_node, checks):
    port = submission_node.port("submission")
    sessions = [_ready_session(port, "127.0.0.45") for _ in range(20)]
    # Every session sends its five guesses at once, all sessions before reading any answer.
    for i, c in enumerate(sessions):
        c.send("".join(f"AUTH PLAIN {plain('alice@contoso.test', f'guess-{i}-{k}')}\r\n" for k in range(5)).encode())
    first = []
    for c in sessions:
        first.append(c.read_reply()[0])
        c.close()
    assert len(checks) == sub.MAX_AUTH_FAILURES, len(checks)
    assert first.count(535) <= sub.MAX_AUTH_FAILURES and set(first) <= {535, 421}
    # The right password is refused too while the back-off lasts, also on a session opened before.
    late = _ready_session(port, "127.0.0.46")  # another address: not throttled
    assert late.cmd(f"AUTH PLAIN {plain('alice@contoso.test', PASSWORD)}")[0] == 235
    late.close()
    with RawSMTP("127.0.0.1", port, "127.0.0.45") as c:
        assert c.greeting()[0] == 421


def test_every_auth_on_an_open_session_is_checked_against_the_back_off(submission_node, checks):
    port = submission_node.port("submission")
    early = _ready_session(port, "127.0.0.47")  # opened before the guessing starts
    guesser = _ready_session(port, "127.0.0.47")
    codes = [guesser.cmd(f"AUTH PLAIN {plain('alice@contoso.test', f'g{k}')}")[0] for k in range(sub.MAX_AUTH_FAILURES)]
    assert codes[-1] == 421
    n = len(checks)
    assert early.cmd(f"AUTH PLAIN {plain('alice@contoso.test', PASSWORD)}")[0] == 421
    assert early.closed() and len(checks) == n  # refused before any check


def test_ipv6_addresses_of_one_slash_64_share_a_budget(submission_node, checks):
    port = submission_node.port("submission")
    for k in range(sub.MAX_AUTH_FAILURES):
        c = _ready_session(port, proxy_from=f"2001:db8:1:2::{k + 1:x}")  # a new address each time
        c.cmd(f"AUTH PLAIN {plain('alice@contoso.test', f'v6-{k}')}")
        c.close()
    assert len(checks) == sub.MAX_AUTH_FAILURES
    c = RawSMTP("127.0.0.1", port, PROXY)
    c.send(b"PROXY TCP6 2001:db8:1:2:ffff::99 ::1 40000 587\r\n")
    assert c.greeting()[0] == 421  # the same /64
    c.close()
    other = _ready_session(port, proxy_from="2001:db8:1:3::1")  # the next /64 is another host
    assert other.cmd(f"AUTH PLAIN {plain('alice@contoso.test', PASSWORD)}")[0] == 235
    other.close()


def test_throttle_keys_and_pruning():
    assert throttle_key("2001:db8::1") == throttle_key("2001:db8::ffff:1:2") == "2001:db8::/64"
    assert throttle_key("::ffff:192.0.2.1") == "192.0.2.1" and throttle_key("192.0.2.1") == "192.0.2.1"
    t = AuthThrottle(max_tracked=50)
    for i in range(200):
        assert t.admit(f"198.51.100.{i}", now=float(i))
        t.failed(f"198.51.100.{i}", now=float(i))
        assert len(t) <= 50
    t.prune(now=10_000.0)
    assert len(t) == 0
    # Concurrency: admissions are counted before any result, and a success refunds its own.
    t = AuthThrottle()
    starts = [float(k) for k in range(sub.MAX_AUTH_FAILURES)]
    assert all(t.admit("k", now=s) for s in starts)
    assert not t.admit("k", now=10.0)
    t.succeeded("k", starts[0])
    assert t.admit("k", now=11.0)


def test_submission_metrics_after_real_traffic(submission_node):
    port = submission_node.port("submission")
    sessions0 = metrics.value("mxgate_smtp_sessions_total", role="submission")
    accepted0 = metrics.value("mxgate_messages_accepted_total", role="submission")
    bad0 = metrics.value("mxgate_auth_failures_total", role="submission", reason="bad-credentials")
    refused0 = metrics.value("mxgate_messages_refused_total", role="submission", stage="auth", reason="auth-failed",
                             outcome="rejected")
    denied0 = metrics.value("mxgate_messages_refused_total", role="submission", stage="mail", reason="send-as-denied",
                            outcome="rejected")
    c = _ready_session(port, "127.0.0.48")
    assert c.cmd(f"AUTH PLAIN {plain('alice@contoso.test', 'wrong one')}")[0] == 535
    assert c.cmd(f"AUTH PLAIN {plain('alice@contoso.test', PASSWORD)}")[0] == 235
    assert c.cmd("MAIL FROM:<bob@contoso.test>")[0] == 550
    assert c.cmd("MAIL FROM:<alice@contoso.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@contoso.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(rig.simple_message("hi", sender="alice@contoso.test", to="bob@contoso.test") + b".\r\n")
    assert c.read_reply()[0] == 250
    c.close()
    assert metrics.value("mxgate_smtp_sessions_total", role="submission") - sessions0 == 1
    assert metrics.value("mxgate_messages_accepted_total", role="submission") - accepted0 == 1
    assert metrics.value("mxgate_auth_failures_total", role="submission", reason="bad-credentials") - bad0 == 1
    assert metrics.value("mxgate_messages_refused_total", role="submission", stage="auth", reason="auth-failed",
                         outcome="rejected") - refused0 == 1
    assert metrics.value("mxgate_messages_refused_total", role="submission", stage="mail", reason="send-as-denied",
                         outcome="rejected") - denied0 == 1
    body, _ = metrics.render()
    assert re.search(rb'mxgate_queue_depth\{queue="\w+",spool="outbound"\}', body)
