"""Connector attribution and lock-down enforcement on the mailbox server (mail-flow.md §3). Pure.

Owns: compiling a Policy into lookup structures (`CompiledPolicy`), and the decisions at each
SMTP stage of the anonymous inbound listener: `decide_connect`, `decide_mail`, `decide_rcpt`.
Facts come in as frozen values; a Verdict with a stable reason goes out. No I/O, no clock.

Semantics:
- A session is attributed by IP to the connectors whose `sender_ip_addresses` hold the most
  specific prefix covering the peer (longest prefix wins), and after STARTTLS to certificate
  connectors whose name (CN or DNS SAN) — and pins, when listed — match the client certificate.
- A partner connector with a restriction *restricts* a message when the envelope sender's
  domain matches its `sender_domains` and the recipient's domain is in its accepted domains
  (`associated_accepted_domains`, empty = all). A restricted message is accepted only if the
  session was attributed to one of the connectors that restrict it; otherwise 550 5.7.51.
- Sessions attributed to an on_premises connector are the organisation's own: restrictions of
  partner connectors never apply to them, and they may relay to external recipients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from mxgate.names import IPAddress, normalize_domain
from mxgate.policy.ipset import PrefixTable, parse_network
from mxgate.policy.model import AcceptedDomain, InboundConnector, Mailbox, Policy
from mxgate.smtp.address import Address
from mxgate.verdict import Action, RcptRoute, Verdict, accept, reject, tempfail


@dataclass(frozen=True)
class CompiledPolicy:
    version: int
    policy: Policy
    ip_table: PrefixTable
    connectors: dict[str, InboundConnector]  # enabled inbound connectors by lower-case name
    restricting: tuple[InboundConnector, ...]
    certificate_connectors: tuple[InboundConnector, ...]
    directory: dict[str, Mailbox]  # address or alias (lower case) → mailbox
    # Every accepted domain is covered by a `*` IP-restricting connector: refusal at connect is safe.
    fully_ip_locked: bool
    # Precomputed, normalised forms so a decision does no string normalisation (P5: < 5 µs).
    accepted: dict[str, AcceptedDomain] = field(default_factory=dict)
    subdomain_accepted: tuple[tuple[str, AcceptedDomain], ...] = ()
    sender_patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    associated: dict[str, frozenset[str]] = field(default_factory=dict)
    # (sender domain, recipient domain) → names of the connectors that restrict that pair.
    # A memo, not state: the result depends only on this (immutable) policy.
    _restrict_memo: dict = field(default_factory=dict, compare=False, repr=False)
    # (restricting names, session's connectors) → the connector-attribution refusal.
    _refusal_memo: dict = field(default_factory=dict, compare=False, repr=False)
    # connector name as a decision names it → Policy.inbound's answer (bounded by the policy's names).
    _inbound_memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def organization(self):
        return self.policy.organization

    def inbound(self, name: str) -> InboundConnector | None:
        """`Policy.inbound(name)` (disabled connectors too), remembered: its linear, case-folding
        scan ran twice per message in the mailbox's authentication hook (issue 19)."""
        memo = self._inbound_memo
        if name in memo:
            return memo[name]
        found = self.policy.inbound(name)
        if len(memo) < 1024:  # names come from this policy's decisions; the bound is a backstop
            memo[name] = found
        return found


def compile_policy(policy: Policy, version: int) -> CompiledPolicy:
    enabled = [c for c in policy.inbound_connectors if c.enabled]
    entries = []
    for c in enabled:
        for text in c.sender_ip_addresses:
            entries.append((parse_network(text), c.name.lower()))
    directory: dict[str, Mailbox] = {}
    for m in policy.mailboxes:
        for a in (m.address, *m.aliases):
            directory[a.lower()] = m
    restricting = tuple(c for c in enabled if c.restricts)
    domains = [normalize_domain(d.name) for d in policy.accepted_domains]
    fully = bool(domains) and all(
        any(c.restrict_domains_to_ip_addresses and "*" in c.sender_domains and _covers_recipient(c, d) for c in restricting)
        for d in domains)
    accepted = {normalize_domain(d.name): d for d in policy.accepted_domains}
    return CompiledPolicy(
        version=version,
        policy=policy,
        ip_table=PrefixTable(entries),
        connectors={c.name.lower(): c for c in enabled},
        restricting=restricting,
        certificate_connectors=tuple(c for c in enabled if c.tls_sender_certificate_name),
        directory=directory,
        fully_ip_locked=fully,
        accepted=accepted,
        subdomain_accepted=tuple(sorted(((n, d) for n, d in accepted.items() if d.match_subdomains),
                                        key=lambda item: -len(item[0]))),
        sender_patterns={c.name.lower(): tuple(normalize_domain(p) for p in c.sender_domains) for c in enabled},
        associated={c.name.lower(): frozenset(normalize_domain(d) for d in c.associated_accepted_domains) for c in enabled},
    )


