"""The rules a policy must satisfy before it is saved (mail-flow.md §2, "Validation on save").

Owns: every rule, each with a stable code, and the wording of its message. Pure: takes a Policy,
returns issues; never stores or prints anything. Exchange Online refuses the same combinations,
so the messages name the EXO concept as well where that helps.
"""

from __future__ import annotations


from mxgate.errors import PolicyIssue, PolicyValidationError
from mxgate.policy.gateway_checks import validate_gateway_checks
from mxgate.policy.domains import pattern_matches, validate_pattern
from mxgate.names import is_valid_domain, normalize_domain, normalize_ip, parse_hostport
from mxgate.policy.ipset import parse_network, prefix_too_wide
from mxgate.policy.model import (
    ACCEPTED_DOMAIN_TYPES,
    AUTH_FAILURE_ACTIONS,
    CONNECTOR_TYPES,
    TLS_SETTINGS,
    InboundConnector,
    OutboundConnector,
    Policy,
)
from mxgate.policy.pins import canonical_pin
from mxgate.smtp.address import is_valid_address

MAX_NAME = 64
MAX_COMMENT = 1024

IC = "inbound connector"
OC = "outbound connector"


def validate_policy(policy: Policy) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []
    issues += _organization(policy)
    issues += _accepted_domains(policy)
    issues += _mailboxes(policy)
    seen: set[str] = set()
    for c in policy.inbound_connectors:
        issues += _inbound(c, policy, seen)
    seen = set()
    for o in policy.outbound_connectors:
        issues += _outbound(o, seen)
    issues += validate_gateway_checks(policy.gateway)
    return issues


def check_policy(policy: Policy) -> None:
    issues = validate_policy(policy)
    if issues:
        raise PolicyValidationError(issues)


def policy_warnings(policy: Policy) -> list[str]:
    """Allowed but risky settings, shown to the admin on save."""
    out = []
    for c in policy.inbound_connectors:
        for text in c.sender_ip_addresses:
            try:
                net = parse_network(text)
            except ValueError:
                continue
            if prefix_too_wide(net):
                out.append(f"{IC} {c.name!r}: sender_ip_addresses: {text} is wider than /16 (IPv4) or /48 (IPv6)")
    return out


def _is_host_port(text: str) -> bool:
    """A smart host: a domain name or an IP address ("[v6]" with a port), with an optional port."""
    try:
        host, _ = parse_hostport(text, 25)
    except ValueError:
        return False
    if text.strip().startswith("["):
        try:
            normalize_ip(host)
            return True
        except ValueError:
            return False
    return is_valid_domain(host)


def _issue(kind: str, name: str, field: str, rule: str, message: str) -> PolicyIssue:
    return PolicyIssue(kind, name, field, rule, message)


def _organization(p: Policy) -> list[PolicyIssue]:
    o, out = p.organization, []
    if not o.name.strip():
        out.append(_issue("organization", o.name, "name", "required", "must not be empty"))
    if not is_valid_domain(o.authserv_id):
        out.append(_issue("organization", o.name, "authserv_id", "invalid-domain", f"{o.authserv_id!r} is not a host name"))
    for s in o.arc_trusted_sealers:
        if not is_valid_domain(s):
            out.append(_issue("organization", o.name, "arc_trusted_sealers", "invalid-domain", f"{s!r} is not a domain"))
    for f in ("dmarc_reject_action", "dmarc_quarantine_action"):
        if getattr(o, f) not in AUTH_FAILURE_ACTIONS:
            out.append(_issue("organization", o.name, f, "invalid-value", f"must be one of {', '.join(AUTH_FAILURE_ACTIONS)}"))
    return out


def _accepted_domains(p: Policy) -> list[PolicyIssue]:
    out, seen = [], set()
    for d in p.accepted_domains:
        name = normalize_domain(d.name)
        if not is_valid_domain(name):
            out.append(_issue("accepted domain", d.name, "name", "invalid-domain", "not a valid domain name"))
        if name in seen:
            out.append(_issue("accepted domain", d.name, "name", "duplicate-name", "listed twice"))
        seen.add(name)
        if d.type not in ACCEPTED_DOMAIN_TYPES:
            out.append(_issue("accepted domain", d.name, "type", "invalid-value", f"must be one of {', '.join(ACCEPTED_DOMAIN_TYPES)}"))
    return out


