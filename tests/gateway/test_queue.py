"""Issue 5, must-show 3: downstream stopped → accepted and queued, all delivered once it starts;
a permanent 5xx downstream → exactly one RFC 3464 DSN to the sender, none for <>.
Issue 15: the DSN to an Internet sender leaves by MX (a loopback "Internet" MX), an internal
sender's goes to the mailbox server; a DSN that cannot be built keeps the entry; a 452 4.5.3
split is sent at once; a host's backoff grows once per outage."""

from __future__ import annotations

import email
import socket
import threading

import pytest

from gwkit import Sink, gw_port, spool_count
from rig import INTERNET, RawSMTP, free_port, send_message, simple_message, wait_until

from mxgate.smtp.replies import REPLIES

COUNT = 12


def test_downstream_down_then_up_delivers_every_queued_message(make_gateway, test_ca):
    port = free_port()
    gw = make_gateway(downstream=[f"127.0.0.1:{port}"], downstream_ca=test_ca["ca"])
    subjects = set()
    for i in range(COUNT):
        r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=simple_message(subject=f"queued {i}"))
        assert r["end"] == (250, str(REPLIES["queued"]))
        subjects.add(f"queued {i}")
    assert spool_count(gw) == COUNT
    assert wait_until(lambda: any(e.attempts >= 1 for e in gw.node.roles["gateway"].sv.spool.list()), timeout=5)
    sink = Sink(test_ca["server_cert"], test_ca["server_key"], port=port)
    try:
        assert wait_until(lambda: spool_count(gw) == 0, timeout=20)
        got = {email.message_from_bytes(m["raw"])["Subject"] for m in sink.messages}
        assert got == subjects
        assert set(sink.peers) == {"127.0.0.10"}  # egress from the connector's address
    finally:
        sink.close()


def outbound_count(gw) -> int:
    return gw.node.roles["gateway"].sv.outbound.queue.spool.count()


def test_bounce_to_an_internet_sender_reaches_its_mx(make_gateway, sink, internet_mx, test_ca):
    """Downstream refuses after the gateway said 250: the DSN goes to the sender's MX, not to the
    mailbox server (which would refuse it as relaying), with a trace row of its own."""
    sink.refuse["bob@contoso.test"] = "550 5.1.1 <bob@contoso.test>: no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test", "bob@contoso.test"], data=simple_message(subject="half"))
    assert r["end"][0] == 250
    assert wait_until(lambda: internet_mx.messages and spool_count(gw) == 0 and outbound_count(gw) == 0, timeout=15)
    assert [(m["sender"], m["rcpts"]) for m in sink.messages] == [("sender@fabrikam.test", ["alice@contoso.test"])]
    dsns = internet_mx.messages
    assert len(dsns) == 1 and dsns[0]["sender"] == "" and dsns[0]["rcpts"] == ["sender@fabrikam.test"]
    assert dsns[0]["tls"]  # STARTTLS to the MX (queue/relay.py refuses clear text)
    dsn = email.message_from_bytes(dsns[0]["raw"])
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in dsn.get_payload()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = dsns[0]["raw"].decode()
    assert "Final-Recipient: rfc822; bob@contoso.test" in status and "Action: failed" in status
    assert "Status: 5.1.1" in status and "Diagnostic-Code: smtp; 550 5.1.1" in status
    assert "Subject: half" in status  # the original headers come back
    gw.trace.flush()
    assert {r["status"] for r in gw.trace.search(recipient="bob@contoso.test")} == {"Failed"}

    def dsn_rows():
        gw.trace.flush()
        return [r for r in gw.trace.search(recipient="sender@fabrikam.test") if r["reason"] == "dsn"]

    assert wait_until(lambda: [(r["status"], r["direction"]) for r in dsn_rows()] == [("Delivered", "outbound")])