def _pattern_match(pattern: str, domain: str) -> bool:
    """pattern_matches() for already-normalised values (the hot path)."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain == pattern[2:] or domain.endswith(pattern[1:])
    return domain == pattern


def _sender_covered(compiled: "CompiledPolicy", c: InboundConnector, sender_domain: str) -> bool:
    return any(_pattern_match(p, sender_domain) for p in compiled.sender_patterns[c.name.lower()])


def lookup_accepted_domain(compiled: "CompiledPolicy", domain: str) -> AcceptedDomain | None:
    """Exact accepted domain first, then the longest one with match_subdomains."""
    found = compiled.accepted.get(domain)
    if found is not None:
        return found
    for name, d in compiled.subdomain_accepted:
        if domain.endswith("." + name):
            return d
    return None


# --- facts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientCertFacts:
    names: tuple[str, ...]  # subject CN and DNS SANs, lower case
    spki_sha256: str


_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, init=False)
class SessionFacts:
    peer_ip: IPAddress
    tls: bool = False
    client_cert: ClientCertFacts | None = None
    ip_connectors: frozenset[str] = _NONE
    cert_connectors: frozenset[str] = _NONE

    def __init__(self, peer_ip: IPAddress, tls: bool = False, client_cert: ClientCertFacts | None = None,
                 ip_connectors: frozenset[str] = _NONE, cert_connectors: frozenset[str] = _NONE) -> None:
        # One per session and per STARTTLS: the generated frozen __init__ (object.__setattr__
        # per field) was a third of a P5 decision. Still immutable: __setattr__ stays frozen.
        self.__dict__.update(peer_ip=peer_ip, tls=tls, client_cert=client_cert, ip_connectors=ip_connectors,
                             cert_connectors=cert_connectors)

    @property
    def connectors(self) -> frozenset[str]:
        if not self.cert_connectors:
            return self.ip_connectors
        return self.ip_connectors | self.cert_connectors


def attribute_by_ip(compiled: CompiledPolicy, peer_ip: str | IPAddress) -> frozenset[str]:
    return compiled.ip_table.lookup(peer_ip)  # lookup() normalises (IPv4-mapped IPv6 → IPv4)


def attribute_by_certificate(compiled: CompiledPolicy, cert: ClientCertFacts | None) -> frozenset[str]:
    if cert is None:
        return frozenset()
    matched = set()
    for c in compiled.certificate_connectors:
        if not any(certificate_name_matches(c.tls_sender_certificate_name, n) for n in cert.names):
            continue
        pins = set(c.tls_sender_certificate_fingerprints)  # canonical: policy/pins.py
        if pins and cert.spki_sha256.lower() not in pins:
            continue
        matched.add(c.name.lower())
    return frozenset(matched)


def certificate_name_matches(pattern: str, name: str) -> bool:
    """`host.example` exact; `*.example` matches one or more labels below example (as EXO does)."""
    p, n = normalize_domain(pattern), normalize_domain(name)
    if p.startswith("*."):
        return n.endswith(p[1:]) and len(n) > len(p) - 1
    return p == n


def session_connectors(compiled: CompiledPolicy, facts: SessionFacts) -> list[InboundConnector]:
    names = facts.connectors
    if not names:
        return []
    return [compiled.connectors[n] for n in sorted(names) if n in compiled.connectors]


def is_on_premises(compiled: CompiledPolicy, facts: SessionFacts) -> bool:
    return any(c.type == "on_premises" for c in session_connectors(compiled, facts))


# --- decisions -----------------------------------------------------------------------------

def decide_connect(compiled: CompiledPolicy, facts: SessionFacts, reject_stage: str) -> Verdict:
    """With reject_stage = "connect", refuse peers that no accepted domain would accept anyway."""
    if reject_stage == "connect" and compiled.fully_ip_locked and not facts.ip_connectors:
        # A certificate could still attribute the session after STARTTLS; only shed when no
        # certificate connector exists.
        if not compiled.certificate_connectors:
            return reject("connector-attribution-connect", f"peer {facts.peer_ip} matches no connector")
    return accept("connect-ok")


def connect_stage_fallback(compiled: CompiledPolicy, reject_stage: str) -> str | None:
    """Why `reject_stage = "connect"` cannot refuse in the greeting under this policy, so bypass
    attempts are refused at RCPT instead; None when it applies (or RCPT was asked for).

    For the node's start-up log and `mxgate verify`: the fallback is safe, but an admin who
    chose "connect" should not have to discover it from a packet capture."""
    if reject_stage != "connect":
        return None
    if compiled.certificate_connectors:
        names = ", ".join(repr(c.name) for c in compiled.certificate_connectors)
        return (f'reject_stage = "connect": bypass attempts are refused at RCPT instead, because certificate '
                f"connector(s) {names} can only attribute a session after STARTTLS, when the client certificate is known")
    if not compiled.fully_ip_locked:
        restricting = compiled.restricting
        open_domains = [d for d in compiled.accepted
                        if not any(c.restrict_domains_to_ip_addresses and "*" in c.sender_domains
                                   and _covers_recipient(c, d) for c in restricting)]
        return (f'reject_stage = "connect": bypass attempts are refused at RCPT instead, because accepted '
                f"domain(s) {', '.join(open_domains) or '(none)'} are not locked to IP addresses by a partner "
                "connector with sender_domains ['*'], so an unlisted address may still be accepted for them")
    return None


def applicable_connectors(compiled: CompiledPolicy, facts: SessionFacts, sender_domain: str) -> list[InboundConnector]:
    """The session's connectors that cover this envelope sender (partner: sender_domains)."""
    return [c for c in session_connectors(compiled, facts)
            if c.type == "on_premises" or _sender_covered(compiled, c, sender_domain)]


