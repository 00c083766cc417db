"""What the admin centre's newer pages and API resources do, shared by both (one code path):
whole-policy documents (validate, diff, apply), the gateway's check tables, submission
credentials and DKIM key rotation.

Owns: turning a form's or a body's values into the calls below and a policy version; the rules
themselves stay where they are (policy/validate.py, filters/settings.py, auth/credentials.py,
auth/dkim_sign.py), so the web, the API and the CLI refuse the same things with the same words.
Must not know HTTP or templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mxgate.admin.state import AdminState, SaveResult
from mxgate.errors import PolicyFormatError
from mxgate.policy.gateway_checks import DEFAULTS as CHECK_DEFAULTS
from mxgate.policy.model import GatewayPolicy, Policy, policy_from_dict


# --- whole documents -------------------------------------------------------------------------

def parse_document(body: Any) -> Policy:
    """A policy from the API: {"toml": "..."} or the JSON dict form (`mxgate policy export --format json`)."""
    from mxgate.policy.document import load_toml

    if isinstance(body, dict) and set(body) <= {"toml", "base_version"} and "toml" in body:
        if not isinstance(body["toml"], str):
            raise PolicyFormatError("toml: expected the policy document as a string")
        return load_toml(body["toml"])
    if isinstance(body, dict):
        data = body.get("policy", body) if "policy" in body else body
        data = {k: v for k, v in data.items() if k != "base_version"}
        return policy_from_dict(data)
    raise PolicyFormatError(f"request body: expected a JSON object, got {type(body).__name__}")


@dataclass(frozen=True)
class DocumentCheck:
    valid: bool
    issues: list[dict[str, Any]]
    warnings: list[str]
    diff: str
    base_version: int


def check_document(st: AdminState, policy: Policy) -> DocumentCheck:
    """Validate without storing, and the diff against the version in force."""
    from mxgate.policy.document import diff_policies
    from mxgate.policy.validate import policy_warnings, validate_policy

    cur = st.policy_store.current()
    issues = validate_policy(policy)
    diff = diff_policies(cur.policy, policy, f"version {cur.version}", "document")
    return DocumentCheck(not issues, [vars(i) for i in issues], policy_warnings(policy) if not issues else [], diff,
                         cur.version)


def apply_document(st: AdminState, policy: Policy, actor: str, base_version: int | None) -> SaveResult:
    """Store a whole document as the next version (refused if `base_version` is stale)."""
    from mxgate.policy.document import summarize_change
    from mxgate.policy.validate import policy_warnings

    cur = st.policy_store.current()
    if cur.version and cur.policy == policy:
        return SaveResult(cur.version, "no change", policy_warnings(policy), None)
    saved = st.policy_store.save(policy, actor=actor, summary=summarize_change(cur.policy, policy) + " (whole document)",
                                 base_version=cur.version if base_version is None else base_version)
    return SaveResult(saved.version, saved.summary, policy_warnings(policy), None)


# --- gateway checks ---------------------------------------------------------------------------

def checks_view(policy: Policy) -> list[dict[str, Any]]:
    """Each check: its effective settings, and which keys the policy sets (the rest are defaults)."""
    out = []
    for name, defaults in CHECK_DEFAULTS.items():
        table = policy.gateway.check(name)
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **table}.items()}
        out.append({"name": name, "values": values, "set": sorted(table), "action": values["action"]})
    return out


def parse_check_form(name: str, form: dict[str, str]) -> dict[str, Any]:
    """Form text → typed values, by each key's default type; blank means "use the default"."""
    if name not in CHECK_DEFAULTS:
        raise PolicyFormatError(f"unknown check {name!r} (known: {', '.join(CHECK_DEFAULTS)})")
    out: dict[str, Any] = {}
    for key, default in CHECK_DEFAULTS[name].items():
        raw = form.get(key)
        if raw is None or str(raw).strip() == "":
            continue
        raw = str(raw).strip()
        try:
            if isinstance(default, bool):
                value: Any = raw.lower() in ("true", "yes", "on", "1")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif isinstance(default, tuple):
                value = [v.strip() for v in raw.replace(",", "\n").splitlines() if v.strip()]
            else:
                value = raw
        except ValueError:
            raise PolicyFormatError(f"gateway check {name}.{key}: {raw!r} is not a {type(default).__name__}") from None
        if value != (list(default) if isinstance(default, tuple) else default):
            out[key] = value
    return out


