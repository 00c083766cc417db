"""Domain names and the domain patterns connectors use (`*`, `*.contoso.com`, `contoso.com`).

Owns: validating domain patterns and matching a domain against one (normalising the names
themselves is mxgate/names.py). Must not know about connectors or accepted domains.
"""

from __future__ import annotations

from mxgate.names import is_valid_domain, normalize_domain


def validate_pattern(pattern: str) -> str | None:
    """Return an error text for a malformed domain pattern, or None when it is valid.

    Valid: `*` (all), `*.example` (domain and subdomains), `example` (exact). An embedded or
    trailing wildcard (`a.*.b`, `example.*`) is invalid, as in Exchange Online.
    """
    p = normalize_domain(pattern)
    if p == "*":
        return None
    if p.startswith("*."):
        rest = p[2:]
        if "*" in rest:
            return f"'{pattern}': a wildcard may only be the first label"
        return None if is_valid_domain(rest) else f"'{pattern}': not a valid domain after '*.'"
    if "*" in p:
        return f"'{pattern}': a wildcard may only be the whole pattern or the first label ('*.example')"
    return None if is_valid_domain(p) else f"'{pattern}': not a valid domain name"


def pattern_matches(pattern: str, domain: str) -> bool:
    """`*` matches everything (including the null sender's empty domain); `*.x` matches x and its subdomains."""
    p = normalize_domain(pattern)
    d = normalize_domain(domain)
    if p == "*":
        return True
    if p.startswith("*."):
        base = p[2:]
        return d == base or d.endswith("." + base)
    return d == p


def pattern_specificity(pattern: str) -> int:
    """Ordering for "exact domain → wildcard domain → `*`" choices (higher is more specific)."""
    p = normalize_domain(pattern)
    if p == "*":
        return 0
    if p.startswith("*."):
        return 1 + p.count(".")
    return 1000 + p.count(".")
