"""Does the guide's lock-down hold in an Exchange Online tenant? (issue 20)

Owns: the rules, each with a stable code and a severity, and for each finding the EXO parameter
to change and the PowerShell line that fixes it (quoted as export/exo.py quotes). Pure: a
Tenant and the gateway's addresses in, findings and a per-domain summary out.

The guide's lock-down, per accepted domain: an enabled Partner inbound connector covers the
domain and every sender domain (`*`), restricts it to the gateway's IPv4 addresses (or its
certificate), requires TLS, and runs enhanced filtering consistent with the gateway's addresses;
the MX no longer names Exchange Online; the organisation's own servers (hybrid) keep a way in.

Must not know: how files are read (tenant.py), the CLI, or the store.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mxgate.exo.tenant import INITIAL_DOMAIN_SUFFIX, Tenant
from mxgate.export.exo import exo_addresses, ps_list, ps_string
from mxgate.names import normalize_domain
from mxgate.policy.model import InboundConnector

SEVERITIES = ("info", "low", "medium", "high", "critical")
DEFAULT_CONNECTOR_NAME = "Third-party filter service"


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str  # stable kebab-case
    subject: str  # "connector 'X'" or "domain contoso.com"
    message: str
    parameter: str  # the EXO parameter (or DNS record) to change
    fix: str  # one PowerShell line (a comment when EXO has no parameter for it)

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


@dataclass(frozen=True)
class DomainStatus:
    domain: str
    holds: bool
    connectors: tuple[str, ...]  # the enabled restricting connectors covering it
    reason: str


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]
    domains: tuple[DomainStatus, ...]

    def at_or_above(self, severity: str) -> list[Finding]:
        limit = SEVERITIES.index(severity)
        return [f for f in self.findings if f.rank >= limit]


def _set(c: InboundConnector, *params: tuple[str, str]) -> str:
    return f"Set-InboundConnector -Identity {ps_string(c.name)} " + " ".join(f"-{k} {v}" for k, v in params)


def _net(text: str):
    return ipaddress.ip_network(text, strict=False)


def _covered(entries: tuple[str, ...], address: str) -> bool:
    ip = _net(address)
    return any(ip.version == _net(e).version and ip.subnet_of(_net(e)) for e in entries)


def _covers_domain(c: InboundConnector, domain: str) -> bool:
    scope = {normalize_domain(d) for d in c.associated_accepted_domains}
    return not scope or normalize_domain(domain) in scope


def _all_senders(c: InboundConnector) -> bool:
    return any(normalize_domain(p) == "*" for p in c.sender_domains)


def _restricts(c: InboundConnector) -> bool:
    return c.restrict_domains_to_ip_addresses or c.restrict_domains_to_certificate


def _new_connector_line(gateway_v4: list[str]) -> str:
    ips = ps_list(gateway_v4) if gateway_v4 else ps_list(["<gateway IPv4 address>"])
    return (f"New-InboundConnector -Name {ps_string(DEFAULT_CONNECTOR_NAME)} -ConnectorType Partner "
            f"-SenderDomains {ps_list(['*'])} -SenderIPAddresses {ips} -RestrictDomainsToIPAddresses $true "
            "-RequireTls $true -EFSkipLastIP $true")


def audit(tenant: Tenant, gateway: tuple[str, ...] = ()) -> AuditReport:
    """gateway: the addresses the gateway delivers from (any family); empty = judge the connector's
    own list as the gateway's."""
    findings: dict[tuple[str, str], Finding] = {}

    def add(f: Finding) -> None:
        findings.setdefault((f.code, f.subject), f)

    gw = [str(_net(a)) if _net(a).num_addresses > 1 else str(_net(a).network_address) for a in gateway]
    gw_v4 = [a for a in gw if _net(a).version == 4]
    gw_v6 = [a for a in gw if _net(a).version == 6]
    partners = [c for c in tenant.inbound_connectors if c.type == "partner"]
    statuses = []
    for d in tenant.accepted_domains:
        covering = [c for c in partners if _covers_domain(c, d.name)]
        locks = [c for c in covering if c.enabled and _restricts(c)]
        if locks:
            whole = [c for c in locks if _all_senders(c)]
            statuses.append(DomainStatus(d.name, bool(whole), tuple(c.name for c in locks),
                                         "restricted for every sender domain" if whole else
                                         "restricted only for some sender domains"))
            continue
        disabled = [c for c in covering if not c.enabled and _restricts(c)]
        open_ = [c for c in covering if c.enabled and (c.sender_ip_addresses or c.tls_sender_certificate_name)]
        if disabled:
            c = disabled[0]
            add(Finding("critical", "lockdown-disabled", f"connector {c.name!r}",
                        f"the lock-down connector for {d.name} is disabled: anyone who knows the tenant's MX host "
                        "can deliver directly, past the gateway", "Enabled", _set(c, ("Enabled", "$true"))))
            reason = f"connector {c.name!r} is disabled"
        elif open_:
            c = open_[0]
            param = "RestrictDomainsToIPAddresses" if c.sender_ip_addresses else "RestrictDomainsToCertificate"
            add(Finding("critical", "not-restricted", f"connector {c.name!r}",
                        f"connector {c.name!r} recognises the gateway but restricts nothing: mail for {d.name} "
                        "from any other address is still accepted", param, _set(c, (param, "$true"))))
            reason = f"connector {c.name!r} does not restrict"
        else:
            add(Finding("critical", "no-lockdown", f"domain {d.name}",
                        f"no Partner inbound connector restricts {d.name}: mail sent straight to Exchange Online "
                        "skips the gateway", "New-InboundConnector", _new_connector_line(gw_v4)))
            reason = "no restricting Partner connector"
        statuses.append(DomainStatus(d.name, False, (), reason))

    for c in partners:
        if c.enabled and _restricts(c):
            _lockdown_connector(c, gw_v4, gw_v6, add)
    _internal_flows(tenant, add)
    _mx_records(tenant, add)
    ordered = sorted(findings.values(), key=lambda f: (-f.rank, f.subject, f.code))
    return AuditReport(tuple(ordered), tuple(statuses))