def accepted_domain_for(p: Policy, domain: str):
    """The accepted domain covering `domain` (exact first, then match_subdomains), or None."""
    domain = normalize_domain(domain)
    best = None
    for d in p.accepted_domains:
        name = normalize_domain(d.name)
        if domain == name:
            return d
        if d.match_subdomains and domain.endswith("." + name) and (best is None or len(name) > len(best.name)):
            best = d
    return best


def _mailboxes(p: Policy) -> list[PolicyIssue]:
    out, seen = [], set()
    for m in p.mailboxes:
        for field, values in (("address", (m.address,)), ("aliases", m.aliases)):
            for a in values:
                if not is_valid_address(a):
                    out.append(_issue("mailbox", m.address, field, "invalid-address", f"{a!r} is not an address"))
                    continue
                if accepted_domain_for(p, a.rsplit("@", 1)[1]) is None:
                    out.append(_issue("mailbox", m.address, field, "domain-not-accepted", f"{a!r} is not in an accepted domain"))
                if a.lower() in seen:
                    out.append(_issue("mailbox", m.address, field, "duplicate-address", f"{a!r} is used twice"))
                seen.add(a.lower())
        for field, values in (("forward_to", m.forward_to), ("members", m.members), ("send_as", m.send_as)):
            for a in values:
                if not is_valid_address(a):
                    out.append(_issue("mailbox", m.address, field, "invalid-address", f"{a!r} is not an address"))
    return out


def _check_name(name: str, kind: str, seen: set[str], bad) -> None:
    """Connector names: required, at most MAX_NAME characters of one printable line, unique
    (case-insensitive) per kind."""
    if not name.strip():
        bad("name", "required", "must not be empty")
    if len(name) > MAX_NAME:
        bad("name", "name-too-long", f"at most {MAX_NAME} characters")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name):  # C0, DEL, C1: no PowerShell string carries them
        bad("name", "name-control-character", "no control characters (tab, newline, escape ...)")
    if name.lower() in seen:
        bad("name", "duplicate-name", f"another {kind} has this name")
    seen.add(name.lower())


