"""Issue 19 (P5): the fast RCPT decision path decides exactly as the plain one.

The hot path memoises per compiled policy (the restricting connectors of a domain pair, the
attribution refusal of a (restricting, session) pair) and attributes through an indexed prefix
table. Over random policies, sessions and envelopes, a compiled policy warmed by every earlier
decision must return the same RcptDecision — verdict, reason, detail, connector, outcome key,
route, mailbox — as a freshly compiled one whose session facts come from a brute-force scan of
the connectors' prefixes (the longest prefix wins; IPv4-mapped IPv6 is the IPv4 host).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.names import normalize_ip
from mxgate.policy.attribution import SessionFacts, attribute_by_ip, compile_policy, decide_rcpt
from mxgate.policy.ipset import parse_network
from mxgate.policy.model import AcceptedDomain, InboundConnector, Mailbox, Policy
from mxgate.smtp.address import parse_path

DOMAINS = ("contoso.test", "fabrikam.test", "relay.contoso.test")
SENDERS = ("<>", "<a@partner.test>", "<b@sub.partner.test>", "<c@contoso.test>", "<d@evil.test>", "<e@[127.0.0.1]>")
RCPTS = ("<alice@contoso.test>", "<bob@fabrikam.test>", "<x@relay.contoso.test>", "<nobody@contoso.test>",
         "<Postmaster>", "<far@elsewhere.test>", "<y@[127.0.0.10]>")
# Hosts and ranges the attacker sits beside: 127.0.0.10 vs .66, one outside a /28, a /24's edges.
NETS = ("127.0.0.10", "127.0.0.66", "127.0.0.0/28", "127.0.0.0/24", "127.0.0.16/28", "127.0.1.0/24", "10.0.0.0/8",
        "::ffff:127.0.0.20/128", "2001:db8::/32", "2001:db8::10", "::/0", "0.0.0.0/0")
PEERS = ("127.0.0.10", "127.0.0.66", "127.0.0.15", "127.0.0.16", "127.0.0.255", "127.0.1.0", "127.0.0.20",
         "::ffff:127.0.0.10", "::ffff:127.0.0.66", "::ffff:7f00:14", "2001:db8::10", "2001:db8::11", "2001:db9::",
         "10.255.255.255", "11.0.0.0", "0.0.0.0", "255.255.255.255")

connector_st = st.builds(
    lambda i, kind, senders, nets, restrict, tls, assoc, ef: InboundConnector(
        name=f"C{i}", type=kind, sender_domains=senders, sender_ip_addresses=nets,
        restrict_domains_to_ip_addresses=restrict, require_tls=tls, associated_accepted_domains=assoc,
        ef_users=ef),
    st.integers(0, 5), st.sampled_from(["partner", "partner", "on_premises"]),
    st.lists(st.sampled_from(["*", "partner.test", "*.partner.test", "contoso.test"]), max_size=2, unique=True).map(tuple),
    st.lists(st.sampled_from(NETS), max_size=4, unique=True).map(tuple), st.booleans(), st.booleans(),
    st.lists(st.sampled_from(DOMAINS), max_size=2, unique=True).map(tuple),
    st.sampled_from([(), ("alice@contoso.test",)]))

policy_st = st.builds(
    lambda conns: Policy(
        accepted_domains=(AcceptedDomain("contoso.test"), AcceptedDomain("fabrikam.test"),
                          AcceptedDomain("relay.contoso.test", type="internal_relay")),
        mailboxes=(Mailbox("alice@contoso.test"), Mailbox("bob@fabrikam.test"), Mailbox("postmaster@contoso.test")),
        inbound_connectors=tuple({c.name: c for c in conns}.values())),
    st.lists(connector_st, max_size=5))


def scanned_connectors(policy: Policy, peer: str) -> frozenset[str]:
    ip = normalize_ip(peer)
    best, names = -1, set()
    for c in policy.inbound_connectors:
        for text in c.sender_ip_addresses:
            net = parse_network(text)
            if net.version == ip.version and ip in net:
                if net.prefixlen > best:
                    best, names = net.prefixlen, {c.name.lower()}
                elif net.prefixlen == best:
                    names.add(c.name.lower())
    return frozenset(names)


def peer_forms(peer: str):
    yield peer
    yield ipaddress.ip_address(peer)
    if ":" not in peer:
        yield f"::ffff:{peer}"


@settings(max_examples=300, deadline=None)
@given(policy_st, st.lists(st.tuples(st.sampled_from(PEERS), st.booleans(), st.sampled_from(SENDERS),
                                     st.sampled_from(RCPTS), st.frozensets(st.sampled_from(["c0", "c1", "c2"]), max_size=2)),
                           min_size=1, max_size=30))
def test_warm_fast_path_decides_as_a_cold_scan(policy, rounds):
    warm = compile_policy(policy, 1)
    for peer, tls, sender_text, rcpt_text, by_cert in rounds:
        sender = parse_path(sender_text, allow_null=True)
        rcpt = parse_path(rcpt_text, allow_null=False)
        # A certificate's connectors count as the IP's do: the reference folds them into one set.
        expected = decide_rcpt(compile_policy(policy, 1), SessionFacts(normalize_ip(peer), tls, None,
                                                                       scanned_connectors(policy, peer) | by_cert), sender, rcpt)
        for form in peer_forms(peer):
            facts = SessionFacts(peer_ip=normalize_ip(form), tls=tls, ip_connectors=attribute_by_ip(warm, form),
                                 cert_connectors=by_cert)
            assert decide_rcpt(warm, facts, sender, rcpt) == expected, (form, sender_text, rcpt_text)


def test_attacker_beside_the_gateway_is_refused_and_the_gateway_is_not():
    policy = Policy(accepted_domains=(AcceptedDomain("contoso.test"),), mailboxes=(Mailbox("alice@contoso.test"),),
                    inbound_connectors=(InboundConnector("Gateway", sender_domains=("*",), sender_ip_addresses=("127.0.0.10",),
                                                         restrict_domains_to_ip_addresses=True),))
    compiled = compile_policy(policy, 1)
    sender, rcpt = parse_path("<a@partner.test>", allow_null=True), parse_path("<alice@contoso.test>", allow_null=False)
    for peer in ("127.0.0.66", "::ffff:127.0.0.66", "127.0.0.11", "127.0.0.9", "::7f00:a"):
        for _ in range(2):  # the second decision comes from the memo
            d = decide_rcpt(compiled, SessionFacts(normalize_ip(peer), ip_connectors=attribute_by_ip(compiled, peer)), sender, rcpt)
            assert (d.verdict.reason, d.verdict.detail) == ("connector-attribution",
                                                            "restricted by gateway; session matched no connector"), peer
    for peer in ("127.0.0.10", "::ffff:127.0.0.10", "::ffff:7f00:a"):
        d = decide_rcpt(compiled, SessionFacts(normalize_ip(peer), ip_connectors=attribute_by_ip(compiled, peer)), sender, rcpt)
        assert (d.verdict.reason, d.connector, d.route.value) == ("recipient-ok", "Gateway", "local"), peer