def _lockdown_connector(c: InboundConnector, gw_v4: list[str], gw_v6: list[str], add) -> None:
    subject = f"connector {c.name!r}"
    if not _all_senders(c):
        add(Finding("high", "sender-domains-partial", subject,
                    f"restricts only mail from {', '.join(c.sender_domains)}; any other sender domain can still be "
                    "delivered straight to Exchange Online", "SenderDomains", _set(c, ("SenderDomains", ps_list(["*"])))))
    if not c.require_tls:
        add(Finding("high", "tls-not-required", subject,
                    "mail from the gateway may arrive in clear text", "RequireTls", _set(c, ("RequireTls", "$true"))))
    if c.restrict_domains_to_certificate and not c.tls_sender_certificate_name:
        add(Finding("high", "certificate-name-missing", subject,
                    "RestrictDomainsToCertificate is on but no TlsSenderCertificateName says which certificate",
                    "TlsSenderCertificateName", _set(c, ("TlsSenderCertificateName", ps_string("<gateway certificate name>")))))
    if c.restrict_domains_to_ip_addresses:
        listed, _ = exo_addresses(c.sender_ip_addresses, "SenderIPAddresses")
        missing = [a for a in gw_v4 if not _covered(c.sender_ip_addresses, a)]
        if missing:
            add(Finding("high", "gateway-address-missing", subject,
                        f"the gateway also sends from {', '.join(missing)}, which the connector does not list: "
                        "that mail is refused with 550 5.7.51", "SenderIPAddresses",
                        _set(c, ("SenderIPAddresses", ps_list(listed + missing)))))
        # Collapsed, so a range listed as two /31s is judged against the gateway's four addresses together.
        blocks = list(ipaddress.collapse_addresses(_net(g) for g in gw_v4))
        extra = [e for e in c.sender_ip_addresses
                 if blocks and not any(_net(e).version == 4 and _net(e).subnet_of(b) for b in blocks)]
        if extra:
            add(Finding("medium", "foreign-address-listed", subject,
                        f"{', '.join(extra)} admit{'s' if len(extra) == 1 else ''} addresses that are not the "
                        "gateway's: mail from them passes the lock-down", "SenderIPAddresses", _set(c, ("SenderIPAddresses", ps_list(gw_v4)))))
    if gw_v6 and c.restrict_domains_to_ip_addresses:
        add(Finding("medium", "ipv6-gap", subject,
                    f"the gateway has IPv6 addresses ({', '.join(gw_v6)}) and SenderIPAddresses takes IPv4 only: "
                    "mail it delivers over IPv6 is refused (no EXO parameter closes this)", "SenderIPAddresses",
                    "# none in EXO: make the gateway deliver to Exchange Online over IPv4 only"))
    _enhanced_filtering(c, gw_v4, add)


