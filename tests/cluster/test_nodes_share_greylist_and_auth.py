"""Issue 18: greylisting and the submission AUTH throttle through real nodes on one PostgreSQL
database. A triplet greylisted by gateway A passes when the sender retries on gateway B after the
delay (and not before); wrong passwords guessed on mailbox node A count on node B, which refuses
the guess that reaches the limit. Synchronisation is by waiting on each node's view of the shared
state, never by sleeping; the greylist's clock is injected."""

from __future__ import annotations

import base64
import time

import rig
from rig import GATEWAY, GATEWAY2, INTERNET, RawSMTP, free_port, wait_until

from mxgate.filters.greylist import triplet
from mxgate.server.submission import MAX_AUTH_FAILURES, AuthThrottle
from mxgate.smtp.replies import REPLIES

DELAY = 300.0
GREY_POLICY = rig.GUIDE_POLICY + f'\n[gateway.greylist]\naction = "tempfail"\ndelay = {DELAY}\n'
CLUSTER = {"cluster_sync_interval": 0.05, "cluster_stale_after": 1.0}


def _gateway(node_factory, name: str, address: str, dns):
    return node_factory(GREY_POLICY, node={"name": name, **CLUSTER}, roles={"mailbox": False, "gateway": True},
                        dns={"servers": [dns.address], "timeout": 1.0},
                        gateway={"listen": [f"{address}:{free_port(address)}"], "downstream": [f"127.0.0.1:{free_port()}"],
                                 "source_address": address, "hostname": f"{name}.contoso.test"})


def _rcpt(node, address: str) -> tuple[int, str]:
    with RawSMTP(address, node.port("gateway"), INTERNET) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO sender.fabrikam.test")
        assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 250
        reply = c.cmd("RCPT TO:<alice@contoso.test>")
        c.cmd("QUIT")
        return reply


def test_a_triplet_greylisted_on_one_gateway_passes_on_the_other_after_the_delay(node_factory, pg_url, monkeypatch, dns):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    a = _gateway(node_factory, "gw-a", GATEWAY, dns)
    b = _gateway(node_factory, "gw-b", GATEWAY2, dns)
    assert wait_until(lambda: a.node.cluster.live_nodes == 2 and b.node.cluster.live_nodes == 2, timeout=10)
    now = [time.time()]
    for n in (a, b):
        n.node.roles["gateway"].clock = lambda: now[0]  # one injected clock for both: nothing sleeps
    key = "|".join(triplet(INTERNET, "s@fabrikam.test", "alice@contoso.test"))

    assert _rcpt(a, GATEWAY) == (451, str(REPLIES["greylisted"]))
    assert wait_until(lambda: b.node.cluster.grey_get(key)[0] is not None, timeout=5)  # B has seen A's first attempt
    now[0] += DELAY - 1
    assert _rcpt(b, GATEWAY2)[0] == 451  # too early on B as well: the delay is the cluster's
    now[0] += 2
    assert _rcpt(b, GATEWAY2)[0] == 250  # the retry reaches the other node and passes
    assert wait_until(lambda: a.node.cluster.grey_get(key)[1] > now[0], timeout=5)
    assert _rcpt(a, GATEWAY)[0] == 250  # and the triplet is known on A too


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _mailbox(node_factory, name: str):
    return node_factory(rig.GUIDE_POLICY, node={"name": name, **CLUSTER},
                        roles={"mailbox": True, "submission": True},
                        submission={"listen": [f"127.0.0.1:{free_port()}"]})


def _auth_codes(node, source: str, guesses: list[str]) -> list[int]:
    with RawSMTP("127.0.0.1", node.port("submission"), source) as c:
        if c.greeting()[0] != 220:
            return [421]
        c.cmd("EHLO x.test")
        c.starttls()
        c.cmd("EHLO x.test")
        codes = []
        for g in guesses:
            codes.append(c.cmd(f"AUTH PLAIN {_plain('alice@contoso.test', g)}")[0])
            if codes[-1] == 421:
                break
        return codes


def _seen(node, source: str) -> float:
    return node.node.cluster.estimate(AuthThrottle.SCOPE, source, 600.0, time.time())


def test_wrong_passwords_on_one_mailbox_node_throttle_the_other(node_factory, pg_url, monkeypatch):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    a = _mailbox(node_factory, "mbx-a")
    b = _mailbox(node_factory, "mbx-b")
    assert wait_until(lambda: a.node.cluster.live_nodes == 2 and b.node.cluster.live_nodes == 2, timeout=10)
    attacker = "127.0.0.66"
    first = MAX_AUTH_FAILURES - 2
    assert _auth_codes(a, attacker, [f"guess-{i}" for i in range(first)]) == [535] * first
    assert wait_until(lambda: round(_seen(b, attacker)) >= first, timeout=5)
    # On B the attacker has only what is left of the cluster's budget, not a fresh one.
    codes = _auth_codes(b, attacker, [f"other-{i}" for i in range(MAX_AUTH_FAILURES)])
    assert codes == [535, 421], codes
    assert wait_until(lambda: round(_seen(a, attacker)) >= MAX_AUTH_FAILURES, timeout=5)
    assert _auth_codes(a, attacker, ["again"]) == [421]  # A refuses too
    assert _auth_codes(b, "127.0.0.67", ["x"]) == [535]  # other addresses are not affected
