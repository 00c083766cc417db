"""The organisation's mail-flow policy as plain immutable values (mail-flow.md §2).

Owns: the shape of the policy — organisation, accepted domains, mailboxes, inbound and outbound
connectors, the gateway section — their defaults, and conversion to and from plain dicts (the
TOML file and the stored JSON use the same dict form). Must not know: storage, SMTP, validation
rules (see validate.py) or how decisions are made (see attribution.py).

Names follow Exchange Online's parameters in snake_case so an EXO admin recognises each knob.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from mxgate.errors import PolicyFormatError
from mxgate.policy.pins import canonical_pins

ACCEPTED_DOMAIN_TYPES = ("authoritative", "internal_relay")
CONNECTOR_TYPES = ("partner", "on_premises")
TLS_SETTINGS = ("encryption_only", "certificate_validation", "domain_validation")
AUTH_FAILURE_ACTIONS = ("quarantine", "junk", "reject", "deliver")


@dataclass(frozen=True)
class Organization:
    name: str = "Contoso"
    # RFC 8601 §2.5: the authserv-id names this organisation's verifier in Authentication-Results.
    authserv_id: str = "mx.contoso.test"
    arc_trusted_sealers: tuple[str, ...] = ()
    # What the mailbox server does when DMARC fails and the sender's policy asks for it
    # (Exchange Online's defaults: p=reject → quarantine, p=quarantine → Junk folder).
    dmarc_reject_action: str = "quarantine"
    dmarc_quarantine_action: str = "junk"


@dataclass(frozen=True)
class AcceptedDomain:
    name: str
    type: str = "authoritative"
    match_subdomains: bool = False


@dataclass(frozen=True)
class Mailbox:
    address: str
    aliases: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    keep_copy: bool = True
    # A mailbox with members is a distribution list: mail to it is expanded to the members.
    members: tuple[str, ...] = ()
    # Extra addresses this mailbox's authenticated user may send as.
    send_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class InboundConnector:
    name: str
    type: str = "partner"
    enabled: bool = True
    sender_domains: tuple[str, ...] = ()
    sender_ip_addresses: tuple[str, ...] = ()
    restrict_domains_to_ip_addresses: bool = False
    restrict_domains_to_certificate: bool = False
    require_tls: bool = True
    tls_sender_certificate_name: str = ""
    tls_sender_certificate_fingerprints: tuple[str, ...] = ()
    associated_accepted_domains: tuple[str, ...] = ()
    comment: str = ""
    ef_skip_last_ip: bool = False
    ef_skip_ips: tuple[str, ...] = ()
    ef_users: tuple[str, ...] = ()
    ef_test_mode: bool = False

    def __post_init__(self) -> None:
        # One stored form for pins however they were pasted (policy/pins.py), so the CLI, the
        # export and the admin centre show what attribution compares.
        object.__setattr__(self, "tls_sender_certificate_fingerprints",
                           canonical_pins(tuple(self.tls_sender_certificate_fingerprints)))

    @property
    def restricts(self) -> bool:
        return self.type == "partner" and self.enabled and (
            self.restrict_domains_to_ip_addresses or self.restrict_domains_to_certificate
        )

    @property
    def enhanced_filtering_enabled(self) -> bool:
        return self.ef_skip_last_ip or bool(self.ef_skip_ips)


@dataclass(frozen=True)
class OutboundConnector:
    name: str
    type: str = "partner"
    enabled: bool = True
    recipient_domains: tuple[str, ...] = ()
    smart_hosts: tuple[str, ...] = ()
    use_mx_record: bool = False
    tls_settings: str = "certificate_validation"
    tls_domain: str = ""
    comment: str = ""


@dataclass(frozen=True)
class GatewayPolicy:
    """The gateway role's checks; each check's settings are a small table (see filters/)."""

    checks: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def check(self, name: str) -> dict[str, Any]:
        for check_name, items in self.checks:
            if check_name == name:
                return dict(items)
        return {}


@dataclass(frozen=True)
class Policy:
    organization: Organization = field(default_factory=Organization)
    accepted_domains: tuple[AcceptedDomain, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    inbound_connectors: tuple[InboundConnector, ...] = ()
    outbound_connectors: tuple[OutboundConnector, ...] = ()
    gateway: GatewayPolicy = field(default_factory=GatewayPolicy)

    def inbound(self, name: str) -> InboundConnector | None:
        return next((c for c in self.inbound_connectors if c.name.lower() == name.lower()), None)

    def outbound(self, name: str) -> OutboundConnector | None:
        return next((c for c in self.outbound_connectors if c.name.lower() == name.lower()), None)

    def replace(self, **changes: Any) -> "Policy":
        return dataclasses.replace(self, **changes)


# --- dict form (TOML file and stored JSON) -------------------------------------------------

# TOML table names (mail-flow.md / issue 2) for each list of the policy.
SECTIONS = {
    "accepted_domains": ("accepted_domain", AcceptedDomain),
    "mailboxes": ("mailbox", Mailbox),
    "inbound_connectors": ("inbound_connector", InboundConnector),
    "outbound_connectors": ("outbound_connector", OutboundConnector),
}


def _value_to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_value_to_plain(v) for v in value]
    return value


def object_to_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _value_to_plain(getattr(obj, f.name)) for f in fields(obj)}


def object_from_dict(cls: type, data: Any, where: str) -> Any:
    """Build a dataclass from a dict, naming the key and the expected type on any error."""
    if not isinstance(data, dict):
        raise PolicyFormatError(f"{where}: expected a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PolicyFormatError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise PolicyFormatError(f"{where}: missing required key {name!r}")
            continue
        kwargs[name] = _coerce(data[name], f.type, f"{where}.{name}")
    return cls(**kwargs)


_TYPE_NAMES = {"str": str, "bool": bool, "int": int, "tuple[str, ...]": tuple}


def _coerce(value: Any, type_hint: Any, where: str) -> Any:
    hint = type_hint if isinstance(type_hint, str) else getattr(type_hint, "__name__", str(type_hint))
    if hint == "bool":
        if not isinstance(value, bool):
            raise PolicyFormatError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint == "str":
        if not isinstance(value, str):
            raise PolicyFormatError(f"{where}: expected a string, got {value!r}")
        return value
    if hint == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyFormatError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint == "tuple[str, ...]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyFormatError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise PolicyFormatError(f"{where}: unsupported type {hint}")  # pragma: no cover - model bug


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The canonical dict form: fixed key order, every field present, so export is stable."""
    out: dict[str, Any] = {"organization": object_to_dict(policy.organization)}
    for attr, (table, _cls) in SECTIONS.items():
        out[table] = [object_to_dict(item) for item in getattr(policy, attr)]
    out["gateway"] = {name: {k: _value_to_plain(v) for k, v in items} for name, items in policy.gateway.checks}
    return out


