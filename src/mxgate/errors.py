"""The exception tree of mxgate. Every error says whose fault it is.

    MxgateError                      base; never shown to an SMTP peer (they get 451 4.3.0)
    ├── ConfigError                  node settings (node.toml, flags) are wrong; names the key
    ├── PolicyError                  the organisation policy is wrong
    │   ├── PolicyFormatError        the file or document cannot be read as a policy
    │   └── PolicyValidationError    the policy reads, but breaks rules (list of PolicyIssue)
    ├── StoreError                   the database is unreachable, busy or inconsistent
    │   └── ConcurrentChangeError    another change landed first; re-read and retry
    └── NotFoundError                a named object (connector, mailbox, trace row) is absent
"""

from __future__ import annotations

from dataclasses import dataclass


class MxgateError(Exception):
    """Base of every error mxgate raises on purpose."""


class ConfigError(MxgateError):
    """Node settings are wrong; the message names the key."""


class PolicyError(MxgateError):
    """The organisation's policy is wrong."""


class PolicyFormatError(PolicyError):
    """The document cannot be read as a policy (TOML syntax, unknown key, wrong type)."""


@dataclass(frozen=True)
class PolicyIssue:
    """One broken rule: which object, which field, which rule (stable code) and why."""

    kind: str  # "inbound connector", "accepted domain", ...
    name: str
    field: str
    rule: str  # stable kebab-case code, e.g. "restrict-ip-needs-addresses"
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.field}: {self.message} [rule {self.rule}]"


class PolicyValidationError(PolicyError):
    def __init__(self, issues: list[PolicyIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class StoreError(MxgateError):
    """The store failed; the change (if any) was not applied."""


class ConcurrentChangeError(StoreError):
    """Another writer created the same policy version first."""


class NotFoundError(MxgateError):
    """A named object does not exist."""
