"""Issue 20: `mxgate exo audit` on JSON in the shapes Exchange Online emits. A tenant configured
exactly as the guide says audits clean; each deliberate mistake yields its finding, with the EXO
parameter and the PowerShell line that fixes it; exit codes fit CI."""

from __future__ import annotations

import copy
import importlib.util
import json
import re

import pytest
import rig
from exokit import GUIDE, REALWORLD, cli, guide_files, load, mxgate, ps_params, tenant_dir

from mxgate.exo.audit import audit
from mxgate.exo.tenant import address_space, ip_entries, read_tenant
from mxgate.export.exo import exo_script
from mxgate.policy.document import load_toml

CONNECTOR = "Third-party filter service"
_spec = importlib.util.spec_from_file_location("exo_export_tests", rig.REPO / "tests" / "export" / "test_exo.py")
_exo_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_exo_tests)
DOCUMENTED = _exo_tests.DOCUMENTED  # Microsoft's documented parameters per cmdlet, kept in one place


def test_guide_fixture_is_what_the_guide_export_creates():
    """The fixture tenant is the one `mxgate policy export --format exo` of the guide's policy builds:
    every parameter the script sets has that value in Get-InboundConnector's output."""
    script = exo_script(load_toml(rig.GUIDE_POLICY))
    params = ps_params(script, "Inbound", CONNECTOR)
    got = load("inbound-connectors.json")
    assert isinstance(got, dict)  # one connector: ConvertTo-Json writes an object, not an array
    for key, value in params.items():
        if key == "SenderDomains":
            assert [address_space(v) for v in got[key]] == value
        else:
            assert got[key] == value, key
    domains = {d["DomainName"]: d["DomainType"] for d in load("accepted-domains.json")}
    for line in script.splitlines():
        if line.startswith("Set-AcceptedDomain"):
            name = line.split("'")[1]
            assert domains[name] == line.rsplit("-DomainType ", 1)[1]