def policy_from_dict(data: Any) -> Policy:
    if not isinstance(data, dict):
        raise PolicyFormatError("policy: expected a table at the top level")
    allowed = {"organization", "gateway"} | {table for table, _ in SECTIONS.values()}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PolicyFormatError(f"policy: unknown section {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    kwargs: dict[str, Any] = {
        "organization": object_from_dict(Organization, data.get("organization", {}), "organization"),
    }
    for attr, (table, cls) in SECTIONS.items():
        items = data.get(table, [])
        if not isinstance(items, list):
            raise PolicyFormatError(f"{table}: expected an array of tables ([[{table}]])")
        kwargs[attr] = tuple(
            object_from_dict(cls, item, f"{table}[{i}]" + (f" {item.get('name') or item.get('address')!r}" if isinstance(item, dict) else ""))
            for i, item in enumerate(items)
        )
    gateway = data.get("gateway", {})
    if not isinstance(gateway, dict) or not all(isinstance(v, dict) for v in gateway.values()):
        raise PolicyFormatError("gateway: expected [gateway.<check>] tables")
    kwargs["gateway"] = GatewayPolicy(
        checks=tuple((name, tuple(sorted(_freeze(v).items()))) for name, v in sorted(gateway.items()))
    )
    return Policy(**kwargs)


def _freeze(table: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}


__all__ = [
    "AcceptedDomain",
    "GatewayPolicy",
    "InboundConnector",
    "Mailbox",
    "Organization",
    "OutboundConnector",
    "Policy",
    "object_from_dict",
    "object_to_dict",
    "policy_from_dict",
    "policy_to_dict",
]
