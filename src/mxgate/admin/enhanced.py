"""Enhanced filtering for connectors as the admin sees it (EXO's page): a mode and a scope.

mode:  off            — no skip listing (ef_skip_last_ip false, ef_skip_ips empty)
       skip_last_ip   — "Automatically detect and skip the last IP address"
       skip_ips       — "Skip these IP addresses that are associated with the connector"
scope: organization   — "Apply to entire organization" (ef_users empty)
       users          — "Apply to these users" (ef_users)
test_mode             — detect and stamp headers, but verdicts still use the connecting IP.

Owns: the translation between that form and the connector's ef_* fields, in both directions.
Must not validate addresses (policy/validate.py does when the change is saved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mxgate.errors import PolicyFormatError
from mxgate.policy.model import InboundConnector

MODES = ("off", "skip_last_ip", "skip_ips")
SCOPES = ("organization", "users")


@dataclass(frozen=True)
class EfSettings:
    mode: str = "off"
    skip_ips: tuple[str, ...] = ()
    scope: str = "organization"
    users: tuple[str, ...] = ()
    test_mode: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EfSettings":
        unknown = sorted(set(data) - {"mode", "skip_ips", "scope", "users", "test_mode"})
        if unknown:
            raise PolicyFormatError(f"enhanced filtering: unknown key {unknown[0]!r} (known: mode, scope, skip_ips, test_mode, users)")
        mode = data.get("mode", "off")
        scope = data.get("scope", "organization")
        if mode not in MODES:
            raise PolicyFormatError(f"enhanced filtering: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if scope not in SCOPES:
            raise PolicyFormatError(f"enhanced filtering: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        skip_ips = _list(data.get("skip_ips", []), "skip_ips")
        users = _list(data.get("users", []), "users")
        if mode == "skip_ips" and not skip_ips:
            raise PolicyFormatError("enhanced filtering: mode skip_ips needs at least one address in skip_ips")
        if scope == "users" and not users:
            raise PolicyFormatError("enhanced filtering: scope users needs at least one address in users")
        test_mode = data.get("test_mode", False)
        if not isinstance(test_mode, bool):
            raise PolicyFormatError(f"enhanced filtering: test_mode must be true or false, got {test_mode!r}")
        return cls(mode, skip_ips if mode == "skip_ips" else (), scope, users if scope == "users" else (), test_mode)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "skip_ips": list(self.skip_ips), "scope": self.scope, "users": list(self.users),
                "test_mode": self.test_mode}


def _list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a form's text area: one per line or comma-separated
        value = [v.strip() for v in value.replace(",", "\n").splitlines()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyFormatError(f"enhanced filtering: {key} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def ef_settings(c: InboundConnector) -> EfSettings:
    mode = "skip_last_ip" if c.ef_skip_last_ip else "skip_ips" if c.ef_skip_ips else "off"
    return EfSettings(mode, tuple(c.ef_skip_ips), "users" if c.ef_users else "organization", tuple(c.ef_users), c.ef_test_mode)


def ef_changes(s: EfSettings) -> dict[str, Any]:
    """The connector fields to set (policy/edit.change values)."""
    return {"ef_skip_last_ip": s.mode == "skip_last_ip", "ef_skip_ips": list(s.skip_ips),
            "ef_users": list(s.users), "ef_test_mode": s.test_mode}