def test_guide_tenant_audits_clean():
    proc = mxgate("exo", "audit", *map(str, guide_files()), "--gateway", rig.GATEWAY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"contoso.test: lock-down HOLDS (connector '{CONNECTOR}')" in proc.stdout
    report = json.loads(mxgate("exo", "audit", *map(str, guide_files()), "--json").stdout)
    assert all(d["holds"] for d in report["domains"]) and len(report["domains"]) == 2
    # The guide does not turn enhanced filtering on: advice only, never a failure.
    assert [(f["severity"], f["code"]) for f in report["findings"]] == [("info", "enhanced-filtering-off")]
    # The threshold is the admin's: --fail-on info makes that advice fail CI too.
    assert mxgate("exo", "audit", *map(str, guide_files()), "--fail-on", "info").returncode == 1


def _inbound(**changes) -> dict:
    c = copy.deepcopy(load("inbound-connectors.json"))
    c.update(changes)
    return c


ON_PREMISES_OUT = {"Name": "To on-premises", "ConnectorType": "OnPremises", "Enabled": True,
                   "RecipientDomains": ["contoso.test"], "SmartHosts": ["192.0.2.40"], "UseMXRecord": False,
                   "TlsSettings": "CertificateValidation", "TlsDomain": None}
ON_PREMISES_IN = {"Name": "From on-premises", "ConnectorType": "OnPremises", "Enabled": False,
                  "SenderDomains": ["smtp:*;1"], "SenderIPAddresses": ["192.0.2.40"], "RequireTls": True,
                  "RestrictDomainsToIPAddresses": False, "RestrictDomainsToCertificate": False}
FABRIKAM = {"DomainName": "fabrikam.test", "DomainType": "Authoritative", "Default": False, "MatchSubDomains": False}

# (id, files to replace, extra CLI args, severity, code, parameter, fix line)
MISTAKES = [
    ("left open", {"inbound_connectors": _inbound(RestrictDomainsToIPAddresses=False)}, [],
     "critical", "not-restricted", "RestrictDomainsToIPAddresses",
     f"Set-InboundConnector -Identity '{CONNECTOR}' -RestrictDomainsToIPAddresses $true"),
    ("disabled", {"inbound_connectors": _inbound(Enabled=False)}, [],
     "critical", "lockdown-disabled", "Enabled", f"Set-InboundConnector -Identity '{CONNECTOR}' -Enabled $true"),
    ("no connector", {"inbound_connectors": None}, ["--gateway", "127.0.0.10"],
     "critical", "no-lockdown", "New-InboundConnector",
     "New-InboundConnector -Name 'Third-party filter service' -ConnectorType Partner -SenderDomains @('*') "
     "-SenderIPAddresses @('127.0.0.10') -RestrictDomainsToIPAddresses $true -RequireTls $true -EFSkipLastIP $true"),
    ("scoped to one domain", {"inbound_connectors": _inbound(AssociatedAcceptedDomains=["contoso.test"]),
                              "accepted_domains": [FABRIKAM]}, [],
     "critical", "no-lockdown", "New-InboundConnector", None),
    ("some senders only", {"inbound_connectors": _inbound(SenderDomains=["smtp:fabrikam.test;1", "smtp:*.northwind.test;1"])}, [],
     "high", "sender-domains-partial", "SenderDomains", f"Set-InboundConnector -Identity '{CONNECTOR}' -SenderDomains @('*')"),
    ("clear text allowed", {"inbound_connectors": _inbound(RequireTls=False)}, [],
     "high", "tls-not-required", "RequireTls", f"Set-InboundConnector -Identity '{CONNECTOR}' -RequireTls $true"),
    ("second gateway node missing", {}, ["--gateway", "127.0.0.10", "--gateway", "127.0.0.11"],
     "high", "gateway-address-missing", "SenderIPAddresses",
     f"Set-InboundConnector -Identity '{CONNECTOR}' -SenderIPAddresses @('127.0.0.10', '127.0.0.11')"),
    ("a range wider than the gateway", {"inbound_connectors": _inbound(SenderIPAddresses=["127.0.0.8-127.0.0.15"])},
     ["--gateway", "127.0.0.10"], "medium", "foreign-address-listed", "SenderIPAddresses",
     f"Set-InboundConnector -Identity '{CONNECTOR}' -SenderIPAddresses @('127.0.0.10')"),
    ("gateway on IPv6", {}, ["--gateway", "127.0.0.10", "--gateway", "2001:db8::10"],
     "medium", "ipv6-gap", "SenderIPAddresses", "# none in EXO: make the gateway deliver to Exchange Online over IPv4 only"),
    ("skip list misses the gateway", {"inbound_connectors": _inbound(EFSkipIPs=["192.0.2.1"])}, [],
     "medium", "enhanced-filtering-inconsistent", "EFSkipIPs",
     f"Set-InboundConnector -Identity '{CONNECTOR}' -EFSkipIPs @('192.0.2.1', '127.0.0.10')"),
    ("enhanced filtering in test mode", {"inbound_connectors": _inbound(EFSkipLastIP=True, EFTestMode=True)}, [],
     "low", "enhanced-filtering-test-mode", "EFTestMode", f"Set-InboundConnector -Identity '{CONNECTOR}' -EFTestMode $false"),
    ("enhanced filtering for some users", {"inbound_connectors": _inbound(EFSkipLastIP=True, EFUsers=["alice@contoso.test"])}, [],
     "low", "enhanced-filtering-some-users", "EFUsers", f"Set-InboundConnector -Identity '{CONNECTOR}' -EFUsers $null"),
    ("both skip settings", {"inbound_connectors": _inbound(EFSkipLastIP=True, EFSkipIPs=["127.0.0.10"])}, [],
     "low", "ef-skip-ips-ignored", "EFSkipIPs", f"Set-InboundConnector -Identity '{CONNECTOR}' -EFSkipIPs $null"),
    ("certificate without a name", {"inbound_connectors": _inbound(RestrictDomainsToIPAddresses=False,
                                                                   RestrictDomainsToCertificate=True)}, [],
     "high", "certificate-name-missing", "TlsSenderCertificateName", None),
    ("MX still at Exchange Online", {"mx": {"Domain": "contoso.test", "HighestPriorityMailhost": "contoso-test.mail.protection.outlook.com",
                                            "PointsToService": True, "RecordExists": True}}, [],
     "high", "mx-points-to-exo", "MX record (DNS)", None),
    ("hybrid without a way back in", {"outbound_connectors": ON_PREMISES_OUT}, [],
     "high", "on-premises-inbound-missing", "New-InboundConnector",
     "New-InboundConnector -Name 'From on-premises' -ConnectorType OnPremises -SenderDomains @('*') "
     "-SenderIPAddresses @('192.0.2.40') -RequireTls $true"),
    ("own servers' connector disabled", {"inbound_connectors": [_inbound(), ON_PREMISES_IN]}, [],
     "high", "on-premises-disabled", "Enabled", "Set-InboundConnector -Identity 'From on-premises' -Enabled $true"),
]


@pytest.mark.parametrize("replace,args,severity,code,parameter,fix", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_yields_its_finding(tmp_path, replace, args, severity, code, parameter, fix):
    d = tenant_dir(tmp_path / "tenant", **replace)
    proc = cli("exo", "audit", *map(str, sorted(d.glob("*.json"))), *args, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    mine = [f for f in findings if f["code"] == code]
    assert mine, findings
    assert (mine[0]["severity"], mine[0]["parameter"]) == (severity, parameter)
    if fix is not None:
        assert mine[0]["fix"] == fix
    assert mine[0]["fix"].startswith(("Set-", "New-", "# ")), mine[0]
    _only_documented_parameters(mine[0]["fix"])
    # The text report carries the same finding and its fix.
    text = cli("exo", "audit", *map(str, sorted(d.glob("*.json"))), *args).stdout
    assert f"{severity.upper()}" in text and code in text and mine[0]["fix"] in text


def _only_documented_parameters(line: str) -> None:
    """A fix line names only parameters Microsoft documents for its cmdlet (the export's own list)."""
    if line.startswith("#"):
        return
    cmdlet = line.split()[0]
    params = set(re.findall(r"(?<=\s)-([A-Za-z]+)\b(?=\s)", line.replace("'", " ' ")))
    assert params and params <= DOCUMENTED[cmdlet], (cmdlet, params - DOCUMENTED[cmdlet])


def test_fix_lines_quote_what_the_tenant_names(tmp_path):
    """Names come from the tenant's files: a quote or a line break cannot end the PowerShell string."""
    hostile = "Gateway'; Remove-Mailbox -Identity * -Confirm:$false; '\nNew"
    d = tenant_dir(tmp_path / "t", inbound_connectors=_inbound(Name=hostile, Identity=hostile, RequireTls=False))
    findings = json.loads(cli("exo", "audit", *map(str, sorted(d.glob("*.json"))), "--json").stdout)["findings"]
    [fix] = [f["fix"] for f in findings if f["code"] == "tls-not-required"]
    assert fix == ("Set-InboundConnector -Identity 'Gateway''; Remove-Mailbox -Identity * -Confirm:$false; '' New' "
                   "-RequireTls $true")
    assert "\n" not in fix


def test_a_domain_outside_the_connectors_scope_does_not_hold(tmp_path):
    d = tenant_dir(tmp_path / "t", inbound_connectors=_inbound(AssociatedAcceptedDomains=["contoso.test"]),
                   accepted_domains=[load("accepted-domains.json")[0], FABRIKAM])
    report = json.loads(cli("exo", "audit", *map(str, sorted(d.glob("*.json"))), "--json").stdout)
    holds = {x["domain"]: x["holds"] for x in report["domains"]}
    assert holds == {"contoso.test": True, "fabrikam.test": False}


def test_the_threshold_decides_the_exit_code(tmp_path):
    d = tenant_dir(tmp_path / "t", inbound_connectors=_inbound(EFSkipLastIP=True, EFTestMode=True))
    files = list(map(str, sorted(d.glob("*.json"))))
    assert cli("exo", "audit", *files).returncode == 1  # default: low and above
    assert cli("exo", "audit", *files, "--fail-on", "medium").returncode == 0
    bad = cli("exo", "audit", *files, "--fail-on", "severe")
    assert bad.returncode == 2 and "--fail-on" in bad.stderr


@pytest.mark.parametrize("content,message", [
    (b"{not json", "not valid JSON"),
    (b'{"Foo": 1}', "not output of Get-AcceptedDomain"),
    (json.dumps({"Name": "x", "SenderDomains": ["smtp:*;1"], "SenderIPAddresses": ["300.1.1.1"]}).encode(),
     "is not an IP address"),
    (json.dumps({"Name": "x", "SenderDomains": "smtp:*;1", "Enabled": "maybe"}).encode(), "expected true or false"),
    (json.dumps({"Name": "x", "ConnectorType": "Internet", "SenderDomains": ["*"]}).encode(), "unknown value 'Internet'"),
    (b"\xff\xfe\x00", "not UTF-8 or UTF-16 text"),
])
def test_bad_input_is_exit_2_with_a_message(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    proc = cli("exo", "audit", str(f))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    missing = cli("exo", "audit", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_real_world_shapes_are_read():
    """UTF-16 and BOM files, enums as numbers, DomainName as an object, ranges a-b, certificate
    names as <I>issuer<S>subject, Resolve-DnsName's extra A records."""
    t = read_tenant(sorted(REALWORLD.glob("*.json")))
    assert [(d.name, d.type) for d in t.accepted_domains] == [
        ("contoso.com", "authoritative"), ("lists.contoso.com", "internal_relay"),
        ("legacy.contoso.com", "internal_relay"), ("contoso.onmicrosoft.com", "authoritative")]
    assert t.external_relay == ("legacy.contoso.com",) and t.default_domain == "contoso.com"
    gw = t.inbound_connectors[0]
    assert gw.sender_ip_addresses == ("203.0.113.10/31", "203.0.113.12/31", "198.51.100.0/24", "192.0.2.25")
    assert gw.sender_domains == ("*",) and gw.associated_accepted_domains == () and gw.ef_users == ()
    assert t.inbound_connectors[1].tls_sender_certificate_name == "mail.contoso.com"
    assert t.inbound_connectors[2].sender_domains == ("*.fabrikam.com", "northwind.com")
    assert [(r.domain, r.host, r.points_to_exo) for r in t.mx_records] == [
        ("contoso.com", "contoso-com.mail.protection.outlook.com", True)]
    report = audit(t, ("203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13", "198.51.100.0/24", "192.0.2.25"))
    assert [f.code for f in report.findings] == ["mx-points-to-exo"]  # hybrid with its way back in: no internal-flow finding


@pytest.mark.parametrize("text,cidrs", [
    ("192.0.2.1", ["192.0.2.1"]), ("192.0.2.0/24", ["192.0.2.0/24"]),
    ("192.0.2.0-192.0.2.255", ["192.0.2.0/24"]), ("192.0.2.5-192.0.2.9", ["192.0.2.5/32", "192.0.2.6/31", "192.0.2.8/31"]),
    ("2001:db8::1", ["2001:db8::1"]), ("2001:db8::/48", ["2001:db8::/48"]),
])
def test_ip_entries_as_exo_writes_them(text, cidrs):
    assert ip_entries(text, "x") == cidrs


def test_guide_fixture_files_are_the_shapes_named():
    assert isinstance(load("accepted-domains.json"), list)
    assert (GUIDE / "outbound-connectors.json").read_bytes() == b""  # no outbound connector: nothing written
