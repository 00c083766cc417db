"""Issue 19, session 6: cut-through relay (server/cutthrough.py, `[gateway] cut_through`).

A message that passed the checks and was stamped is relayed to the downstream before the sender's
reply. Delivered → 250, nothing ever written to the gateway's spool; every recipient refused for
good → that refusal at DATA, no DSN; mixed → 250 and the queue's DSN; anything else → spooled
(fsynced) before the 250 and delivered by the queue: exactly once, or at most twice when the
downstream went silent after the final dot (RFC 1047), never lost. Timing is driven by state
(a downstream that holds its reply until told) and a small injected budget, never by sleeping.
"""

from __future__ import annotations

import email
import os
import signal
import threading

import pytest

import rig
from gwkit import gateway_policy, gateway_toml, gw_port, spool_count
from rig import (GATEWAY, INTERNET, RawSMTP, RecordingSink, SubprocessNode, free_port, maildir_messages,
                 send_message, simple_message, wait_until)

from mxgate.config.home import Home
from mxgate.smtp.replies import REPLIES


@pytest.fixture
def ssink(test_ca):
    s = RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    yield s
    s.close()


def spy_spool(gw) -> list[list[str]]:
    """Record every enqueue into the gateway's spool (the real spool still does the work)."""
    spool = gw.node.roles["gateway"].sv.spool
    calls: list[list[str]] = []
    real = spool.enqueue

    async def enqueue(sender, recipients, data, meta=None, **kw):
        calls.append(list(recipients))
        return await real(sender, recipients, data, meta, **kw)

    spool.enqueue = enqueue
    return calls


def spool_files(gw) -> list[str]:
    root = gw.node.roles["gateway"].sv.spool.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "gateway.lock")


def send(gw, rcpts=("alice@contoso.test",), sender="sender@fabrikam.test", data=None):
    return send_message(GATEWAY, gw_port(gw), source=INTERNET, sender=sender, rcpts=list(rcpts),
                        data=data or simple_message(sender=sender))


def outbound_count(gw) -> int:
    return gw.node.roles["gateway"].sv.outbound.queue.spool.count()


def runner(gw):
    return gw.node.roles["gateway"].sv.runner


# --- (a) delivered by cut-through ----------------------------------------------------------------

def test_delivered_by_cut_through_never_touches_the_spool(make_gateway, mailbox, dns):
    """Real mailbox server downstream: 250 only after its 250; the gateway's spool never gets a
    file, the message is stored once, with the gateway's stamps and seal, and the trace says so."""
    gw = make_gateway()
    calls = spy_spool(gw)
    r = send(gw, data=simple_message(subject="cut"))
    assert r["end"] == (250, str(REPLIES["relayed"])), r
    # At the moment of the 250 the message is already in the mailbox's Maildir (committed before
    # its 250), and the gateway's spool holds no file and was never asked to.
    [stored] = maildir_messages(mailbox.home, "alice@contoso.test")
    assert b"Subject: cut" in stored and b"ARC-Seal: i=1;" in stored and b"X-MXGate-Checks:" in stored
    assert calls == [] and spool_files(gw) == [] and spool_count(gw) == 0
    assert runner(gw).stats["delivered"] == 1
    gw.trace.flush()
    [row] = gw.trace.search(recipient="alice@contoso.test")
    assert row["status"] == "Delivered"
    events = [(e["event"], e["detail"]) for e in gw.trace.show(row["id"])["events"]]
    assert events[0][0] == "Receive" and events[-1][0] == "Send", events
    assert events[-1][1].startswith(f"relayed to 127.0.0.1:{mailbox.port()} (cut-through): smtp; 250"), events


def test_the_pool_keeps_sessions_for_the_cut_through_load(make_gateway, ssink, test_ca):
    """Messages one after another reuse one downstream session (the pool gives it back)."""
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    for i in range(5):
        assert send(gw, data=simple_message(subject=f"m{i}"))["end"] == (250, str(REPLIES["relayed"]))
    assert len(ssink.messages) == 5 and len(ssink.peers) == 1


# --- (b) anything else: spooled before the 250, delivered by the queue -----------------------------

