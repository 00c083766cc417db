"""Postfix's SMTP client (smtp(8), Debian's Postfix 3.7) relaying to the mxgate mailbox server, as
an on-premises Postfix in front of it would: STARTTLS, from the gateway address. Postfix's client
sends DATA (it does not use CHUNKING), so this is the DATA path from a real MTA's client while the
server offers CHUNKING — the extension must change nothing for a client that does not use it."""

from __future__ import annotations

import rig
from postfix_rig import PostfixInstance, smtpd_service
from rig import GATEWAY, RawSMTP, maildir_messages

BODY = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: via postfix's smtp client\r\n\r\n"
        b".leading dot\r\n..two\r\nQUIT\r\nlast line\r\n")


def test_postfix_smtp_client_relays_to_our_mailbox_by_data_and_the_message_arrives(node_factory, monkeypatch):
    from mxgate.server.session import SmtpSession

    verbs = []

    def spy(verb):
        real = getattr(SmtpSession, f"_cmd_{verb}")

        def seen(self, arg):
            verbs.append(verb)
            return real(self, arg)
        return seen

    for verb in ("DATA", "BDAT"):
        monkeypatch.setattr(SmtpSession, f"_cmd_{verb}", spy(verb))
    n = node_factory()
    pf_port = rig.free_port()
    pf = PostfixInstance(main_cf=f"""
mynetworks = 127.0.0.0/8
relay_domains = contoso.test
relayhost = [127.0.0.1]:{n.port()}
smtp_bind_address = {GATEWAY}
smtp_tls_security_level = encrypt
smtpd_relay_restrictions = permit_mynetworks, reject
""", master_cf=smtpd_service(f"127.0.0.1:{pf_port}"))
    try:
        pf.write().start(wait_for=[("127.0.0.1", pf_port)])
        with RawSMTP("127.0.0.1", pf_port) as c:
            c.greeting()
            assert "CHUNKING" in c.cmd("EHLO client.test")[1]
            assert c.cmd("MAIL FROM:<s@fabrikam.test>")[0] == 250
            assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            assert c.read_reply()[0] == 250
            c.cmd("QUIT")
        assert rig.wait_until(lambda: maildir_messages(n.home, "alice@contoso.test"), timeout=20), pf.log_tail()
        log = pf.log_tail()
        assert "status=sent" in log and f"relay=127.0.0.1[127.0.0.1]:{n.port()}" in log, log
    finally:
        pf.stop()
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert stored.endswith(b"\r\n\r\n" + BODY.split(b"\r\n\r\n", 1)[1]), stored
    assert b"with ESMTPS" in stored  # our Received: TLS from the gateway address
    assert verbs == ["DATA"]  # Postfix's client did not use CHUNKING, though our server offered it
