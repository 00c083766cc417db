"""A sender writes ARC fields without an ARC-Seal (a forged ARC-Message-Signature and an
ARC-Authentication-Results claiming dmarc=pass). RFC 8617 §4.2.1/§5.2: such fields make the chain
structurally invalid, so the gateway records arc=fail and seals its own set with cv=fail, rather
than skipping validation and relaying the message unsealed (the behaviour before: only an
ARC-Seal triggered validation)."""

from __future__ import annotations

from gwkit import gw_port
from rig import INTERNET, maildir_messages, send_message, simple_message, wait_until

from mxgate.auth.arc import validate_arc
from mxgate.auth.dns import dnsfunc_for, make_resolver

FORGED = (b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=evil.test; s=x;\r\n"
          b" h=from:to:subject; bh=AAAA; b=AAAA\r\n"
          b"ARC-Authentication-Results: i=1; evil.test; dmarc=pass header.from=fabrikam.test\r\n")


def test_arc_fields_without_a_seal_are_arc_fail_and_sealed_cv_fail(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = make_gateway()
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                 rcpts=["bob@contoso.test"], data=FORGED + simple_message(to="bob@contoso.test"))
    assert r["end"][0] == 250, r
    assert wait_until(lambda: maildir_messages(mailbox.home, "bob@contoso.test"), timeout=10)
    [stored] = maildir_messages(mailbox.home, "bob@contoso.test")
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert "gw.mxgate.test; spf=pass smtp.mailfrom=fabrikam.test" in head
    ours = next(line for line in head.split("\r\n") if "gw.mxgate.test; spf=" in line and "ARC-" not in line)
    assert "arc=fail" in head[head.index(ours):head.index(ours) + 400]
    assert "ARC-Seal: i=2; cv=fail;" in head  # sealed after the sender's i=1, saying the chain failed
    assert validate_arc(stored, dnsfunc_for(make_resolver([dns.address], 2.0))).status == "fail"