def test_bounce_to_an_internal_sender_goes_to_the_mailbox_server(make_gateway, sink, internet_mx, test_ca):
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    # The queue's DSN path (with cut-through a lone refused recipient is refused at DATA instead).
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], cut_through=False)
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="carol@contoso.test",
                     rcpts=["bob@contoso.test"], data=simple_message(sender="carol@contoso.test"))
    assert r["end"][0] == 250
    assert wait_until(lambda: any(m["sender"] == "" for m in sink.messages) and outbound_count(gw) == 0, timeout=15)
    assert [m["rcpts"] for m in sink.messages if m["sender"] == ""] == [["carol@contoso.test"]]
    assert internet_mx.messages == []


def test_bounce_to_a_utf8_sender_is_an_rfc6533_report_at_its_mx(make_gateway, sink, internet_mx, test_ca):
    """SMTPUTF8 end to end: the original is relayed with SMTPUTF8, the downstream refuses one
    recipient, and the DSN (message/global-delivery-status, utf-8 address types) reaches zoë's
    MX, which offers SMTPUTF8 too."""
    sink.smtputf8 = internet_mx.smtputf8 = True
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO client.test")
        c.starttls()
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<zoë@fabrikam.test> SMTPUTF8")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250 and c.cmd("RCPT TO:<bob@contoso.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send("From: zoë@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: grüße\r\n\r\nhallo\r\n.\r\n".encode())
        assert c.read_reply()[0] == 250
    assert wait_until(lambda: internet_mx.messages and spool_count(gw) == 0 and outbound_count(gw) == 0, timeout=15)
    assert [(m["sender"], m["rcpts"]) for m in sink.messages] == [("zoë@fabrikam.test", ["alice@contoso.test"])]
    [dsn] = internet_mx.messages
    assert dsn["sender"] == "" and dsn["rcpts"] == ["zoë@fabrikam.test"]
    report = email.message_from_bytes(dsn["raw"])
    assert report.get_param("report-type") == "global-delivery-status"
    assert [p.get_content_type() for p in report.get_payload()][1] == "message/global-delivery-status"
    assert "To: <zoë@fabrikam.test>" in dsn["raw"].decode("utf-8")


def test_a_downstream_without_smtputf8_bounces_utf8_mail_with_5_6_7(make_gateway, sink, internet_mx, test_ca):
    """RFC 6531: an address is never downgraded; the sender is told (5.6.7), nothing is stuck."""
    internet_mx.smtputf8 = True
    # sink: no SMTPUTF8. The queue's path (cut-through refuses a lone recipient at DATA instead).
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], cut_through=False)
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO client.test")
        c.starttls()
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<zoë@fabrikam.test> SMTPUTF8")[0] == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: x\r\n\r\nhallo\r\n.\r\n")
        assert c.read_reply()[0] == 250
    assert wait_until(lambda: internet_mx.messages and spool_count(gw) == 0 and outbound_count(gw) == 0, timeout=15)
    assert sink.messages == [] and "Status: 5.6.7" in internet_mx.messages[0]["raw"].decode("utf-8")


def test_a_dsn_that_cannot_be_built_keeps_the_entry(make_gateway, sink, test_ca, monkeypatch, caplog):
    import mxgate.queue.runner as runner_mod
    from mxgate.queue.dsn import DsnError

    def broken(*a, **k):
        raise DsnError("cannot build")

    monkeypatch.setattr(runner_mod, "build_dsn", broken)
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                 rcpts=["alice@contoso.test", "bob@contoso.test"], data=simple_message())
    spool = gw.node.roles["gateway"].sv.spool
    assert wait_until(lambda: [e.queue for e in spool.list()] == ["hold"], timeout=10)
    entry = spool.list()[0]
    assert entry.pending == ("bob@contoso.test",) and "bounce not sent" in entry.last_error
    assert [m["rcpts"] for m in sink.messages] == [["alice@contoso.test"]]  # delivered once, recorded
    assert any("could not be sent" in r.getMessage() for r in caplog.records)


