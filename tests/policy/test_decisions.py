"""decide_connect, decide_mail and decide_rcpt as tables: settings + facts → verdict + reason.

Pure functions, so no sockets: each row names the session's facts (peer, TLS, certificate
connectors), the envelope, and the expected action, stable reason and route. The policy is the
guide's organisation plus an on-premises connector, a certificate connector, an internal-relay
domain and a second partner restricted to one accepted domain.
"""

from __future__ import annotations

import ipaddress

import pytest

from mxgate.policy.attribution import (
    SessionFacts,
    attribute_by_ip,
    compile_policy,
    decide_connect,
    decide_mail,
    decide_rcpt,
)
from mxgate.policy.document import load_toml
from mxgate.smtp.address import parse_address, parse_path
from mxgate.verdict import Action, RcptRoute

POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[accepted_domain]]
name = "fabrikam-hosted.test"

[[accepted_domain]]
name = "relay.contoso.test"
type = "internal_relay"

[[mailbox]]
address = "alice@contoso.test"
aliases = ["alice.smith@contoso.test"]

[[mailbox]]
address = "bob@fabrikam-hosted.test"

[[mailbox]]
address = "postmaster@contoso.test"

[[inbound_connector]]
name = "Third-party filter service"
type = "partner"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.10"]
restrict_domains_to_ip_addresses = true
require_tls = true
associated_accepted_domains = ["contoso.test", "relay.contoso.test"]
ef_skip_last_ip = true
ef_users = ["alice@contoso.test"]

[[inbound_connector]]
name = "Hosted partner"
type = "partner"
sender_domains = ["partner.test"]
sender_ip_addresses = ["127.0.0.20"]
restrict_domains_to_ip_addresses = true
require_tls = false
associated_accepted_domains = ["fabrikam-hosted.test"]

