"""An Exchange Online tenant's mail-flow configuration, read from what an admin can export (issue 20).

Owns: reading the JSON that `Get-AcceptedDomain`, `Get-InboundConnector`, `Get-OutboundConnector`
and `Get-MxRecord` (or `Resolve-DnsName -Type MX`) emit when piped to `ConvertTo-Json`, in the
shapes EXO really produces — one object or an array, empty lists as null, enums as names or
numbers, `SenderDomains` as address spaces (`smtp:*;1`), IPv4 ranges written `a-b`, files saved by
Windows PowerShell as UTF-16 or with a BOM — and turning them into mxgate's own policy values
(`policy.model`), with a note for every value that changed form on the way.

Must not know: what a good configuration is (audit.py), the store, or the CLI.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxgate.errors import PolicyFormatError
from mxgate.names import normalize_domain
from mxgate.policy.model import AcceptedDomain, InboundConnector, OutboundConnector

# Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomainType, serialised by number
# when the object was not deserialised first (ConvertTo-Json of a live object).
DOMAIN_TYPES = {"authoritative": "authoritative", "internalrelay": "internal_relay", "externalrelay": "external_relay",
                "0": "authoritative", "1": "external_relay", "2": "internal_relay"}
CONNECTOR_TYPES = {"partner": "partner", "onpremises": "on_premises"}
TLS_SETTINGS = {"encryptiononly": "encryption_only", "certificatevalidation": "certificate_validation",
                "domainvalidation": "domain_validation"}
# Where Exchange Online Protection receives mail; an MX naming one of these bypasses the gateway.
EXO_MX_SUFFIXES = (".mail.protection.outlook.com", ".mail.protection.outlook.de",
                   ".mail.protection.partner.outlook.cn", ".mail.protection.office365.us")
# The tenant's initial domain: its MX always points at EXO and cannot be changed.
INITIAL_DOMAIN_SUFFIX = ".onmicrosoft.com"


@dataclass(frozen=True)
class MxRecord:
    domain: str
    host: str
    preference: int | None = None
    points_to_service: bool | None = None  # Get-MxRecord's own judgement, when present

    @property
    def points_to_exo(self) -> bool:
        if self.points_to_service is not None:
            return self.points_to_service
        return self.host.lower().rstrip(".").endswith(EXO_MX_SUFFIXES)


@dataclass(frozen=True)
class Tenant:
    accepted_domains: tuple[AcceptedDomain, ...] = ()
    inbound_connectors: tuple[InboundConnector, ...] = ()
    outbound_connectors: tuple[OutboundConnector, ...] = ()
    mx_records: tuple[MxRecord, ...] = ()
    # Domain types mxgate has no equivalent for (ExternalRelay), by domain name.
    external_relay: tuple[str, ...] = ()
    default_domain: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)


# --- value shapes ------------------------------------------------------------------------------

def _where(source: str, index: int | None) -> str:
    return source if index is None else f"{source}[{index}]"


def _list(value: Any, where: str) -> list[Any]:
    """EXO writes an empty multi-valued property as null, one value sometimes as a bare string."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, (str, dict)):
        return [value]
    raise PolicyFormatError(f"{where}: expected a list, got {value!r}")


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # a deserialised object (e.g. SmtpDomain) keeps its text form here
        for key in ("Domain", "Address", "DisplayName", "Name"):
            if isinstance(value.get(key), str):
                return value[key]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise PolicyFormatError(f"{where}: expected text, got {value!r}")


def _texts(value: Any, where: str) -> list[str]:
    return [t for t in (_text(v, where).strip() for v in _list(value, where)) if t]