def test_452_split_sends_the_rest_at_once(make_gateway, sink, test_ca):
    """A server taking one recipient per transaction: the rest go in new transactions now, not
    after the retry backoff (here an hour, so waiting for it would fail the test)."""
    sink.max_rcpts = 1
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], retry_first=3600.0,
                      retry_max_backoff=3600.0)
    rcpts = ["alice@contoso.test", "bob@contoso.test", "postmaster@contoso.test"]
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test", rcpts=rcpts,
                     data=simple_message())
    assert r["end"][0] == 250
    assert wait_until(lambda: spool_count(gw) == 0, timeout=10)
    assert [m["rcpts"] for m in sink.messages] == [[a] for a in rcpts]
    assert gw.node.roles["gateway"].sv.runner.stats == {"delivered": 3, "deferred": 0, "failed": 0, "dsn": 0}


class RefusingHost:
    """A downstream that holds every connection until `count` are open, then drops them all:
    that many deliveries failing together, in one outage."""

    def __init__(self, count: int):
        self.count = count
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.dropped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while len(self.conns) < self.count:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return
        for c in self.conns:
            c.close()
        self.dropped.set()

    def close(self) -> None:
        self.sock.close()


def test_concurrent_failures_grow_the_host_backoff_once(make_gateway, test_ca):
    host = RefusingHost(9)
    try:
        gw = make_gateway(downstream=[host.address], downstream_ca=test_ca["ca"], host_backoff=30.0,
                          relay_connect_timeout=30.0, cut_through=False)  # the queue's deliveries failing together
        for i in range(9):
            r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                             rcpts=["alice@contoso.test"], data=simple_message(subject=f"m{i}"))
            assert r["end"][0] == 250
        assert host.dropped.wait(30)
        runner = gw.node.roles["gateway"].sv.runner
        assert wait_until(lambda: runner.stats["deferred"] >= 9, timeout=10)
        assert runner.health.delay(host.address) == 30.0  # was 30 * 2**8, capped at 600
    finally:
        host.close()


def test_no_dsn_for_null_sender(make_gateway, sink, test_ca):
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], cut_through=False)  # the queue's path
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="", rcpts=["bob@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250
    assert wait_until(lambda: spool_count(gw) == 0, timeout=10)
    assert wait_until(lambda: gw.node.roles["gateway"].sv.runner.stats["failed"] == 1, timeout=5)
    assert gw.node.roles["gateway"].sv.runner.stats["dsn"] == 0 and sink.messages == []


def test_expiry_gives_up_with_a_delayed_failure_dsn(make_gateway, sink, internet_mx, test_ca):
    """A downstream that never answers: after retry_max_age the message bounces with 4.4.7."""
    port = free_port()
    gw = make_gateway(downstream=[f"127.0.0.1:{port}", sink.address], downstream_ca=test_ca["ca"], retry_max_age=1.0)
    sink.refuse["alice@contoso.test"] = "451 4.3.0 try later"
    send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                 rcpts=["alice@contoso.test"], data=simple_message(subject="expires"))
    assert wait_until(lambda: any(m["sender"] == "" for m in internet_mx.messages), timeout=15)
    dsn = next(m for m in internet_mx.messages if m["sender"] == "")["raw"].decode()
    assert "Status: 4.4.7" in dsn and "Action: failed" in dsn


def test_relay_reuses_its_tls_session_for_the_next_messages(make_gateway, sink, test_ca):
    """Like Postfix's connection cache: one connection (and one TLS handshake) carries several
    messages to the same downstream, one after the other."""
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"], relay_concurrency=1)
    for i in range(5):
        r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=simple_message(subject=f"reuse {i}"))
        assert r["end"][0] == 250
        assert wait_until(lambda: len(sink.messages) == i + 1, timeout=10)
    assert len(sink.peers) == 1, sink.peers  # five messages, one session
