"""Session 10, from the sender's side: the organisation signs what it sends out with its own DKIM
key, choosing the header From domain when it is one of its own (auth/dkim_sign.py). A message
from the Internet whose From names one of the organisation's domains (ceo@contoso.test) is not
the organisation's mail: forwarded on by alice's forward_to, it left signed d=contoso.test,
aligned with its From. A DKIM signature travels with the message: any copy the attacker gets
back (the bounce of a forward carries the message) is a forgery he can replay to anyone with
DMARC passing for contoso.test (RFC 6376 §8.6). Mail from outside is signed only by a domain not
aligned with its authors (the SRS envelope's, when the author is someone else's). End to end:
gateway, mailbox, forwarding, the Internet MX sink."""

from __future__ import annotations

from rig import wait_until

from mxgate.auth.dkim import verify_dkim
from mxgate.auth.dns import dnsfunc_for, make_resolver
from test_mail_flow import cli_run, sink_messages_for, via_gateway

FORGED = (b"From: The CEO <ceo@contoso.test>\r\nTo: alice@contoso.test\r\nSubject: urgent wire\r\n"
          b"Message-ID: <forged-1@evil.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\n"
          b"Wire 250,000 EUR to XX00 0000 today. -- CEO\r\n")


def _publish_contoso_key(org) -> None:
    import json

    record = json.loads(cli_run(org.home, "dkim", "show-dns", "contoso.test", "--json").output)
    org.dns.add(record["name"], "TXT", record["value"])


def test_a_forwarded_message_from_outside_is_never_signed_for_our_author(org):
    _publish_contoso_key(org)
    assert via_gateway(org, data=FORGED, sender="attacker@fabrikam.test")["end"][0] == 250
    assert wait_until(lambda: sink_messages_for(org, "carol@external.test"), 20)
    raw = sink_messages_for(org, "carol@external.test")[0]["raw"]
    assert b"Wire 250,000 EUR" in raw  # forwarded: alice asked for it
    results = verify_dkim(raw, dnsfunc_for(make_resolver([org.dns.address], 2.0)))
    assert not [r for r in results if r.result == "pass" and r.domain.endswith("contoso.test")], results


# The rule itself, pure (auth/dkim_sign.signing_domain): (From, envelope sender, outside) -> domain.
SIGNING = [
    ("ceo@contoso.test", "ceo@contoso.test", False, "contoso.test"),  # our own mail: signed for its author
    ("ceo@contoso.test", "SRS0=h=tt=evil.test=x@contoso.test", True, None),  # a forgery from outside: never
    ("ceo@sales.contoso.test", "SRS0=h=tt=evil.test=x@contoso.test", True, None),  # relaxed alignment too
    ("Ceo <ceo@contoso.test>, x@evil.test", "SRS0=h=tt=evil.test=x@contoso.test", True, None),  # any author
    ("ceo@CONTOSO.test.", "SRS0=h=tt=evil.test=x@contoso.test", True, None),
    ("organizer@fabrikam.test", "SRS0=h=tt=fabrikam.test=organizer@contoso.test", True, "contoso.test"),  # SRS only
    ("organizer@fabrikam.test", "organizer@fabrikam.test", True, None),  # nothing of ours
]


def test_mail_from_outside_is_never_signed_for_its_author():
    from mxgate.auth.dkim_sign import signing_domain

    def ours(domain: str) -> bool:
        return domain.lower().rstrip(".") == "contoso.test"

    for author, sender, outside, expected in SIGNING:
        message = f"From: {author}\r\nSubject: s\r\n\r\nbody\r\n".encode()
        assert signing_domain(message, sender, ours, outside) == expected, (author, sender, outside)