def _bool(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise PolicyFormatError(f"{where}: expected true or false, got {value!r}")


def _enum(value: Any, table: dict[str, str], where: str, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, dict):  # ConvertTo-Json -Depth >2 of a live enum: {"value": 1, "Value": "Partner"}
        value = value.get("Value", value.get("value"))
    key = str(value).replace("_", "").replace(" ", "").lower()
    if key not in table:
        names = sorted({k for k in table if not k.isdigit()})
        raise PolicyFormatError(f"{where}: unknown value {value!r} (known: {', '.join(names)})")
    return table[key]


def address_space(text: str) -> str:
    """`smtp:*;1` / `SMTP:*.contoso.com;1` (type:domain;cost, as SenderDomains shows them) → `*.contoso.com`."""
    t = text.strip()
    if ":" in t and t.split(":", 1)[0].lower() in ("smtp", "x400", "ex"):
        t = t.split(":", 1)[1]
    return t.split(";", 1)[0].strip()


def ip_entries(text: str, where: str) -> list[str]:
    """One SenderIPAddresses / EFSkipIPs value as CIDR text: `a`, `a/n`, or the range `a-b`
    (summarised into the fewest CIDR blocks that cover exactly the range)."""
    t = text.strip()
    try:
        if "-" in t:
            lo, hi = (ipaddress.ip_address(p.strip()) for p in t.split("-", 1))
            if lo.version != hi.version or int(lo) > int(hi):
                raise ValueError("the range's ends differ in family or are reversed")
            return [str(n) for n in ipaddress.summarize_address_range(lo, hi)]
        net = ipaddress.ip_network(t, strict=False)
    except ValueError as exc:
        raise PolicyFormatError(f"{where}: {t!r} is not an IP address, CIDR prefix or range ({exc})") from None
    return [str(net.network_address) if net.num_addresses == 1 else str(net)]


def certificate_name(text: str) -> str:
    """TlsSenderCertificateName as EXO prints a TlsCertificate: `contoso.com`, or `<I>issuer<S>subject`."""
    t = text.strip()
    if "<S>" in t:
        t = t.split("<S>", 1)[1]
        for part in t.split(","):
            if part.strip().upper().startswith("CN="):
                return part.strip()[3:]
    return t


# --- objects -----------------------------------------------------------------------------------

def _name(obj: dict[str, Any], where: str) -> str:
    name = _text(obj.get("Name") or obj.get("Identity"), where + ".Name")
    if not name:
        raise PolicyFormatError(f"{where}: has neither Name nor Identity")
    return name


def _ips(obj: dict[str, Any], key: str, where: str, notes: list[str], label: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in _texts(obj.get(key), f"{where}.{key}"):
        cidrs = ip_entries(raw, f"{where}.{key}")
        if "-" in raw:
            notes.append(f"{label}: {key} range {raw} is {', '.join(cidrs)}")
        out += cidrs
    return tuple(dict.fromkeys(out))


def _accepted_domain(obj: dict[str, Any], where: str) -> tuple[AcceptedDomain, str, bool]:
    name = normalize_domain(_text(obj.get("DomainName") or obj.get("Name"), where + ".DomainName"))
    if not name:
        raise PolicyFormatError(f"{where}: accepted domain without DomainName")
    kind = _enum(obj.get("DomainType"), DOMAIN_TYPES, where + ".DomainType", "authoritative")
    sub = _bool(obj.get("MatchSubDomains"), where + ".MatchSubDomains", False)
    return (AcceptedDomain(name, "internal_relay" if kind == "external_relay" else kind, sub), kind,
            _bool(obj.get("Default"), where + ".Default", False))


def _inbound(obj: dict[str, Any], where: str, notes: list[str]) -> InboundConnector:
    name = _name(obj, where)
    label = f"inbound connector {name!r}"
    domains = [address_space(d) for d in _texts(obj.get("SenderDomains"), where + ".SenderDomains")]
    return InboundConnector(
        name=name,
        type=_enum(obj.get("ConnectorType"), CONNECTOR_TYPES, where + ".ConnectorType", "partner"),
        enabled=_bool(obj.get("Enabled"), where + ".Enabled", True),
        sender_domains=tuple(dict.fromkeys(domains)),
        sender_ip_addresses=_ips(obj, "SenderIPAddresses", where, notes, label),
        restrict_domains_to_ip_addresses=_bool(obj.get("RestrictDomainsToIPAddresses"),
                                               where + ".RestrictDomainsToIPAddresses", False),
        restrict_domains_to_certificate=_bool(obj.get("RestrictDomainsToCertificate"),
                                              where + ".RestrictDomainsToCertificate", False),
        require_tls=_bool(obj.get("RequireTls"), where + ".RequireTls", False),  # EXO's default is $false
        tls_sender_certificate_name=certificate_name(_text(obj.get("TlsSenderCertificateName"),
                                                           where + ".TlsSenderCertificateName")),
        associated_accepted_domains=tuple(normalize_domain(d) for d in
                                          _texts(obj.get("AssociatedAcceptedDomains"), where + ".AssociatedAcceptedDomains")),
        comment=_text(obj.get("Comment"), where + ".Comment"),
        ef_skip_last_ip=_bool(obj.get("EFSkipLastIP"), where + ".EFSkipLastIP", False),
        ef_skip_ips=_ips(obj, "EFSkipIPs", where, notes, label),
        ef_users=tuple(_texts(obj.get("EFUsers"), where + ".EFUsers")),
        ef_test_mode=_bool(obj.get("EFTestMode"), where + ".EFTestMode", False),
    )


def _outbound(obj: dict[str, Any], where: str, notes: list[str]) -> OutboundConnector:
    name = _name(obj, where)
    tls = obj.get("TlsSettings")
    if tls is None:
        # EXO's null is opportunistic TLS; mxgate's weakest setting still insists on encryption.
        notes.append(f"outbound connector {name!r}: TlsSettings is empty (opportunistic TLS in EXO); "
                     "imported as encryption_only")
    return OutboundConnector(
        name=name,
        type=_enum(obj.get("ConnectorType"), CONNECTOR_TYPES, where + ".ConnectorType", "partner"),
        enabled=_bool(obj.get("Enabled"), where + ".Enabled", True),
        recipient_domains=tuple(dict.fromkeys(address_space(d) for d in
                                              _texts(obj.get("RecipientDomains"), where + ".RecipientDomains"))),
        smart_hosts=tuple(_texts(obj.get("SmartHosts"), where + ".SmartHosts")),
        use_mx_record=_bool(obj.get("UseMXRecord"), where + ".UseMXRecord", False),
        tls_settings=_enum(tls, TLS_SETTINGS, where + ".TlsSettings", "encryption_only"),
        tls_domain=_text(obj.get("TlsDomain"), where + ".TlsDomain"),
        comment=_text(obj.get("Comment"), where + ".Comment"),
    )


def _mx(obj: dict[str, Any], where: str) -> MxRecord | None:
    if "Section" in obj or "NameExchange" in obj:  # Resolve-DnsName -Type MX
        if "NameExchange" not in obj or str(obj.get("Type", "MX")).upper() not in ("MX", "15"):
            return None  # the A/AAAA records Resolve-DnsName appends in its additional section
        return MxRecord(normalize_domain(_text(obj.get("Name"), where + ".Name")),
                        _text(obj.get("NameExchange"), where + ".NameExchange").rstrip("."),
                        obj.get("Preference") if isinstance(obj.get("Preference"), int) else None)
    domain = normalize_domain(_text(obj.get("Domain"), where + ".Domain"))
    host = _text(obj.get("HighestPriorityMailhost") or obj.get("MailExchange"), where).rstrip(".")
    if not domain:
        raise PolicyFormatError(f"{where}: MX record without Domain")
    pts = obj.get("PointsToService")
    return MxRecord(domain, host, None, _bool(pts, where + ".PointsToService", False) if pts is not None else None)


def kind_of(obj: dict[str, Any]) -> str | None:
    """Which cmdlet wrote this object, from the properties only that cmdlet emits."""
    keys = set(obj)
    if keys & {"NameExchange", "HighestPriorityMailhost", "PointsToService", "MailExchange"} or {"Section", "Type"} <= keys:
        return "mx"
    if keys & {"DomainType", "DomainName"}:
        return "accepted_domain"
    if keys & {"SenderDomains", "SenderIPAddresses", "RestrictDomainsToIPAddresses",
               "RestrictDomainsToCertificate", "EFSkipLastIP", "TlsSenderCertificateName"}:
        return "inbound"
    if keys & {"RecipientDomains", "SmartHosts", "UseMXRecord", "TlsSettings"}:
        return "outbound"
    return None


def read_json(path: Path) -> Any:
    """PowerShell 5.1's `> file` and Out-File write UTF-16 LE with a BOM; PowerShell 7 UTF-8,
    sometimes with a BOM. Accept all three."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-16" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig")
    except UnicodeDecodeError:
        raise PolicyFormatError(f"{path}: not UTF-8 or UTF-16 text") from None
    if not text.strip():
        return []  # Get-InboundConnector with no connectors writes nothing at all
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def load_tenant(sources: list[tuple[str, Any]]) -> Tenant:
    """Build a Tenant from (source name, parsed JSON) pairs; each JSON is one object or an array."""
    domains: dict[str, AcceptedDomain] = {}
    inbound: dict[str, InboundConnector] = {}
    outbound: dict[str, OutboundConnector] = {}
    mx: list[MxRecord] = []
    external: list[str] = []
    default = ""
    notes: list[str] = []
    for source, data in sources:
        items = data if isinstance(data, list) else [data]
        for i, obj in enumerate(items):
            where = _where(source, i if isinstance(data, list) else None)
            if obj is None:
                continue
            if not isinstance(obj, dict):
                raise PolicyFormatError(f"{where}: expected an object, got {obj!r}")
            kind = kind_of(obj)
            if kind == "accepted_domain":
                d, raw_kind, is_default = _accepted_domain(obj, where)
                domains[d.name] = d
                if raw_kind == "external_relay":
                    external.append(d.name)
                    notes.append(f"accepted domain {d.name}: ExternalRelay has no mxgate equivalent; imported as internal_relay")
                if is_default:
                    default = d.name
            elif kind == "inbound":
                c = _inbound(obj, where, notes)
                inbound[c.name.lower()] = c
            elif kind == "outbound":
                o = _outbound(obj, where, notes)
                outbound[o.name.lower()] = o
            elif kind == "mx":
                r = _mx(obj, where)
                if r is not None:
                    mx.append(r)
            else:
                raise PolicyFormatError(
                    f"{where}: not output of Get-AcceptedDomain, Get-InboundConnector, Get-OutboundConnector "
                    f"or Get-MxRecord (properties: {', '.join(sorted(obj)[:8]) or 'none'})")
    return Tenant(tuple(domains.values()), tuple(inbound.values()), tuple(outbound.values()), tuple(mx),
                  tuple(external), default, tuple(dict.fromkeys(notes)))


def read_tenant(paths: list[Path]) -> Tenant:
    if not paths:
        raise PolicyFormatError("no files given: export them with e.g. Get-InboundConnector | ConvertTo-Json > inbound.json")
    sources = []
    for p in paths:
        try:
            sources.append((str(p), read_json(p)))
        except OSError as exc:
            raise PolicyFormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return load_tenant(sources)
