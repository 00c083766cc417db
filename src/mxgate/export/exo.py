"""The policy as an Exchange Online PowerShell script (issue 7, mail-flow.md §8).

Owns: the mapping from mxgate's policy to EXO cmdlets and parameters (Set-AcceptedDomain,
New-/Set-InboundConnector, New-/Set-OutboundConnector, Set-ArcConfig, Set-AntiPhishPolicy), the
value rules EXO documents (SenderIPAddresses: IPv4 single addresses or CIDR /24–/32; no bare `*`
certificate name; one restriction per connector), PowerShell quoting, and the `# mxgate:`
comments that name every setting EXO cannot express. Pure text generation (`exo_script`).

Must not know: the store, the CLI's options or SMTP. Validation of the policy itself is
policy/validate.py's job; this module only translates a valid policy.
"""

from __future__ import annotations

from pathlib import Path

from mxgate.policy.ipset import parse_network
from mxgate.policy.model import InboundConnector, OutboundConnector, Policy
from mxgate.wording import count

# EXO's documented limits for SenderIPAddresses / EFSkipIPs: IPv4 only, masks /24 to /32.
EXO_MIN_PREFIX = 24
# A wider IPv4 prefix is split into /24s when that stays readable; beyond it the admin must
# list the /24s the partner actually uses (a /16 would be 256 entries).
MAX_SPLIT_PREFIXES = 16
DEFAULT_SMTP_PORT = 25  # EXO always delivers to smart hosts on port 25

CONNECTOR_TYPE = {"partner": "Partner", "on_premises": "OnPremises"}
TLS_SETTINGS = {"encryption_only": "EncryptionOnly", "certificate_validation": "CertificateValidation",
                "domain_validation": "DomainValidation"}
DOMAIN_TYPE = {"authoritative": "Authoritative", "internal_relay": "InternalRelay"}
# Set-AntiPhishPolicy: DmarcRejectAction ∈ {Reject, Quarantine}; DmarcQuarantineAction ∈ {Quarantine, MoveToJmf}.
DMARC_REJECT_ACTION = {"reject": "Reject", "quarantine": "Quarantine"}
DMARC_QUARANTINE_ACTION = {"quarantine": "Quarantine", "junk": "MoveToJmf"}
ANTIPHISH_DEFAULT = "Office365 AntiPhish Default"


def ps_string(value: str) -> str:
    """A PowerShell single-quoted literal: no expansion; `'` doubled. Line breaks become spaces
    so a value can never end the line and start a command of its own."""
    flat = " ".join(str(value).splitlines())
    for q in ("\u2018", "\u2019", "\u201a", "\u201b"):  # PowerShell treats these as quotes too
        flat = flat.replace(q, "'")
    return "'" + flat.replace("'", "''") + "'"


def ps_bool(value: bool) -> str:
    return "$true" if value else "$false"


def ps_list(values: list[str] | tuple[str, ...]) -> str:
    return "@(" + ", ".join(ps_string(v) for v in values) + ")"


def comment(text: str) -> str:
    return "# mxgate: " + " ".join(str(text).splitlines())


def exo_addresses(entries: tuple[str, ...], what: str) -> tuple[list[str], list[str]]:
    """(values EXO accepts, comments for what it cannot take) for an IP list parameter."""
    values, notes = [], []
    for text in entries:
        try:
            net = parse_network(text)
        except ValueError:
            notes.append(comment(f"{what}: {text!r} is not an address; skipped"))
            continue
        if net.version == 6:
            notes.append(comment(f"{what}: IPv6 {net} not exported (EXO accepts IPv4 only here)"))
        elif net.prefixlen >= EXO_MIN_PREFIX:
            values.append(str(net.network_address) if net.prefixlen == 32 else str(net))
        elif 2 ** (EXO_MIN_PREFIX - net.prefixlen) <= MAX_SPLIT_PREFIXES:
            subnets = [str(s) for s in net.subnets(new_prefix=EXO_MIN_PREFIX)]
            values += subnets
            notes.append(comment(f"{what}: {net} is wider than /24 (EXO's limit); exported as {len(subnets)} /24s"))
        else:
            notes.append(comment(f"{what}: {net} is wider than /24 and too wide to split; not exported — "
                                 "list the /24s in use"))
    return values, notes


