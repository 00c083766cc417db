"""Issue 7, must-show 5: the EXO export against the documented cmdlet parameters and value rules,
and a golden file for the guide's policy (regenerate with MXGATE_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import pytest
import rig

from mxgate.export.exo import exo_script, ps_string
from mxgate.policy.document import load_toml
from mxgate.policy.validate import check_policy

GOLDEN = Path(__file__).parent / "golden" / "guide.ps1"

# Parameters as documented on learn.microsoft.com (exchangepowershell module) for each cmdlet
# the export may call; the script must use no other.
DOCUMENTED = {
    "New-InboundConnector": {
        "Name", "SenderDomains", "AssociatedAcceptedDomains", "CloudServicesMailEnabled", "Comment",
        "ConnectorSource", "ConnectorType", "EFSkipIPs", "EFSkipLastIP", "EFSkipMailGateway", "EFTestMode",
        "EFUsers", "Enabled", "RequireTls", "RestrictDomainsToCertificate", "RestrictDomainsToIPAddresses",
        "ScanAndDropRecipients", "SenderIPAddresses", "TlsSenderCertificateName", "TreatMessagesAsInternal",
        "TrustedOrganizations"},
    "New-OutboundConnector": {
        "Name", "AllAcceptedDomains", "CloudServicesMailEnabled", "Comment", "ConnectorSource", "ConnectorType",
        "Enabled", "IsTransportRuleScoped", "RecipientDomains", "RouteAllMessagesViaOnPremises",
        "SenderRewritingEnabled", "SmartHosts", "TestMode", "TlsDomain", "TlsSettings", "UseMXRecord",
        "ValidationRecipients"},
    "Set-AcceptedDomain": {"Identity", "DomainType", "MatchSubDomains", "Name", "OutboundOnly",
                           "SendingFromDomainDisabled", "AddressBookEnabled"},
    "Set-ArcConfig": {"Identity", "ArcTrustedSealers"},
    "Set-AntiPhishPolicy": {"Identity", "HonorDmarcPolicy", "DmarcRejectAction", "DmarcQuarantineAction"},
    "Get-InboundConnector": {"Identity", "ErrorAction"},
    "Get-OutboundConnector": {"Identity", "ErrorAction"},
}
DOCUMENTED["Set-InboundConnector"] = DOCUMENTED["New-InboundConnector"] - {"Name"} | {"Identity"}
DOCUMENTED["Set-OutboundConnector"] = DOCUMENTED["New-OutboundConnector"] - {"Name"} | {"Identity"}
BOOLEAN = {"Enabled", "RequireTls", "RestrictDomainsToCertificate", "RestrictDomainsToIPAddresses",
           "EFSkipLastIP", "EFTestMode", "UseMXRecord", "MatchSubDomains", "HonorDmarcPolicy"}
ENUMS = {"ConnectorType": {"Partner", "OnPremises"}, "DomainType": {"Authoritative", "InternalRelay"},
         "TlsSettings": {"EncryptionOnly", "CertificateValidation", "DomainValidation"},
         "DmarcRejectAction": {"Reject", "Quarantine"}, "DmarcQuarantineAction": {"Quarantine", "MoveToJmf"}}

RICH_POLICY = rig.GUIDE_POLICY.replace('sender_ip_addresses = ["127.0.0.10"]',
                                       'sender_ip_addresses = ["203.0.113.7", "198.51.100.0/23", "10.0.0.0/8", "2001:db8::/48"]') + """
ef_skip_ips = ["192.0.2.0/24", "2001:db8:1::1"]
ef_users = ["alice@contoso.test"]
comment = "it's the gateway"

[[accepted_domain]]
name = "fabrikam.test"
type = "internal_relay"
match_subdomains = true