[[inbound_connector]]
name = "Printers"
type = "on_premises"
sender_ip_addresses = ["127.0.0.30"]
require_tls = false
"""

GATEWAY, PARTNER, PRINTER, ATTACKER = "127.0.0.10", "127.0.0.20", "127.0.0.30", "127.0.0.66"
COMPILED = compile_policy(load_toml(POLICY), 7)


def facts(peer: str, *, tls: bool = True) -> SessionFacts:
    ip = ipaddress.ip_address(peer)
    return SessionFacts(peer_ip=ip, tls=tls, ip_connectors=attribute_by_ip(COMPILED, ip))


@pytest.mark.parametrize("peer, stage, action, reason", [
    (GATEWAY, "connect", Action.ACCEPT, "connect-ok"),
    (ATTACKER, "rcpt", Action.ACCEPT, "connect-ok"),  # refusing later (at RCPT) is the default
    # Not every accepted domain is IP-locked by a `*` connector: shedding at connect is unsafe.
    (ATTACKER, "connect", Action.ACCEPT, "connect-ok"),
])
def test_decide_connect(peer, stage, action, reason):
    v = decide_connect(COMPILED, facts(peer), stage)
    assert (v.action, v.reason) == (action, reason)


def test_decide_connect_sheds_unattributed_peers_when_everything_is_locked():
    locked = compile_policy(load_toml(POLICY.replace('associated_accepted_domains = ["contoso.test", '
                                                     '"relay.contoso.test"]\n', "")
                                      .replace('sender_domains = ["partner.test"]', 'sender_domains = ["*"]')), 1)
    assert locked.fully_ip_locked
    v = decide_connect(locked, SessionFacts(ipaddress.ip_address(ATTACKER)), "connect")
    assert (v.action, v.reason) == (Action.REJECT, "connector-attribution-connect")
    ok = decide_connect(locked, SessionFacts(ipaddress.ip_address(GATEWAY), ip_connectors=attribute_by_ip(locked, GATEWAY)),
                        "connect")
    assert ok.action is Action.ACCEPT


@pytest.mark.parametrize("peer, tls, sender, action, reason", [
    (GATEWAY, True, "a@fabrikam.test", Action.ACCEPT, "sender-ok"),
    (GATEWAY, False, "a@fabrikam.test", Action.REJECT, "tls-required"),  # RFC 3207 §4: the connector asks for TLS
    (GATEWAY, False, "", Action.REJECT, "tls-required"),  # the null sender too: sender_domains = *
    (PARTNER, False, "a@partner.test", Action.ACCEPT, "sender-ok"),  # that connector does not require TLS
    (ATTACKER, False, "a@fabrikam.test", Action.ACCEPT, "sender-ok"),  # anonymous: refused at RCPT, not here
    (PRINTER, False, "scanner@contoso.test", Action.ACCEPT, "sender-ok"),
])
def test_decide_mail(peer, tls, sender, action, reason):
    v = decide_mail(COMPILED, facts(peer, tls=tls), parse_path(f"<{sender}>", allow_null=True))
    assert (v.action, v.reason) == (action, reason)


@pytest.mark.parametrize("peer, sender, rcpt, action, reason, route, connector", [
    # the lock-down: only the restricting connector's IP may deliver for contoso.test
    (GATEWAY, "a@fabrikam.test", "alice@contoso.test", Action.ACCEPT, "recipient-ok", "local", "Third-party filter service"),
    (ATTACKER, "a@fabrikam.test", "alice@contoso.test", Action.REJECT, "connector-attribution", "", ""),
    (GATEWAY, "a@fabrikam.test", "alice.smith@contoso.test", Action.ACCEPT, "recipient-ok", "local",
     "Third-party filter service"),
    (GATEWAY, "a@fabrikam.test", "nobody@contoso.test", Action.REJECT, "unknown-recipient", "",
     "Third-party filter service"),
    (GATEWAY, "a@fabrikam.test", "anyone@relay.contoso.test", Action.ACCEPT, "recipient-ok", "relay",
     "Third-party filter service"),
    # no open relay, no address literals
    (GATEWAY, "a@fabrikam.test", "x@elsewhere.test", Action.REJECT, "relay-denied", "", ""),
    (ATTACKER, "a@fabrikam.test", "x@[127.0.0.1]", Action.REJECT, "address-literal", "", ""),
    # a partner restricted to the domain it hosts, for its own sender domain only
    (PARTNER, "a@partner.test", "bob@fabrikam-hosted.test", Action.ACCEPT, "recipient-ok", "local", "Hosted partner"),
    (ATTACKER, "a@partner.test", "bob@fabrikam-hosted.test", Action.REJECT, "connector-attribution", "", ""),
    (ATTACKER, "a@other.test", "bob@fabrikam-hosted.test", Action.ACCEPT, "recipient-ok", "local", ""),
    # the organisation's own servers: restrictions do not apply, and they may relay out
    (PRINTER, "scanner@contoso.test", "alice@contoso.test", Action.ACCEPT, "recipient-ok", "local", "Printers"),
    (PRINTER, "scanner@contoso.test", "x@elsewhere.test", Action.ACCEPT, "recipient-ok", "relay", "Printers"),
    # <postmaster> without a domain goes to the primary domain's postmaster (RFC 5321 §4.5.1)
    (GATEWAY, "a@fabrikam.test", "postmaster", Action.ACCEPT, "recipient-ok", "local", "Third-party filter service"),
])
def test_decide_rcpt(peer, sender, rcpt, action, reason, route, connector):
    d = decide_rcpt(COMPILED, facts(peer), parse_path(f"<{sender}>", allow_null=True), parse_path(f"<{rcpt}>", allow_null=False))
    assert (d.verdict.action, d.verdict.reason, d.route, d.connector) == (action, reason, RcptRoute(route), connector)
    assert type(d.route) is RcptRoute  # the enum, never a bare string that a typo could not be told from
    if route == "local":
        assert d.mailbox is not None and d.mailbox.address == {"alice.smith@contoso.test": "alice@contoso.test",
                                                               "postmaster": "postmaster@contoso.test"}.get(rcpt, rcpt)


def test_decide_rcpt_defers_a_recipient_with_another_outcome():
    """mail-flow.md §3.6: one transaction, one policy outcome; the second kind waits (452 4.5.3)."""
    sender = parse_address("a@fabrikam.test")  # enhanced filtering applies to alice only (ef_users)
    first = decide_rcpt(COMPILED, facts(GATEWAY), sender, parse_address("alice@contoso.test"))
    second = decide_rcpt(COMPILED, facts(GATEWAY), sender, parse_address("postmaster@contoso.test"), first.outcome_key)
    assert (second.verdict.action, second.verdict.reason) == (Action.TEMPFAIL, "different-policy-outcome")
    same = decide_rcpt(COMPILED, facts(GATEWAY), sender, parse_address("Alice@contoso.test"), first.outcome_key)
    assert same.verdict.action is Action.ACCEPT


def test_decide_rcpt_srs_target_is_relayed_to_the_original_sender():
    d = decide_rcpt(COMPILED, facts(GATEWAY), parse_path("<>", allow_null=True),
                    parse_address("SRS0=abcd=XY=fabrikam.test=someone@contoso.test"), srs_target="someone@fabrikam.test")
    assert (d.verdict.action, d.route, d.target) == (Action.ACCEPT, RcptRoute.RELAY, "someone@fabrikam.test")