@pytest.mark.parametrize("where", ["down", "greeting-421", "rcpt-451", "final-451"])
def test_trouble_downstream_spools_then_the_queue_delivers_once(make_gateway, test_ca, where):
    port = free_port()
    sink = None if where == "down" else RecordingSink(test_ca["server_cert"], test_ca["server_key"], port=port)
    try:
        if where == "greeting-421":
            sink.greeting = "421 4.3.2 shutting down"
        elif where == "rcpt-451":
            sink.refuse["alice@contoso.test"] = "451 4.3.0 try later"
        elif where == "final-451":
            sink.final = "451 4.3.0 try later"
        gw = make_gateway(downstream=[f"127.0.0.1:{port}"], downstream_ca=test_ca["ca"])
        calls = spy_spool(gw)
        r = send(gw, data=simple_message(subject=f"trouble {where}"))
        assert r["end"] == (250, str(REPLIES["queued"])), r
        assert calls == [["alice@contoso.test"]]  # spooled (enqueue returns once fsynced) before the 250
        if sink is None:
            sink = RecordingSink(test_ca["server_cert"], test_ca["server_key"], port=port)
        sink.greeting, sink.final, sink.refuse = "220 sink ESMTP", "250 stored", {}
        assert wait_until(lambda: spool_count(gw) == 0 and len(sink.messages) >= 1, timeout=20)
        assert [email.message_from_bytes(m["raw"])["Subject"] for m in sink.messages] == [f"trouble {where}"]
    finally:
        if sink is not None:
            sink.close()


def test_a_downstream_that_never_greets_is_not_waited_for(make_gateway, test_ca):
    """A black hole (the kernel accepts, nobody greets) with the queue's connect timeout at 60 s:
    the sender gets its 250 after the cut-through's connect budget (5 s), not after 20 or 60 (the
    test client gives up after 10), with the message spooled, and it arrives once the host greets."""
    import socket

    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    gw = make_gateway(downstream=[f"127.0.0.1:{port}"], downstream_ca=test_ca["ca"], relay_connect_timeout=60.0)
    calls = spy_spool(gw)
    r = send(gw, data=simple_message(subject="hole"))
    assert r["end"] == (250, str(REPLIES["queued"])), r
    assert calls == [["alice@contoso.test"]]
    hole.close()
    sink = RecordingSink(test_ca["server_cert"], test_ca["server_key"], port=port)
    try:
        assert wait_until(lambda: spool_count(gw) == 0 and len(sink.messages) == 1, timeout=90)
    finally:
        sink.close()


def test_silence_after_the_dot_spools_and_may_duplicate_never_lose(make_gateway, ssink, test_ca):
    """The downstream has the message but its reply does not come within cut_through_timeout:
    spooled, 250 to the sender; the queue sends it again — two copies at most, none lost."""
    ssink.hold = threading.Event()
    # relay_timeout long: only the cut-through budget ends the wait (the sink holds its reply 60 s)
    # host_backoff long: the second message must find the host still backing off however slowly
    # this machine gets to it (with the fast queue's 0.2 s it was tried again under load, and both
    # copies of "after" reached the sink).
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"], cut_through_timeout=0.5,
                      relay_timeout=120.0, host_backoff=60.0)
    calls = spy_spool(gw)
    try:
        r = send(gw, data=simple_message(subject="silent"))
        assert r["end"] == (250, str(REPLIES["queued"])), r
        assert calls == [["alice@contoso.test"]] and ssink.got_data.is_set()
        # The next message does not try the silent host again for a while: straight to the spool.
        assert send(gw, data=simple_message(subject="after"))["end"] == (250, str(REPLIES["queued"]))
        assert calls[1:] == [["alice@contoso.test"]]
    finally:
        ssink.hold.set()
    ssink.hold = None
    assert wait_until(lambda: spool_count(gw) == 0, timeout=20)
    subjects = sorted(email.message_from_bytes(m["raw"])["Subject"] for m in ssink.messages)
    assert subjects in (["after", "silent"], ["after", "silent", "silent"])


# --- (c) every recipient refused for good: refused at DATA, no DSN ---------------------------------