def _enhanced_filtering(c: InboundConnector, gw_v4: list[str], add) -> None:
    subject = f"connector {c.name!r}"
    if not c.ef_skip_last_ip and not c.ef_skip_ips:
        # The guide's lock-down holds without it; SPF and DMARC are then judged on the gateway's IP.
        add(Finding("info", "enhanced-filtering-off", subject,
                    "enhanced filtering is off: SPF and DMARC are judged on the gateway's address, not the sender's",
                    "EFSkipLastIP", _set(c, ("EFSkipLastIP", "$true"))))
        return
    if c.ef_skip_last_ip and c.ef_skip_ips:
        add(Finding("low", "ef-skip-ips-ignored", subject, "EFSkipIPs is ignored while EFSkipLastIP is $true",
                    "EFSkipIPs", _set(c, ("EFSkipIPs", "$null"))))
    if not c.ef_skip_last_ip:
        hops = gw_v4 or [e for e in c.sender_ip_addresses if _net(e).version == 4]
        missing = [a for a in hops if not _covered(c.ef_skip_ips, a)]
        if missing:
            skip, _ = exo_addresses(c.ef_skip_ips, "EFSkipIPs")
            add(Finding("medium", "enhanced-filtering-inconsistent", subject,
                        f"EFSkipIPs does not list the gateway's {', '.join(missing)}: messages from there are judged "
                        "on the gateway's address", "EFSkipIPs", _set(c, ("EFSkipIPs", ps_list(skip + missing)))))
    if c.ef_test_mode:
        add(Finding("low", "enhanced-filtering-test-mode", subject,
                    "EFTestMode: the original sender is detected but verdicts still use the gateway's address",
                    "EFTestMode", _set(c, ("EFTestMode", "$false"))))
    if c.ef_users:
        add(Finding("low", "enhanced-filtering-some-users", subject,
                    f"enhanced filtering applies only to {len(c.ef_users)} listed recipient(s)",
                    "EFUsers", _set(c, ("EFUsers", "$null"))))


def _internal_flows(tenant: Tenant, add) -> None:
    """The readers' worry: a lock-down that refuses the organisation's own mail (forwarded
    invites and notices relayed by on-premises servers keep their external senders)."""
    locked = any(c.type == "partner" and c.enabled and _restricts(c) for c in tenant.inbound_connectors)
    if not locked:
        return
    on_prem_in = [c for c in tenant.inbound_connectors if c.type == "on_premises"]
    for c in on_prem_in:
        if not c.enabled:
            add(Finding("high", "on-premises-disabled", f"connector {c.name!r}",
                        "the organisation's own servers lose their connector: their mail (forwards, invites with "
                        "external senders, notices) is refused by the lock-down with 550 5.7.51",
                        "Enabled", _set(c, ("Enabled", "$true"))))
    hybrid = [o for o in tenant.outbound_connectors if o.type == "on_premises" and o.enabled]
    if hybrid and not any(c.enabled for c in on_prem_in):
        hosts = [h for o in hybrid for h in o.smart_hosts if _is_ipv4(h)]
        ips = ps_list(hosts or ["<on-premises server IPv4 address>"])
        add(Finding("high", "on-premises-inbound-missing", f"connector {hybrid[0].name!r}",
                    "mail is routed to on-premises servers, but no enabled OnPremises inbound connector admits what they "
                    "send back: forwarded invites and notices with external senders are refused with 550 5.7.51",
                    "New-InboundConnector",
                    f"New-InboundConnector -Name {ps_string('From on-premises')} -ConnectorType OnPremises "
                    f"-SenderDomains {ps_list(['*'])} -SenderIPAddresses {ips} -RequireTls $true"))


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")).version == 4
    except ValueError:
        return False


def _mx_records(tenant: Tenant, add) -> None:
    accepted = {normalize_domain(d.name) for d in tenant.accepted_domains}
    for r in tenant.mx_records:
        domain = normalize_domain(r.domain)
        if domain not in accepted or domain.endswith(INITIAL_DOMAIN_SUFFIX):
            continue  # the initial domain's MX is Microsoft's and cannot change
        if r.points_to_exo:
            add(Finding("high", "mx-points-to-exo", f"domain {domain}",
                        f"the MX of {domain} still names Exchange Online ({r.host or 'PointsToService'}): Internet mail "
                        "skips the gateway, and once the lock-down holds it is refused", "MX record (DNS)",
                        f"# DNS: {domain}. MX 10 <gateway host name>   (replace {r.host or 'the EXO record'})"))


def render_text(report: AuditReport) -> str:
    lines = []
    for s in report.domains:
        verdict = "HOLDS" if s.holds else "DOES NOT HOLD"
        via = f" (connector {', '.join(repr(n) for n in s.connectors)})" if s.connectors else ""
        lines.append(f"{s.domain}: lock-down {verdict}{via}: {s.reason}")
    if not report.domains:
        lines.append("no accepted domains in the input: nothing to judge per domain")
    lines.append("")
    for f in report.findings:
        lines += [f"{f.severity.upper():8} {f.code} — {f.subject}", f"         {f.message}",
                  f"         change: {f.parameter}", f"         fix:    {f.fix}"]
    counts = {s: sum(f.severity == s for f in report.findings) for s in reversed(SEVERITIES)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings")
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> dict:
    return {
        "domains": [{"domain": s.domain, "holds": s.holds, "connectors": list(s.connectors), "reason": s.reason}
                    for s in report.domains],
        "findings": [{"severity": f.severity, "code": f.code, "subject": f.subject, "message": f.message,
                      "parameter": f.parameter, "fix": f.fix} for f in report.findings],
    }


__all__ = ["AuditReport", "DomainStatus", "Finding", "SEVERITIES", "audit", "render_json", "render_text"]
