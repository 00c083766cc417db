"""Issue 15, DNS failures cost little, end to end: a mailbox server at its defaults behind a
resolver that drops a quarter of the queries and sends negative answers without an SOA (as
this machine's own resolver does) accepts every message, asking the DNS a bounded number of
times instead of several times per message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from rig import GATEWAY, maildir_messages, send_message, simple_message

MESSAGES = 40


def test_mail_flows_through_a_lossy_resolver(node_factory, dns):
    dns.set_drop(0.25, seed=7)
    dns.drop_next(1)  # and surely the very first question's first datagram
    dns.set_negative_soa(False)
    n = node_factory(dns={"servers": [dns.address]})  # [dns] timeout and cache_size at their defaults

    def send(i: int):
        return send_message("127.0.0.1", n.port(), source=GATEWAY, sender=f"s{i % 4}@fabrikam.test",
                            rcpts=["alice@contoso.test"], data=simple_message(subject=f"lossy {i}"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(MESSAGES)))
    assert [r["end"][0] for r in results] == [250] * MESSAGES
    assert len(maildir_messages(n.home, "alice@contoso.test")) == MESSAGES
    n.trace.flush()
    rows = n.trace.search(limit=MESSAGES)
    assert len(rows) == MESSAGES and all("temperror" not in str(r["detail"]) for r in rows)  # none gave up
    assert any("spf" in str(r["detail"]) for r in rows)  # the checks did run
    names = {q[:2] for q in dns.queries}
    # Each distinct question is asked once, plus a retry per dropped datagram: not per message.
    assert len(dns.queries) <= len(names) + dns.dropped, dns.queries
    assert dns.dropped >= 1 and len(dns.queries) < MESSAGES