def _inbound(c: InboundConnector) -> list[str]:
    lines = [f"# --- Inbound connector {ps_string(c.name)} " + "-" * 8]
    ips, notes = exo_addresses(c.sender_ip_addresses, "SenderIPAddresses")
    params: list[tuple[str, str]] = [
        ("ConnectorType", ps_string(CONNECTOR_TYPE[c.type])),
        ("Enabled", ps_bool(c.enabled)),
        ("SenderDomains", ps_list(c.sender_domains or ("*",))),
    ]
    if ips:
        params.append(("SenderIPAddresses", ps_list(ips)))
    restrict_ip = c.restrict_domains_to_ip_addresses
    if restrict_ip and not ips:
        # Keeping the restriction with no address would be refused by EXO; dropping it silently
        # would open the connector. Say so loudly and leave it off.
        notes.append(comment("WARNING: RestrictDomainsToIPAddresses needs an IPv4 address EXO accepts and "
                             "none is left; the restriction is NOT exported — add IPv4 /24–/32 ranges"))
        restrict_ip = False
    # EXO refuses both restrictions on one connector (validation refuses it here too).
    params.append(("RestrictDomainsToIPAddresses", ps_bool(restrict_ip)))
    params.append(("RestrictDomainsToCertificate", ps_bool(c.restrict_domains_to_certificate and not restrict_ip)))
    params.append(("RequireTls", ps_bool(c.require_tls)))
    name = c.tls_sender_certificate_name.strip()
    if name and name != "*":
        params.append(("TlsSenderCertificateName", ps_string(name)))
    if c.tls_sender_certificate_fingerprints:
        notes.append(comment(f"certificate pins ({len(c.tls_sender_certificate_fingerprints)}) cannot be expressed "
                             "in EXO; only the certificate name is checked there"))
    if c.associated_accepted_domains:
        params.append(("AssociatedAcceptedDomains", ps_list(c.associated_accepted_domains)))
    if c.comment:
        params.append(("Comment", ps_string(c.comment)))
    params += _enhanced_filtering(c, notes)
    lines += notes
    lines.append("$params = @{")
    lines += [f"    {k} = {v}" for k, v in params]
    lines.append("}")
    lines += _upsert("InboundConnector", c.name)
    return lines


def _enhanced_filtering(c: InboundConnector, notes: list[str]) -> list[tuple[str, str]]:
    params = [("EFSkipLastIP", ps_bool(c.ef_skip_last_ip))]
    if c.ef_skip_last_ip:
        if c.ef_skip_ips:
            # EFSkipLastIP $true ignores EFSkipIPs in EXO; mxgate does the same (mail-flow.md §4.2).
            notes.append(comment("ef_skip_ips not exported: EFSkipLastIP $true takes precedence"))
    elif c.ef_skip_ips:
        skip, skip_notes = exo_addresses(c.ef_skip_ips, "EFSkipIPs")
        notes += skip_notes
        if skip:
            params.append(("EFSkipIPs", ps_list(skip)))
    if c.ef_users:
        params.append(("EFUsers", ps_list(c.ef_users)))
    if c.ef_test_mode:
        params.append(("EFTestMode", "$true"))
    return params


def _outbound(o: OutboundConnector) -> list[str]:
    lines = [f"# --- Outbound connector {ps_string(o.name)} " + "-" * 8]
    params: list[tuple[str, str]] = [
        ("ConnectorType", ps_string(CONNECTOR_TYPE[o.type])),
        ("Enabled", ps_bool(o.enabled)),
        ("RecipientDomains", ps_list(o.recipient_domains or ("*",))),
        ("UseMXRecord", ps_bool(o.use_mx_record)),
    ]
    if not o.use_mx_record:
        hosts = []
        for h in o.smart_hosts:
            host, port = _split_host_port(h)
            if port not in (None, DEFAULT_SMTP_PORT):
                lines.append(comment(f"smart host {h}: EXO always connects to port 25; port {port} dropped"))
            hosts.append(host)
        params.append(("SmartHosts", ps_list(hosts)))
    params.append(("TlsSettings", ps_string(TLS_SETTINGS[o.tls_settings])))
    if o.tls_settings == "domain_validation" and o.tls_domain:
        params.append(("TlsDomain", ps_string(o.tls_domain)))
    if o.comment:
        params.append(("Comment", ps_string(o.comment)))
    lines.append("$params = @{")
    lines += [f"    {k} = {v}" for k, v in params]
    lines.append("}")
    lines += _upsert("OutboundConnector", o.name)
    return lines


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


