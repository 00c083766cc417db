"""Issue 5, must-show 3: downstream stopped → accepted and queued, all delivered once it starts;
a permanent 5xx downstream → exactly one RFC 3464 DSN to the sender, none for <>."""

from __future__ import annotations

import email

from gwkit import Sink, gw_port, spool_count
from rig import INTERNET, free_port, send_message, simple_message, wait_until

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


def test_permanent_failure_sends_one_dsn_to_the_sender(make_gateway, sink, test_ca):
    sink.refuse["bob@contoso.test"] = "550 5.1.1 <bob@contoso.test>: no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test", "bob@contoso.test"], data=simple_message(subject="half"))
    assert r["end"][0] == 250
    assert wait_until(lambda: len(sink.messages) >= 2 and spool_count(gw) == 0, timeout=10)
    original = [m for m in sink.messages if m["sender"] == "sender@fabrikam.test"]
    dsns = [m for m in sink.messages if m["sender"] == ""]
    assert [m["rcpts"] for m in original] == [["alice@contoso.test"]]
    assert len(dsns) == 1 and dsns[0]["rcpts"] == ["sender@fabrikam.test"]
    dsn = email.message_from_bytes(dsns[0]["raw"][: -len(b".\r\n")])
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in dsn.get_payload()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = dsns[0]["raw"].decode()
    assert "Final-Recipient: rfc822; bob@contoso.test" in status and "Action: failed" in status
    assert "Status: 5.1.1" in status and "Diagnostic-Code: smtp; 550 5.1.1" in status
    assert "Subject: half" in status  # the original headers come back
    gw.trace.flush()
    assert {r["status"] for r in gw.trace.search(recipient="bob@contoso.test")} == {"Failed"}


def test_no_dsn_for_null_sender(make_gateway, sink, test_ca):
    sink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="", rcpts=["bob@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250
    assert wait_until(lambda: spool_count(gw) == 0, timeout=10)
    assert wait_until(lambda: gw.node.roles["gateway"].sv.runner.stats["failed"] == 1, timeout=5)
    assert gw.node.roles["gateway"].sv.runner.stats["dsn"] == 0 and sink.messages == []


def test_expiry_gives_up_with_a_delayed_failure_dsn(make_gateway, sink, test_ca):
    """A downstream that never answers: after retry_max_age the message bounces with 4.4.7."""
    port = free_port()
    gw = make_gateway(downstream=[f"127.0.0.1:{port}", sink.address], downstream_ca=test_ca["ca"], retry_max_age=1.0)
    sink.refuse["alice@contoso.test"] = "451 4.3.0 try later"
    send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                 rcpts=["alice@contoso.test"], data=simple_message(subject="expires"))
    assert wait_until(lambda: any(m["sender"] == "" for m in sink.messages), timeout=15)
    dsn = next(m for m in sink.messages if m["sender"] == "")["raw"].decode()
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