def test_single_recipient_550_is_refused_at_data_without_a_dsn(make_gateway, ssink, internet_mx, test_ca):
    ssink.refuse["bob@contoso.test"] = "550 5.1.1 <bob@contoso.test>: no such user"
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    calls = spy_spool(gw)
    r = send(gw, rcpts=["bob@contoso.test"])
    assert r["end"] == (550, str(REPLIES["downstream-unknown-recipient"])), r
    assert calls == [] and spool_count(gw) == 0 and outbound_count(gw) == 0
    assert runner(gw).stats["dsn"] == 0 and internet_mx.messages == [] and ssink.messages == []
    gw.trace.flush()
    [row] = gw.trace.search(recipient="bob@contoso.test")
    assert row["status"] == "Rejected" and row["reason"] == "downstream-unknown-recipient"


def test_every_recipient_refused_by_the_downstream_policy(make_gateway, ssink, test_ca):
    for rcpt in ("alice@contoso.test", "bob@contoso.test"):
        ssink.refuse[rcpt] = "550 5.7.1 not from you"
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    r = send(gw, rcpts=["alice@contoso.test", "bob@contoso.test"])
    assert r["end"] == (550, str(REPLIES["downstream-policy"])), r
    assert spool_count(gw) == 0 and outbound_count(gw) == 0


# --- (d) mixed: 250 and the queue's DSN for the refused one -----------------------------------------

def test_mixed_outcome_is_250_and_a_dsn_for_the_refused(make_gateway, ssink, internet_mx, test_ca):
    ssink.refuse["bob@contoso.test"] = "550 5.1.1 <bob@contoso.test>: no such user"
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    calls = spy_spool(gw)
    r = send(gw, rcpts=["alice@contoso.test", "bob@contoso.test"], data=simple_message(subject="half"))
    assert r["end"] == (250, str(REPLIES["relayed"])), r
    assert calls == [] and spool_count(gw) == 0
    # The DSN was durable in the outbound queue before the 250 (or already sent from it).
    assert runner(gw).stats["dsn"] == 1 and runner(gw).stats["delivered"] == 1 and runner(gw).stats["failed"] == 1
    assert [(m["sender"], m["rcpts"]) for m in ssink.messages] == [("sender@fabrikam.test", ["alice@contoso.test"])]
    assert wait_until(lambda: internet_mx.messages and outbound_count(gw) == 0, timeout=15)
    [dsn] = internet_mx.messages
    assert dsn["sender"] == "" and dsn["rcpts"] == ["sender@fabrikam.test"]
    text = dsn["raw"].decode()
    assert "Final-Recipient: rfc822; bob@contoso.test" in text and "Status: 5.1.1" in text and "Subject: half" in text
    gw.trace.flush()
    assert {r["status"] for r in gw.trace.search(recipient="bob@contoso.test")} == {"Failed"}
    assert {r["status"] for r in gw.trace.search(recipient="alice@contoso.test")} == {"Delivered"}


def test_mixed_with_a_deferred_recipient_spools_only_that_one(make_gateway, ssink, test_ca):
    ssink.refuse["bob@contoso.test"] = "451 4.3.0 try later"
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    calls = spy_spool(gw)
    r = send(gw, rcpts=["alice@contoso.test", "bob@contoso.test"])
    assert r["end"] == (250, str(REPLIES["queued"])), r
    assert calls == [["bob@contoso.test"]]
    ssink.refuse.clear()
    assert wait_until(lambda: spool_count(gw) == 0 and len(ssink.messages) == 2, timeout=20)
    assert [m["rcpts"] for m in ssink.messages] == [["alice@contoso.test"], ["bob@contoso.test"]]


# --- (f) the switch ----------------------------------------------------------------------------------

def test_cut_through_off_queues_first(make_gateway, ssink, test_ca):
    ssink.refuse["bob@contoso.test"] = "550 5.1.1 no such user"
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"], cut_through=False)
    calls = spy_spool(gw)
    assert send(gw)["end"] == (250, str(REPLIES["queued"]))
    assert send(gw, rcpts=["bob@contoso.test"])["end"] == (250, str(REPLIES["queued"]))  # a DSN later, as before
    assert calls == [["alice@contoso.test"], ["bob@contoso.test"]]
    assert wait_until(lambda: spool_count(gw) == 0 and len(ssink.messages) == 1 and runner(gw).stats["failed"] == 1,
                      timeout=20)


