"""The gateway's message path makes no reference cycles (issue 19): the node collects its young
generation only every GC_YOUNG_THRESHOLD objects, safe because a message — received with its
checks (SPF, DKIM, DMARC, score, attachments), queued, sealed, relayed and delivered — leaves
nothing for the collector. The in-process nodes run on the standard loop, whose own
per-connection transport cycle is set aside (`mxgate serve` runs on uvloop)."""

from __future__ import annotations

from gckit import cycle_garbage, not_the_stdlib_transports, summary
from gwkit import gw_port, spool_count
from rig import INTERNET, RawSMTP, maildir_messages, simple_message, wait_until


def _send(port: int, subjects: list[str]) -> None:
    with RawSMTP("127.0.0.10", port, INTERNET) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO client.test")
        assert c.starttls()[0] == 220
        c.cmd("EHLO client.test")
        for subject in subjects:
            c.send(b"MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n")
            assert [c.read_reply()[0] for _ in range(3)] == [250, 250, 354]
            c.send(simple_message(subject) + b".\r\n")
            code, text = c.read_reply()
            assert code == 250, text
        assert c.cmd("MAIL FROM:<sender@fabrikam.test>")[0] == 250
        assert c.cmd("RCPT TO:<x@elsewhere.example>")[0] == 550  # refused: not an accepted domain
        c.cmd("QUIT")


def test_gateway_messages_make_no_reference_cycles(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = make_gateway()
    port = gw_port(gw)
    _send(port, ["warm 1", "warm 2"])  # lazy imports, the relay's session, the caches
    assert wait_until(lambda: len(maildir_messages(mailbox.home, "alice@contoso.test")) == 2, 20)

    def traffic():
        for i in range(3):
            _send(port, [f"cycle check {i}.{j}" for j in range(4)])
        assert wait_until(lambda: len(maildir_messages(mailbox.home, "alice@contoso.test")) == 14, 20)
        assert wait_until(lambda: spool_count(gw) == 0, 20)
        assert gw.trace.flush(timeout=5) and mailbox.trace.flush(timeout=5)

    garbage = not_the_stdlib_transports(cycle_garbage(traffic))
    assert not garbage, summary(garbage)
