"""Domain names and the domain patterns connectors use (`*`, `*.contoso.com`, `contoso.com`).

Owns: normalising domain names (case-insensitive, trailing dot stripped, IDNA to ASCII) and
matching a domain against a pattern. Must not know about connectors or accepted domains.
"""

from __future__ import annotations

import re

# RFC 1035 §2.3.4: labels of at most 63 octets, names of at most 253 in text form.
MAX_LABEL = 63
MAX_DOMAIN = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_domain(name: str) -> str:
    """Lower-case, strip one trailing dot, convert IDN to its A-label form."""
    name = name.strip().rstrip(".") if name.strip().endswith(".") else name.strip()
    try:
        ascii_name = name.encode("idna").decode("ascii") if any(ord(c) > 127 for c in name) else name
    except UnicodeError:
        ascii_name = name
    return ascii_name.lower()


def is_valid_domain(name: str) -> bool:
    name = normalize_domain(name)
    if not name or len(name) > MAX_DOMAIN:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels)


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