def _upsert(noun: str, name: str) -> list[str]:
    """Create the object, or update it when it already exists, so the script can be re-run."""
    ident = ps_string(name)
    return [
        f"if (Get-{noun} -Identity {ident} -ErrorAction SilentlyContinue) {{",
        f"    Set-{noun} -Identity {ident} @params",
        "} else {",
        f"    New-{noun} -Name {ident} @params",
        "}",
        "",
    ]


def _accepted_domains(policy: Policy) -> list[str]:
    lines = ["# --- Accepted domains " + "-" * 8,
             "# Domains are added and verified in the Microsoft 365 admin centre; this sets their type."]
    for d in policy.accepted_domains:
        args = f"-Identity {ps_string(d.name)} -DomainType {DOMAIN_TYPE[d.type]}"
        if d.match_subdomains:
            if d.type == "internal_relay":
                args += " -MatchSubDomains $true"
            else:
                lines.append(comment(f"{d.name}: EXO matches subdomains only for InternalRelay domains; "
                                     "add each subdomain as its own accepted domain"))
        lines.append(f"Set-AcceptedDomain {args}")
    return lines + [""]


def _organization(policy: Policy) -> list[str]:
    org = policy.organization
    lines = ["# --- Organisation " + "-" * 8]
    if org.arc_trusted_sealers:
        lines.append(f"Set-ArcConfig -Identity Default -ArcTrustedSealers {ps_list(org.arc_trusted_sealers)}")
    reject = DMARC_REJECT_ACTION.get(org.dmarc_reject_action)
    quarantine = DMARC_QUARANTINE_ACTION.get(org.dmarc_quarantine_action)
    args = f"-Identity {ps_string(ANTIPHISH_DEFAULT)} -HonorDmarcPolicy $true"
    if reject:
        args += f" -DmarcRejectAction {reject}"
    else:
        lines.append(comment(f"dmarc_reject_action {org.dmarc_reject_action!r} has no EXO equivalent "
                             "(Reject or Quarantine); EXO's default stays"))
    if quarantine:
        args += f" -DmarcQuarantineAction {quarantine}"
    else:
        lines.append(comment(f"dmarc_quarantine_action {org.dmarc_quarantine_action!r} has no EXO equivalent "
                             "(Quarantine or MoveToJmf); EXO's default stays"))
    lines.append(f"Set-AntiPhishPolicy {args}")
    lines.append(comment(f"authserv-id {org.authserv_id!r} is chosen by EXO itself; not exported"))
    return lines + [""]


def exo_script(policy: Policy) -> str:
    """The whole script; deterministic for a given policy (the golden test relies on it)."""
    lines = [
        f"# Exchange Online PowerShell for the organisation {ps_string(policy.organization.name)}, generated by mxgate.",
        "# Run in a session opened with Connect-ExchangeOnline. Re-running it updates what it created.",
        "# Lines starting with '# mxgate:' name settings Exchange Online cannot express.",
        "$ErrorActionPreference = 'Stop'",
        "",
    ]
    lines += _accepted_domains(policy)
    for c in policy.inbound_connectors:
        lines += _inbound(c)
    for o in policy.outbound_connectors:
        lines += _outbound(o)
    lines += _organization(policy)
    if policy.mailboxes:
        lines.append(comment(f"{count(len(policy.mailboxes), 'mailbox')} {'is' if len(policy.mailboxes) == 1 else 'are'} not exported: EXO mailboxes come from "
                             "licensed users (New-Mailbox / the admin centre)"))
    return "\n".join(lines).rstrip("\n") + "\n"


def export_cli(policy: Policy, output: Path | None) -> str | None:
    """`mxgate policy export --format exo`: the caller prints the text or writes it to --output."""
    return exo_script(policy)