def test_a_message_spilled_to_disk_is_queued_not_read_into_memory(make_gateway, ssink, test_ca):
    from mxgate.smtp.limits import SPILL_TO_DISK

    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    calls = spy_spool(gw)
    big = simple_message(subject="big", body=("x" * 900 + "\r\n") * (SPILL_TO_DISK // 900 + 10))
    assert send(gw, data=big)["end"] == (250, str(REPLIES["queued"]))
    assert calls == [["alice@contoso.test"]]
    assert wait_until(lambda: spool_count(gw) == 0 and len(ssink.messages) == 1, timeout=20)


# --- (g) the sender cannot steer around the checks or the seal ---------------------------------------

SPAMMY = (b"From: \"paypal@paypal.test\" <x@fabrikam.test>\r\nTo: alice@contoso.test\r\n"
          b"Subject: URGENT PAYMENT WINNER\r\n\r\nClick here to verify your account, wire transfer now!\r\n")


def test_refused_and_quarantined_messages_are_never_relayed(make_gateway, ssink, test_ca, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=quarantine")
    gw = make_gateway('[gateway.score]\nreject_threshold = 8.0\nquarantine_threshold = 7.0\n',
                      downstream=[ssink.address], downstream_ca=test_ca["ca"])
    assert send(gw, data=SPAMMY)["end"] == (550, str(REPLIES["spam"]))
    assert send(gw)["end"] == (250, str(REPLIES["quarantined"]))
    assert ssink.messages == [] and ssink.peers == [] and spool_count(gw) == 0


def test_forged_stamps_are_removed_and_ours_added_before_cut_through(make_gateway, ssink, test_ca):
    """A sender's own Authentication-Results with our authserv-id, checks and verdict fields:
    the relayed copy carries only the gateway's, sealed."""
    forged = (b"Authentication-Results: gw.mxgate.test; spf=pass; dkim=pass; dmarc=pass\r\n"
              b"X-MXGate-Spam-Verdict: clean\r\nX-MXGate-Checks: all passed\r\n" + simple_message(subject="forged"))
    gw = make_gateway(downstream=[ssink.address], downstream_ca=test_ca["ca"])
    assert send(gw, data=forged)["end"] == (250, str(REPLIES["relayed"]))
    head = ssink.messages[0]["raw"].split(b"\r\n\r\n", 1)[0].decode()
    assert "spf=pass; dkim=pass; dmarc=pass" not in head and "all passed" not in head
    assert head.count("X-MXGate-Spam-Verdict:") == 1 and "ARC-Seal: i=1;" in head
    assert "ARC-Authentication-Results: i=1; gw.mxgate.test;" in head


# --- (e) a crash between the downstream's 250 and ours ------------------------------------------------

@pytest.mark.timeout(120)
def test_kill9_while_the_downstream_answers_is_a_duplicate_at_worst(tmp_path, test_ca, dns):
    """The gateway process dies after the downstream has the message and before the sender has
    a reply: nothing is in the gateway's spool (nothing to resend after the restart), the sender
    got no 250 and sends again — the downstream has it twice, never zero times."""
    sink = RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    sink.hold = threading.Event()
    home = Home.open(tmp_path / "gw")
    rig.apply_policy(home, gateway_policy())
    port = free_port(GATEWAY)
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(port, sink.address, test_ca["ca"], dns))
    node = SubprocessNode(home.root, config).start(wait_for=(GATEWAY, port))
    got: dict = {}

    def client() -> None:
        try:
            got.update(send_message(GATEWAY, port, source=INTERNET, sender="s@fabrikam.test",
                                    rcpts=["alice@contoso.test"], data=simple_message(subject="crash")))
        except OSError as exc:
            got["error"] = exc

    t = threading.Thread(target=client)
    try:
        t.start()
        assert sink.got_data.wait(60)  # the downstream has the message; the gateway waits for its reply
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(30)
        t.join(30)
        assert got.get("end", (0,))[0] != 250  # no reply reached the sender
        sink.hold.set()
        sink.hold = None
        assert list((home.root / "spool").rglob("incoming/*")) + list((home.root / "spool").rglob("deferred/*")) == []
        node = SubprocessNode(home.root, config).start(wait_for=(GATEWAY, port))
        r = send_message(GATEWAY, port, source=INTERNET, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                         data=simple_message(subject="crash"))  # the sender's retry
        assert r["end"][0] == 250
        assert [email.message_from_bytes(m["raw"])["Subject"] for m in sink.messages] == ["crash", "crash"]
    finally:
        sink.hold = None
        node.stop()
        sink.close()