def _inbound(c: InboundConnector, p: Policy, seen: set[str]) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []

    def bad(field: str, rule: str, msg: str) -> None:
        out.append(_issue(IC, c.name, field, rule, msg))

    _check_name(c.name, IC, seen, bad)
    if len(c.comment) > MAX_COMMENT:
        bad("comment", "comment-too-long", f"at most {MAX_COMMENT} characters")
    if c.type not in CONNECTOR_TYPES:
        bad("type", "invalid-value", f"must be one of {', '.join(CONNECTOR_TYPES)}")
    for pattern in c.sender_domains:
        err = validate_pattern(pattern)
        if err:
            bad("sender_domains", "invalid-domain-pattern", err)
    if c.type == "partner" and not c.sender_domains:
        bad("sender_domains", "sender-domains-required", "a partner connector needs sender_domains ('*' for all)")
    for field in ("sender_ip_addresses", "ef_skip_ips"):
        for text in getattr(c, field):
            try:
                parse_network(text)
            except ValueError as exc:
                bad(field, "invalid-ip", f"{text!r}: {exc}")
    if c.restrict_domains_to_ip_addresses and not c.sender_ip_addresses:
        bad("restrict_domains_to_ip_addresses", "restrict-ip-needs-addresses",
            "RestrictDomainsToIPAddresses needs at least one entry in sender_ip_addresses")
    if c.restrict_domains_to_ip_addresses and c.restrict_domains_to_certificate:
        bad("restrict_domains_to_certificate", "restrictions-exclusive",
            "a connector restricts by IP addresses or by certificate, not both; use two connectors")
    if c.restrict_domains_to_certificate and not c.tls_sender_certificate_name:
        bad("restrict_domains_to_certificate", "restrict-certificate-needs-name",
            "RestrictDomainsToCertificate needs tls_sender_certificate_name")
    if c.tls_sender_certificate_name and not c.require_tls:
        bad("tls_sender_certificate_name", "certificate-name-needs-tls",
            "a certificate name is only checked over TLS; set require_tls = true")
    if c.tls_sender_certificate_name:
        name = c.tls_sender_certificate_name
        if name.strip() == "*":
            bad("tls_sender_certificate_name", "invalid-certificate-name", "a bare '*' would match any certificate")
        elif validate_pattern(name):
            bad("tls_sender_certificate_name", "invalid-certificate-name", f"{name!r} is not 'host.example' or '*.example'")
    for fp in c.tls_sender_certificate_fingerprints:
        if canonical_pin(fp) is None:
            bad("tls_sender_certificate_fingerprints", "invalid-fingerprint",
                f"{fp!r} is not a SHA-256 SPKI pin (64 hex digits, AB:CD:... pairs, 'sha256:' + hex, or base64)")
    if c.type == "on_premises" and not c.sender_ip_addresses and not c.tls_sender_certificate_name:
        bad("type", "on-premises-needs-ip-or-certificate",
            "an on_premises connector needs sender_ip_addresses or tls_sender_certificate_name")
    if c.type != "partner" and (c.restrict_domains_to_ip_addresses or c.restrict_domains_to_certificate):
        bad("type", "restrictions-partner-only", "restrict_domains_to_* apply to partner connectors only")
    for d in c.associated_accepted_domains:
        if accepted_domain_for(p, d) is None or normalize_domain(d) not in {normalize_domain(a.name) for a in p.accepted_domains}:
            bad("associated_accepted_domains", "associated-domain-not-accepted", f"{d!r} is not an accepted domain")
    if c.ef_skip_last_ip and c.ef_skip_ips:
        bad("ef_skip_ips", "ef-skip-exclusive", "EFSkipIPs is used only when EFSkipLastIP is false")
    for u in c.ef_users:
        if not is_valid_address(u):
            bad("ef_users", "invalid-address", f"{u!r} is not an address")
    return out


def _outbound(o: OutboundConnector, seen: set[str]) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []

    def bad(field: str, rule: str, msg: str) -> None:
        out.append(_issue(OC, o.name, field, rule, msg))

    _check_name(o.name, OC, seen, bad)
    if o.type not in CONNECTOR_TYPES:
        bad("type", "invalid-value", f"must be one of {', '.join(CONNECTOR_TYPES)}")
    if not o.recipient_domains:
        bad("recipient_domains", "recipient-domains-required", "list the recipient domains ('*' for all)")
    for pattern in o.recipient_domains:
        err = validate_pattern(pattern)
        if err:
            bad("recipient_domains", "invalid-domain-pattern", err)
    if bool(o.smart_hosts) == o.use_mx_record:
        bad("smart_hosts", "outbound-needs-one-route", "set either smart_hosts or use_mx_record = true")
    for h in o.smart_hosts:
        if not _is_host_port(h):
            bad("smart_hosts", "invalid-host", f"{h!r} is not host[:port]")
    if o.tls_settings not in TLS_SETTINGS:
        bad("tls_settings", "invalid-value", f"must be one of {', '.join(TLS_SETTINGS)}")
    if o.tls_settings == "domain_validation" and not o.tls_domain:
        bad("tls_domain", "domain-validation-needs-domain", "domain_validation needs tls_domain")
    elif o.tls_domain and (o.tls_domain.strip() == "*" or validate_pattern(o.tls_domain)):
        bad("tls_domain", "invalid-certificate-name", f"{o.tls_domain!r} is not 'host.example' or '*.example'")
    return out


def outbound_for(policy: Policy, domain: str) -> OutboundConnector | None:
    """Exact domain → wildcard domain → `*`, among enabled outbound connectors (mail-flow.md §2)."""
    from mxgate.policy.domains import pattern_specificity

    best, best_rank = None, -1
    for o in policy.outbound_connectors:
        if not o.enabled:
            continue
        for pattern in o.recipient_domains:
            if pattern_matches(pattern, domain) and pattern_specificity(pattern) > best_rank:
                best, best_rank = o, pattern_specificity(pattern)
    return best
