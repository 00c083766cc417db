"""Issue 19: the relay's pipelining client (queue/smtpclient.py) against a real Postfix smtpd as
the downstream — the exported mailbox configuration, STARTTLS with the test CA, from the gateway
address. Postfix offers PIPELINING, so MAIL, the RCPTs and DATA go in one write; its per-recipient
answers must come back as per-recipient outcomes and the stored message must be the one sent."""

from __future__ import annotations

import asyncio

import rig
from rig import GATEWAY

from mxgate.queue.outbound import tls_context_for
from mxgate.queue.relay import POOL, RelaySettings, relay

BODY = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: pipelined to postfix\r\n\r\n"
        b".a line with one leading dot\r\n..and two\r\n.\r\nend\r\n")


def test_pipelined_relay_to_postfix_gives_per_recipient_outcomes_and_the_exact_message(exported_postfix, test_ca):
    pf = exported_postfix().start()
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
