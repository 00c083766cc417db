"""The mailbox's per-message hand-offs (issue 19), through a real node on loopback sockets with
STARTTLS: every accepted message is one job on the check threads, the group committer wakes the
event loop at most once per batch, and no 250 leaves before the batch's directory fsync has
returned (RFC 5321 §6.1: the 250 promises the message survives a crash)."""

from __future__ import annotations

import asyncio
import select
import threading

import rig
from rig import GATEWAY, RawSMTP
from mxgate.auth.pipeline import Authenticator


def _authenticator(n) -> Authenticator:
    (auth,) = [e for e in n.node.extras if isinstance(e, Authenticator)]
    return auth


def _open(n) -> RawSMTP:
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    assert c.greeting()[0] == 220
    c.cmd("EHLO gw.test")
    assert c.starttls()[0] == 220
    c.cmd("EHLO gw.test")
    return c


def _send(c: RawSMTP, subject: str) -> None:
    """MAIL, RCPT, DATA pipelined (RFC 2920), then the message; the end-of-data reply is left unread."""
    c.send(b"MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n")
    assert [c.read_reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(rig.simple_message(subject) + b".\r\n")


def test_each_message_is_one_check_job_and_one_loop_wakeup_at_most_per_commit_batch(node_factory, dns):
    n = node_factory(dns={"servers": [dns.address]})
    auth, committer = _authenticator(n), n.node.committer
    jobs0, stats0 = auth.threads.jobs, committer.stats
    with _open(n) as c:
        for i in range(8):
            _send(c, f"hop {i}")
            code, text = c.read_reply()
            assert code == 250, text
        c.cmd("QUIT")
    stats = committer.stats
    assert auth.threads.jobs - jobs0 == 8  # one hand-over to the check threads per message, no more
    assert stats.jobs - stats0.jobs == 8
    assert stats.wakeups - stats0.wakeups == stats.batches - stats0.batches  # one loop, one wake-up per batch
    assert len(rig.maildir_messages(n.home, "alice@contoso.test")) == 8


def test_no_250_until_the_batch_directory_fsync_returned(node_factory, dns, monkeypatch):
    """The reply is held while the committer sits in the directory fsync of the message's batch:
    a crash then (kill -9, power loss) leaves a client that never saw 250 and sends again."""
    import mxgate.durable as durable

    n = node_factory(dns={"servers": [dns.address]})
    entered, release = threading.Event(), threading.Event()
    real_sync = durable.sync_directory

    def held_sync(path):
        if path.name == "new":  # the Maildir's new/: the name that makes the message visible
            entered.set()
            assert release.wait(20)
        real_sync(path)

    monkeypatch.setattr(durable, "sync_directory", held_sync)
    with _open(n) as c:
        try:
            _send(c, "held at the directory fsync")
            assert entered.wait(20)  # the file is written and renamed; its directory entry is not yet stable
            for _ in range(3):  # the loop has run everything it had ready; a reply it wrote is on loopback now
                n.call(asyncio.sleep(0))
            poller = select.poll()  # not select(): in the whole suite the socket's fd may be above 1024
            poller.register(c.sock, select.POLLIN)
            pending = c.sock.pending() if hasattr(c.sock, "pending") else 0
            assert not poller.poll(0) and not pending  # nothing was sent: no 250 before the fsync returned
        finally:
            release.set()  # a failed assertion must not leave the committer held
        code, text = c.read_reply()
        assert code == 250, text
        c.cmd("QUIT")
    assert len(rig.maildir_messages(n.home, "alice@contoso.test")) == 1


def test_a_check_that_raises_on_its_thread_answers_451_and_stores_nothing(node_factory, dns, monkeypatch):
    """A bug or an exotic input that makes a check raise on the check threads must come back to
    the session as a temporary failure (the client retries), never a hang or a 250."""
    n = node_factory(dns={"servers": [dns.address]})

    def broken(self, data, *args):
        raise RuntimeError("a check's bug on hostile input")

    monkeypatch.setattr(Authenticator, "_checks", broken)
    with _open(n) as c:
        _send(c, "check raises")
        code, text = c.read_reply()
        assert code == 451 and "4.3.0" in text, text
        _send(c, "and again on the same session")  # the session and the check threads go on
        assert c.read_reply()[0] == 451
        c.cmd("QUIT")
    assert rig.maildir_messages(n.home, "alice@contoso.test") == []
