"""The policy as a TOML document, and the difference between two policies.

Owns: reading and writing `policy.toml` (sections `[organization]`, `[[accepted_domain]]`,
`[[mailbox]]`, `[[inbound_connector]]`, `[[outbound_connector]]`, `[gateway.<check>]`) in one
canonical form, so export → apply → export is byte-identical; and a readable diff.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from typing import Any

from mxgate.errors import PolicyFormatError
from mxgate.policy.model import Policy, policy_from_dict, policy_to_dict

HEADER = "# mxgate organisation policy. Apply with: mxgate policy apply FILE\n"


def load_toml(text: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFormatError(f"policy file is not valid TOML: {exc}") from None
    return policy_from_dict(data)


def read_policy_file(path) -> Policy:
    """A policy file as `mxgate policy apply` and `verify --policy` read it: UTF-8 TOML. A file in
    another encoding is a format error naming the file, not a UnicodeDecodeError."""
    from pathlib import Path

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return load_toml(text)


def dump_toml(policy: Policy) -> str:
    """Canonical TOML: sections in a fixed order, every key present, one object per [[table]].

    Written by hand rather than with a generic writer so the layout is stable and readable
    (a generic writer may inline short arrays of tables).
    """
    data = policy_to_dict(policy)
    lines = [HEADER.rstrip("\n")]
    lines += ["", "[organization]"] + [f"{k} = {_toml_value(v)}" for k, v in data["organization"].items()]
    for table in ("accepted_domain", "mailbox", "inbound_connector", "outbound_connector"):
        for obj in data[table]:
            lines += ["", f"[[{table}]]"] + [f"{k} = {_toml_value(v)}" for k, v in obj.items()]
    for check, settings in data["gateway"].items():
        lines += ["", f"[gateway.{_toml_key(check)}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def diff_policies(old: Policy, new: Policy, old_label: str = "current", new_label: str = "new") -> str:
    a = dump_toml(old).splitlines(keepends=True)
    b = dump_toml(new).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_label, tofile=new_label))


def summarize_change(old: Policy, new: Policy) -> str:
    """One line naming what changed, for policy history ("inbound connector 'X' added")."""
    parts: list[str] = []
    for attr, kind, key in (
        ("accepted_domains", "accepted domain", "name"),
        ("mailboxes", "mailbox", "address"),
        ("inbound_connectors", "inbound connector", "name"),
        ("outbound_connectors", "outbound connector", "name"),
    ):
        before = {getattr(o, key).lower(): o for o in getattr(old, attr)}
        after = {getattr(o, key).lower(): o for o in getattr(new, attr)}
        for name in after.keys() - before.keys():
            parts.append(f"{kind} {getattr(after[name], key)!r} added")
        for name in before.keys() - after.keys():
            parts.append(f"{kind} {getattr(before[name], key)!r} removed")
        for name in before.keys() & after.keys():
            if before[name] != after[name]:
                parts.append(f"{kind} {getattr(after[name], key)!r} changed")
    if old.organization != new.organization:
        parts.append("organization changed")
    if old.gateway != new.gateway:
        parts.append("gateway checks changed")
    return "; ".join(parts) or "no change"
