"""Issue 18: checks at connect (postscreen-style, filters/connect.py). A DNSBL-listed client is
refused before the greeting (554, RFC 5321 §3.1) or at every RCPT; the lookup is made once per
address and reused; a client that passes is not looked up again by the DATA-phase checks."""

from __future__ import annotations

from gwkit import gw_port
from rig import ATTACKER, INTERNET, RawSMTP, maildir_messages, send_message, simple_message, wait_until
from mxgate.smtp.replies import REPLIES

LISTED_REV = "66.0.0.127"  # 127.0.0.66 reversed (RFC 5782)
DNSBL = '[gateway.dnsbl]\nzones = ["zen.example.test"]\naction = "reject"\n'


def _zone_queries(dns) -> list[str]:
    return [q[0] for q in dns.queries if "zen.example.test" in q[0]]


def test_a_listed_client_is_refused_before_the_greeting_and_the_verdict_is_reused(make_gateway, dns):
    dns.add(f"{LISTED_REV}.zen.example.test", "A", "127.0.0.2")
    gw = make_gateway(DNSBL, connect_checks=["dnsbl"])
    for _ in range(2):
        with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
            assert c.greeting() == (554, str(REPLIES["dnsbl"]))
            assert c.cmd("EHLO attacker.test")[0] == 503  # nothing but QUIT after a 554 greeting
            assert c.cmd("QUIT")[0] == 221
    assert len(_zone_queries(dns)) == 1  # the second connection used the cached verdict
    trace = gw.node.trace
    assert wait_until(lambda: any(r.get("reason") == "dnsbl" for r in _rows(trace)), timeout=10)
    assert gw.node.roles["gateway"].stats["accepted"] == 0


def _rows(trace) -> list[dict]:
    return [r if isinstance(r, dict) else r.__dict__ for r in trace.search(limit=20)]


def test_a_listed_client_can_be_refused_at_rcpt_instead(make_gateway, dns):
    dns.add(f"{LISTED_REV}.zen.example.test", "A", "127.0.0.2")
    gw = make_gateway(DNSBL, connect_checks=["dnsbl"], connect_refuse="rcpt")
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO attacker.test")
        assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>") == (554, str(REPLIES["dnsbl"]))
        assert c.cmd("DATA")[0] in (503, 554)  # no valid recipient: no DATA


def test_a_passing_client_reaches_the_data_checks_without_a_second_lookup(make_gateway, mailbox, dns):
    gw = make_gateway(DNSBL, connect_checks=["dnsbl"])
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(sender="s@fabrikam.test"))
    assert r["end"][0] == 250, r
    assert wait_until(lambda: maildir_messages(mailbox.home, "alice@contoso.test"), timeout=10)
    assert len(_zone_queries(dns)) == 1  # at connect only; the DATA phase used that answer
    checks = maildir_messages(mailbox.home, "alice@contoso.test")[0]
    assert b"X-MXGate-Checks:" in checks and b"dnsbl=pass" in checks.replace(b"\r\n ", b" ")


def test_a_failed_lookup_at_connect_refuses_nobody_and_leaves_the_decision_to_data(make_gateway, mailbox, dns):
    dns.add(f"{LISTED_REV}.zen.example.test", "A", "127.0.0.2")
    gw = make_gateway(DNSBL.replace('action = "reject"', 'action = "reject"\ntimeout = 1.0'),
                      connect_checks=["dnsbl"])
    dns.drop_next(1)  # the connect-stage query is lost: greeted normally, nothing cached
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO attacker.test")
        assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(simple_message(sender="s@fabrikam.test").decode() + ".\r\n")
        reply = c.read_reply()
        assert reply == (554, str(REPLIES["dnsbl"]))  # the DATA-phase check asked again


# --- reverse DNS at connect ----------------------------------------------------------------------

RDNS = '[gateway.rdns]\naction = "reject"\n'
ATTACKER_REV = "66.0.0.127.in-addr.arpa"  # 127.0.0.66


def _ptr_queries(dns) -> list[str]:
    return [q[0] for q in dns.queries if "in-addr.arpa" in q[0]]


def test_a_client_without_reverse_dns_is_refused_before_the_greeting(make_gateway, dns):
    gw = make_gateway(RDNS, connect_checks=["rdns"])
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        assert c.greeting() == (554, str(REPLIES["connect-rdns"]))
        assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 503
    assert _ptr_queries(dns)  # the refusal came from a real PTR lookup
    assert gw.node.roles["gateway"].stats["accepted"] == 0


def test_a_forward_mismatch_is_refused_at_rcpt_when_so_configured(make_gateway, dns):
    dns.add(ATTACKER_REV, "PTR", "mail.fabrikam.test.")
    dns.add("mail.fabrikam.test", "A", "192.0.2.9")  # not the client: FCrDNS fails (RFC 8601 §3 iprev)
    gw = make_gateway(RDNS, connect_checks=["rdns"], connect_refuse="rcpt")
    with RawSMTP("127.0.0.10", gw_port(gw), ATTACKER) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO attacker.test")
        assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>") == (550, str(REPLIES["rdns-failed"]))  # RCPT: 550, not 554


def test_a_client_with_forward_confirmed_reverse_dns_is_greeted_and_delivers(make_gateway, mailbox, dns):
    dns.add(ATTACKER_REV, "PTR", "mail.fabrikam.test.")
    dns.add("mail.fabrikam.test", "A", ATTACKER)
    gw = make_gateway(RDNS, connect_checks=["rdns"])
    r = send_message("127.0.0.10", gw_port(gw), source=ATTACKER, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message(sender="s@fabrikam.test"))
    assert r["end"][0] == 250, r
    assert wait_until(lambda: maildir_messages(mailbox.home, "alice@contoso.test"), timeout=10)
