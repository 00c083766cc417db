"""Pure edits of a policy: add, change or remove one named object.

Owns: the rules of identity (connectors by name, domains by name, mailboxes by address, all
case-insensitive) shared by the CLI and the admin API — one code path for both surfaces.
Returns a new Policy; validation happens when the result is saved.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mxgate.errors import NotFoundError, PolicyFormatError
from mxgate.policy.model import SECTIONS, Policy, object_from_dict, object_to_dict

# kind → (Policy attribute, identity field, human name)
KINDS: dict[str, tuple[str, str, str]] = {
    "inbound_connector": ("inbound_connectors", "name", "inbound connector"),
    "outbound_connector": ("outbound_connectors", "name", "outbound connector"),
    "accepted_domain": ("accepted_domains", "name", "accepted domain"),
    "mailbox": ("mailboxes", "address", "mailbox"),
}


def _cls(kind: str):
    attr = KINDS[kind][0]
    return SECTIONS[attr][1]


def find(policy: Policy, kind: str, ident: str):
    attr, key, human = KINDS[kind]
    for obj in getattr(policy, attr):
        if getattr(obj, key).lower() == ident.lower().rstrip("."):
            return obj
    raise NotFoundError(f"{human} {ident!r} does not exist")


def add(policy: Policy, kind: str, values: dict[str, Any]) -> Policy:
    attr, key, human = KINDS[kind]
    obj = object_from_dict(_cls(kind), values, f"{human} {values.get(key)!r}")
    ident = getattr(obj, key).lower()
    if any(getattr(o, key).lower() == ident for o in getattr(policy, attr)):
        raise PolicyFormatError(f"{human} {getattr(obj, key)!r} already exists; use 'set' to change it")
    return dataclasses.replace(policy, **{attr: getattr(policy, attr) + (obj,)})


def change(policy: Policy, kind: str, ident: str, changes: dict[str, Any]) -> Policy:
    attr, key, human = KINDS[kind]
    current = find(policy, kind, ident)
    merged = object_to_dict(current) | changes
    new = object_from_dict(_cls(kind), merged, f"{human} {ident!r}")
    items = tuple(new if o is current else o for o in getattr(policy, attr))
    return dataclasses.replace(policy, **{attr: items})


def remove(policy: Policy, kind: str, ident: str) -> Policy:
    attr, _key, _human = KINDS[kind]
    current = find(policy, kind, ident)
    return dataclasses.replace(policy, **{attr: tuple(o for o in getattr(policy, attr) if o is not current)})


def change_organization(policy: Policy, changes: dict[str, Any]) -> Policy:
    from mxgate.policy.model import Organization

    merged = object_to_dict(policy.organization) | changes
    return dataclasses.replace(policy, organization=object_from_dict(Organization, merged, "organization"))