def set_check(st: AdminState, name: str, values: dict[str, Any], actor: str, *, replace: bool = True) -> SaveResult:
    """Set one check's table (replace, or merge into what the policy has); validated on save."""
    from mxgate.policy.document import summarize_change
    from mxgate.policy.validate import policy_warnings

    if name not in CHECK_DEFAULTS:
        raise PolicyFormatError(f"unknown check {name!r} (known: {', '.join(CHECK_DEFAULTS)})")
    if not isinstance(values, dict):
        raise PolicyFormatError(f"gateway check {name}: expected an object of settings")
    cur = st.policy_store.current()
    table = ({} if replace else dict(cur.policy.gateway.check(name))) | values
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))
    checks = [(n, items) for n, items in cur.policy.gateway.checks if n != name]
    if frozen:
        checks.append((name, frozen))
    new = cur.policy.replace(gateway=GatewayPolicy(checks=tuple(sorted(checks))))
    if new == cur.policy:
        return SaveResult(cur.version, "no change", policy_warnings(new), checks_view(new)[_index(name)])
    saved = st.policy_store.save(new, actor=actor, summary=summarize_change(cur.policy, new), base_version=cur.version)
    return SaveResult(saved.version, saved.summary, policy_warnings(new), checks_view(new)[_index(name)])


def _index(name: str) -> int:
    return list(CHECK_DEFAULTS).index(name)


# --- credentials ------------------------------------------------------------------------------

def credentials(st: AdminState) -> list[dict[str, Any]]:
    from mxgate.auth.credentials import list_credentials

    return list_credentials(st.engine)


def new_app_credential(st: AdminState, name: str, address: str, description: str = "") -> str:
    from mxgate.auth.credentials import new_app_credential as make

    return make(st.engine, st.policy_store.current().policy, name, address, description)


def set_mailbox_password(st: AdminState, address: str, password: str) -> None:
    from mxgate.auth.credentials import set_mailbox_password as set_pw

    set_pw(st.engine, st.policy_store.current().policy, address, password)


def remove_credential(st: AdminState, username: str) -> None:
    from mxgate.auth.credentials import remove_credential as rm

    rm(st.engine, username)


# --- DKIM keys --------------------------------------------------------------------------------

def _dkim_default(st: AdminState) -> str:
    from mxgate.auth.dkim_sign import DEFAULT_SELECTOR

    return DEFAULT_SELECTOR


def _keys(st: AdminState):
    """The cluster's keys (store/keys.py): a rotation here is what every node signs with."""
    keyring = getattr(st.node, "keyring", None) if st.node is not None else None
    if keyring is not None:
        return keyring
    from mxgate.store.keys import KeyRing

    return KeyRing(st.engine, st.home.keys)


def dkim_keys(st: AdminState) -> list[dict[str, Any]]:
    from mxgate.auth.dkim_sign import list_keys

    return [vars(k) | {"published": published_txt(st, k.dns_name) is not None} for k in
            list_keys(_keys(st), _dkim_default(st))]


def published_txt(st: AdminState, name: str) -> str | None:
    """The TXT value DNS answers for `name` now (the node's DNS servers, no cache: a record
    just published must be seen), or None."""
    import dns.exception

    from mxgate.auth.dns import make_resolver

    servers = st.node.settings.dns.servers if st.node is not None else ()
    try:
        answer = make_resolver(servers, 3.0, 0).resolve(name, "TXT")
    except (dns.exception.DNSException, OSError):
        return None
    for rr in answer:
        return b"".join(rr.strings).decode("ascii", "replace")
    return None


def dkim_publish(st: AdminState, domain: str, selector: str) -> dict[str, Any]:
    from mxgate.auth.dkim_sign import publish_new

    _our_domain(st, domain)
    return vars(publish_new(_keys(st), domain, selector))


def dkim_activate(st: AdminState, domain: str, selector: str) -> None:
    from mxgate.auth.dkim_sign import activate, check_selector

    _our_domain(st, domain)
    activate(_keys(st), domain, selector, published_txt(st, f"{check_selector(selector)}._domainkey.{domain.lower()}"))


def dkim_retire(st: AdminState, domain: str, selector: str) -> None:
    from mxgate.auth.dkim_sign import retire

    _our_domain(st, domain)
    retire(_keys(st), domain, selector, _dkim_default(st))


def _our_domain(st: AdminState, domain: str) -> None:
    from mxgate.policy.validate import accepted_domain_for

    if accepted_domain_for(st.policy_store.current().policy, domain.lower()) is None:
        raise PolicyFormatError(f"{domain!r} is not an accepted domain: DKIM keys are for the organisation's own domains")


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