def decide_mail(compiled: CompiledPolicy, facts: SessionFacts, sender: Address) -> Verdict:
    """RFC 3207 §4 / mail-flow.md §3.4: a connector that requires TLS refuses clear text at MAIL."""
    for c in applicable_connectors(compiled, facts, sender.domain):
        if c.require_tls and not facts.tls:
            return reject("tls-required", f"connector {c.name!r} requires TLS")
    return accept("sender-ok")


class RcptDecision(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: one is built per RCPT, and a frozen
    dataclass's __init__ (object.__setattr__ per field) was a fifth of a decision's time."""

    verdict: Verdict
    connector: str  # the connector the message is attributed to ("" = anonymous)
    outcome_key: tuple  # recipients with different keys need separate transactions
    route: RcptRoute  # LOCAL, RELAY (to an outbound connector), NONE when refused
    mailbox: Mailbox | None = None
    target: str = ""  # where a relayed recipient really goes, when not the RCPT address (SRS reversal)


def _covers_recipient(c: InboundConnector, domain: str) -> bool:
    if not c.associated_accepted_domains:
        return True
    return normalize_domain(domain) in {normalize_domain(d) for d in c.associated_accepted_domains}


def _covers(compiled: CompiledPolicy, c: InboundConnector, domain: str) -> bool:
    assoc = compiled.associated[c.name.lower()]
    return not assoc or domain in assoc


def restricting_connectors_for(compiled: CompiledPolicy, sender_domain: str, rcpt_domain: str) -> list[InboundConnector]:
    return [c for c in compiled.restricting
            if _sender_covered(compiled, c, sender_domain) and _covers(compiled, c, rcpt_domain)]


MEMO_LIMIT = 50_000


def restricting_names(compiled: CompiledPolicy, sender_domain: str, rcpt_domain: str) -> frozenset[str]:
    key = (sender_domain, rcpt_domain)
    memo = compiled._restrict_memo
    found = memo.get(key)
    if found is None:
        found = _remember(memo, key, frozenset(c.name.lower() for c in restricting_connectors_for(compiled, sender_domain, rcpt_domain)))
    return found


def _remember(memo: dict, key, value):
    """Store a memo entry; a memo past MEMO_LIMIT starts over (keys come from senders: bounded)."""
    if len(memo) > MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


def _attribution_refusal(compiled: CompiledPolicy, restricting: frozenset[str], connectors: frozenset[str]) -> RcptDecision:
    """The bypass attempt's refusal: the most common RCPT decision under attack (P2, P5), and a
    value of (restricting, session's connectors) alone, so built once per pair."""
    key = (restricting, connectors)
    memo = compiled._refusal_memo
    found = memo.get(key)
    if found is None:
        matched = ", ".join(sorted(connectors)) if connectors else "no connector"
        found = _remember(memo, key, RcptDecision(reject("connector-attribution", f"restricted by {', '.join(restricting)}; "
                                                         f"session matched {matched}"), "", (), RcptRoute.NONE))
    return found


def primary_domain(compiled: CompiledPolicy) -> str:
    domains = compiled.policy.accepted_domains
    return normalize_domain(domains[0].name) if domains else ""


def decide_rcpt(compiled: CompiledPolicy, facts: SessionFacts, sender: Address, rcpt: Address,
                prior_key: tuple | None = None, srs_target: str | None = None) -> RcptDecision:
    """Relay check → connector restriction → recipient existence → one outcome per transaction.

    `srs_target`: the original sender a valid SRS address of ours stands for (a bounce or reply to
    mail we forwarded); the role checks the address's signature and passes the result in."""
    connectors = facts.connectors
    on_prem = bool(connectors) and is_on_premises(compiled, facts)
    if rcpt.literal:
        return RcptDecision(reject("address-literal", str(rcpt)), "", (), RcptRoute.NONE)
    domain = rcpt.domain or primary_domain(compiled)  # <postmaster> (RFC 5321 §4.5.1)
    accepted = lookup_accepted_domain(compiled, domain) if domain else None
    if accepted is None:
        if on_prem:
            # An on-premises connector relays only for the organisation's own sender domains (EXO:
            # "550 5.7.64 TenantAttribution; Relay Access Denied"): a printer's address must not
            # send as anyone to the Internet. <> (a DSN from the on-premises server) has no domain.
            if sender.domain and (sender.literal or lookup_accepted_domain(compiled, sender.domain) is None):
                return RcptDecision(reject("tenant-relay-denied", f"sender domain {sender.domain!r} is not an "
                                           "accepted domain"), "", (), RcptRoute.NONE)
            conn = _first_name(applicable_connectors(compiled, facts, sender.domain))
            return _with_key(accept("recipient-ok", "relay for on-premises sender"), conn, ("relay", conn, False), RcptRoute.RELAY, prior_key)
        return RcptDecision(reject("relay-denied", f"{domain!r} is not an accepted domain"), "", (), RcptRoute.NONE)

    restricting = _NONE if on_prem else restricting_names(compiled, sender.domain, domain)
    if restricting and restricting.isdisjoint(connectors):
        return _attribution_refusal(compiled, restricting, connectors)

    applicable = [c for c in applicable_connectors(compiled, facts, sender.domain) if _covers(compiled, c, domain)]
    chosen = next((c for c in applicable if c.name.lower() in restricting), applicable[0] if applicable else None)
    conn_name = chosen.name if chosen else ""

    local = rcpt.local if rcpt.domain else "postmaster"
    address = f"{local}@{domain}".lower()
    # Enhanced filtering limited to ef_users applies per recipient: part of the outcome.
    ef = bool(chosen and chosen.enhanced_filtering_enabled and
              (not chosen.ef_users or address in {u.lower() for u in chosen.ef_users}))
    mailbox = compiled.directory.get(address)
    if mailbox is None and srs_target:
        decision = _with_key(accept("recipient-ok", f"SRS reversed to {srs_target}"), conn_name,
                             ("relay", conn_name, ef), RcptRoute.RELAY, prior_key)
        return decision._replace(target=srs_target) if decision.verdict.action is Action.ACCEPT else decision
    if mailbox is None:
        if accepted.type == "internal_relay":
            return _with_key(accept("recipient-ok", "internal relay"), conn_name, ("relay", conn_name, ef), RcptRoute.RELAY, prior_key)
        return RcptDecision(reject("unknown-recipient", address), conn_name, (), RcptRoute.NONE)
    return _with_key(accept("recipient-ok"), conn_name, ("local", conn_name, ef), RcptRoute.LOCAL, prior_key, mailbox)


def _first_name(connectors: Iterable[InboundConnector]) -> str:
    return next((c.name for c in connectors), "")


def _with_key(verdict: Verdict, connector: str, key: tuple, route: RcptRoute, prior_key: tuple | None,
              mailbox: Mailbox | None = None) -> RcptDecision:
    # mail-flow.md §3.6: one transaction carries one policy outcome; later recipients with a
    # different outcome are deferred so the client sends them in a new transaction.
    if prior_key is not None and key[1:] != prior_key[1:]:
        return RcptDecision(tempfail("different-policy-outcome", f"{key} vs {prior_key}"), connector, key, RcptRoute.NONE)
    return RcptDecision(verdict, connector, key, route, mailbox)
