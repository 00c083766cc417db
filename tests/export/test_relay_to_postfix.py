"""Issue 19: the relay's pipelining client (queue/smtpclient.py) against a real Postfix smtpd as
the downstream — the exported mailbox configuration, STARTTLS with the test CA, from the gateway
address. Postfix offers PIPELINING (and CHUNKING, RFC 3030, unless told not to), so MAIL, the RCPTs
and DATA — or `BDAT <n> LAST` and the message — go in one write; its per-recipient
answers must come back as per-recipient outcomes and the stored message must be the one sent."""

from __future__ import annotations

import asyncio

import pytest
import rig
from rig import GATEWAY

from mxgate.queue.outbound import tls_context_for
from mxgate.queue.relay import POOL, RelaySettings, relay

BODY = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: pipelined to postfix\r\n\r\n"
        b".a line with one leading dot\r\n..and two\r\n.\r\nend\r\n")


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_pipelined_relay_to_postfix_gives_per_recipient_outcomes_and_the_exact_message(exported_postfix, test_ca,
                                                                                       chunking, monkeypatch):
    from mxgate.queue.smtpclient import SmtpClient

    pf = exported_postfix()
    if not chunking:  # Postfix stops offering CHUNKING: the relay's DATA path against a real smtpd
        pf.instance.main_cf += "\nsmtpd_discard_ehlo_keywords = chunking\n"
        pf.instance.write()

        async def never(*args, **kwargs):
            raise AssertionError("BDAT sent to a server that does not offer CHUNKING")

        monkeypatch.setattr(SmtpClient, "chunked_transaction", never)
    pf.start()
    settings = RelaySettings((f"127.0.0.1:{pf.port}",), tls_context_for("certificate_validation", test_ca["ca"]),
                             source_address=GATEWAY, helo="gw.contoso.test")

    async def both():
        first = await relay(settings, "s@fabrikam.test",
                            ["alice@contoso.test", "nobody@contoso.test", "x@elsewhere.test", "bob@contoso.test"], BODY)
        second = await relay(settings, "s@fabrikam.test", ["alice@contoso.test"], BODY)  # a pooled session
        POOL.close_for_this_loop()
        return first, second

    first, second = asyncio.run(both())
    assert [(o.address, o.state) for o in first.outcomes] == [
        ("alice@contoso.test", "delivered"), ("nobody@contoso.test", "failed"),
        ("x@elsewhere.test", "failed"), ("bob@contoso.test", "delivered")], first
    assert first.outcomes[1].status == "5.1.1" and "Relay access denied" in first.outcomes[2].diagnostic
    assert first.tls and [o.state for o in second.outcomes] == ["delivered"]
    assert rig.wait_until(lambda: len(pf.messages("alice@contoso.test")) == 2 and pf.messages("bob@contoso.test"),
                          timeout=10), pf.instance.log_tail()
    for stored in pf.messages("alice@contoso.test") + pf.messages("bob@contoso.test"):
        # Postfix's virtual(8) stores LF line ends, after its own trace headers: the message
        # itself, dots unstuffed, byte for byte.
        assert stored.endswith(b"\n" + BODY.replace(b"\r\n", b"\n")), stored


def test_chunked_relay_to_postfix_sends_bdat_last_and_the_message_arrives_exactly(exported_postfix, test_ca, monkeypatch):
    """RFC 3030: Postfix's smtpd offers CHUNKING; the relay sends MAIL, RCPT and `BDAT <n> LAST`
    with the message unstuffed — dot lines, a "." alone on a line and all — in one write."""
    from mxgate.queue.smtpclient import SmtpClient

    chunked = []
    real = SmtpClient.chunked_transaction

    async def spy(self, *args, **kwargs):
        chunked.append(self.supports("PIPELINING"))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SmtpClient, "chunked_transaction", spy)
    pf = exported_postfix().start()
    settings = RelaySettings((f"127.0.0.1:{pf.port}",), tls_context_for("certificate_validation", test_ca["ca"]),
                             source_address=GATEWAY, helo="gw.contoso.test")

    async def once():
        result = await relay(settings, "s@fabrikam.test", ["alice@contoso.test", "nobody@contoso.test"], BODY)
        POOL.close_for_this_loop()
        return result

    result = asyncio.run(once())
    assert [(o.address, o.state) for o in result.outcomes] == [("alice@contoso.test", "delivered"),
                                                               ("nobody@contoso.test", "failed")], result
    assert chunked == [True]  # CHUNKING and PIPELINING offered: one BDAT LAST behind MAIL/RCPT
    assert rig.wait_until(lambda: pf.messages("alice@contoso.test"), timeout=10), pf.instance.log_tail()
    [stored] = pf.messages("alice@contoso.test")
    assert stored.endswith(b"\n" + BODY.replace(b"\r\n", b"\n")), stored