[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["*.partner.test"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "*.partner.test"
tls_sender_certificate_fingerprints = ["%s", "%s"]
associated_accepted_domains = ["contoso.test"]

[[inbound_connector]]
name = "IPv6 only partner"
sender_domains = ["v6.test"]
sender_ip_addresses = ["2001:db8:2::/64"]
restrict_domains_to_ip_addresses = true

[[inbound_connector]]
name = "Printers"
type = "on_premises"
sender_ip_addresses = ["192.0.2.30"]
require_tls = false
ef_skip_last_ip = true

[[outbound_connector]]
name = "To the gateway"
recipient_domains = ["*"]
smart_hosts = ["gw.contoso.test:2526", "gw2.contoso.test"]

[[outbound_connector]]
name = "Fabrikam over DANE-less TLS"
recipient_domains = ["fabrikam.test"]
use_mx_record = true
tls_settings = "domain_validation"
tls_domain = "mx.fabrikam.test"
""" % ("a" * 64, "b" * 64)
RICH_POLICY = RICH_POLICY.replace('[organization]\n', '[organization]\narc_trusted_sealers = ["sealer.example", "sealer2.example"]\n', 1)


def parse_script(text: str) -> list[tuple[str, dict[str, str]]]:
    """(cmdlet, {parameter: raw value}) for every command, splatted hashtables expanded."""
    commands, table = [], None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s == "}" or s == "} else {" or s.startswith("$ErrorActionPreference"):
            continue
        if s == "$params = @{":
            table = {}
            continue
        if table is not None and re.match(r"^[A-Za-z]+ = ", s) and not s.startswith(("Set-", "New-")):
            key, value = s.split(" = ", 1)
            table[key] = value
            continue
        m = re.match(r"^(?:if \()?([A-Z][a-z]+-[A-Za-z]+)(.*?)(?:\) \{)?$", s)
        assert m, f"unparsed line {line!r}"
        cmdlet, rest = m.group(1), m.group(2)
        params = dict(re.findall(r"-([A-Za-z]+) ((?:'(?:[^']|'')*'|@\((?:[^)'] |'(?:[^']|'')*'|, )*\)|\S+))", rest))
        if "@params" in rest:
            params.update(table or {})
        commands.append((cmdlet, params))
    return commands


def list_values(raw: str) -> list[str]:
    assert raw.startswith("@(") and raw.endswith(")"), raw
    return [v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", raw)]


def test_guide_policy_matches_golden_file():
    text = exo_script(load_toml(rig.GUIDE_POLICY))
    if os.environ.get("MXGATE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


@pytest.mark.parametrize("policy_text", [rig.GUIDE_POLICY, RICH_POLICY], ids=["guide", "rich"])
def test_only_documented_parameters_and_values(policy_text):
    policy = load_toml(policy_text)
    check_policy(policy)
    commands = parse_script(exo_script(policy))
    assert commands
    for cmdlet, params in commands:
        assert cmdlet in DOCUMENTED, cmdlet
        unknown = set(params) - DOCUMENTED[cmdlet]
        assert not unknown, f"{cmdlet}: undocumented {unknown}"
        for name, raw in params.items():
            if name in BOOLEAN:
                assert raw in ("$true", "$false"), (cmdlet, name, raw)
            if name in ENUMS:
                assert raw.strip("'") in ENUMS[name], (cmdlet, name, raw)
        if cmdlet in ("New-InboundConnector", "Set-InboundConnector"):
            for ip in list_values(params.get("SenderIPAddresses", "@()")) + list_values(params.get("EFSkipIPs", "@()")):
                net = ipaddress.ip_network(ip, strict=True)  # a malformed value raises
                assert net.version == 4 and 24 <= net.prefixlen <= 32, ip
            name = params.get("TlsSenderCertificateName", "'x'").strip("'")
            assert name and name != "*"
            assert not (params["RestrictDomainsToIPAddresses"] == "$true" and params["RestrictDomainsToCertificate"] == "$true")
            if params["RestrictDomainsToIPAddresses"] == "$true":
                assert list_values(params["SenderIPAddresses"])
            if params["RestrictDomainsToCertificate"] == "$true":
                assert "TlsSenderCertificateName" in params and params["RequireTls"] == "$true"
    names = [c for c, _ in commands]
    assert names.count("New-InboundConnector") == len(policy.inbound_connectors)
    assert names.count("Set-InboundConnector") == len(policy.inbound_connectors)
    assert names.count("New-OutboundConnector") == len(policy.outbound_connectors)


def test_rich_policy_translation_and_comments():
    text = exo_script(load_toml(RICH_POLICY))
    commands = parse_script(text)
    new_in = {p["Name"].strip("'"): p for c, p in commands if c == "New-InboundConnector"}
    gw = new_in["Third-party filter service"]
    assert list_values(gw["SenderIPAddresses"]) == ["203.0.113.7", "198.51.100.0/24", "198.51.101.0/24"]
    assert "# mxgate: SenderIPAddresses: IPv6 2001:db8::/48 not exported" in text
    assert "# mxgate: SenderIPAddresses: 10.0.0.0/8 is wider than /24 and too wide to split" in text
    assert "# mxgate: SenderIPAddresses: 198.51.100.0/23 is wider than /24 (EXO's limit); exported as 2 /24s" in text
    assert list_values(gw["EFSkipIPs"]) == ["192.0.2.0/24"] and list_values(gw["EFUsers"]) == ["alice@contoso.test"]
    assert gw["Comment"] == "'it''s the gateway'"
    cert = new_in["Partner by certificate"]
    assert cert["RestrictDomainsToCertificate"] == "$true" and cert["TlsSenderCertificateName"] == "'*.partner.test'"
    assert list_values(cert["AssociatedAcceptedDomains"]) == ["contoso.test"]
    assert "# mxgate: certificate pins (2) cannot be expressed in EXO" in text
    # The IPv6-only restriction cannot be kept in EXO: it is dropped with a warning, never half-kept.
    v6 = new_in["IPv6 only partner"]
    assert v6["RestrictDomainsToIPAddresses"] == "$false" and "SenderIPAddresses" not in v6
    assert "WARNING: RestrictDomainsToIPAddresses needs an IPv4 address" in text
    printers = new_in["Printers"]
    assert printers["ConnectorType"] == "'OnPremises'" and printers["EFSkipLastIP"] == "$true"
    out = {p["Name"].strip("'"): p for c, p in commands if c == "New-OutboundConnector"}
    assert list_values(out["To the gateway"]["SmartHosts"]) == ["gw.contoso.test", "gw2.contoso.test"]
    assert "port 2526 dropped" in text
    fab = out["Fabrikam over DANE-less TLS"]
    assert fab["UseMXRecord"] == "$true" and "SmartHosts" not in fab and fab["TlsDomain"] == "'mx.fabrikam.test'"
    [arc] = [p for c, p in commands if c == "Set-ArcConfig"]
    assert list_values(arc["ArcTrustedSealers"]) == ["sealer.example", "sealer2.example"]
    [relay] = [p for c, p in commands if c == "Set-AcceptedDomain" and p["Identity"] == "'fabrikam.test'"]
    assert relay == {"Identity": "'fabrikam.test'", "DomainType": "InternalRelay", "MatchSubDomains": "$true"}


def test_values_cannot_break_out_of_their_string():
    assert ps_string("a'b") == "'a''b'"
    assert ps_string("x\u2019; Remove-Mailbox") == "'x''; Remove-Mailbox'"
    assert ps_string("line1\nNew-Thing -X y") == "'line1 New-Thing -X y'"
    policy = load_toml(rig.GUIDE_POLICY.replace('require_tls = true', 'require_tls = true\ncomment = "ok\\nRemove-Mailbox -Identity alice"'))
    text = exo_script(policy)
    assert not any(line.startswith("Remove-Mailbox") for line in text.splitlines())
    [(_, params)] = [(c, p) for c, p in parse_script(text) if c == "New-InboundConnector"]
    assert params["Comment"] == "'ok Remove-Mailbox -Identity alice'"
