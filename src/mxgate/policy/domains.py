"""Domain names and the domain patterns connectors use (`*`, `*.contoso.com`, `contoso.com`).

Owns: normalising domain names (case-insensitive, trailing dot stripped, IDNA2008 A-labels via
the `idna` package — not Python's IDNA2003 codec, which maps "ß" to "ss" and accepts symbols
IDNA2008 disallows) and
matching a domain against a pattern. Must not know about connectors or accepted domains.
"""

from __future__ import annotations

import re

import idna

# RFC 1035 §2.3.4: labels of at most 63 octets, names of at most 253 in text form.
MAX_LABEL = 63
MAX_DOMAIN = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_domain(name: str) -> str:
    """Lower-case, strip one trailing dot, convert an IDN to its A-labels (IDNA2008 with UTS #46
    mapping, RFC 5891). A name IDNA2008 refuses is returned as given: is_valid_domain then fails."""
    name = name.strip().rstrip(".") if name.strip().endswith(".") else name.strip()
    if any(ord(c) > 127 for c in name):
        try:
            return idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return name.lower()
    return name.lower()


def _a_label_ok(label: str) -> bool:
    """An "xn--" label must decode to a valid U-label (RFC 5891 §5.4); others need no check."""
    if not label.startswith("xn--"):
        return True
    try:
        idna.decode(label)
        return True
    except (idna.IDNAError, UnicodeError, ValueError):
        return False


def is_valid_domain(name: str) -> bool:
    name = normalize_domain(name)
    if not name or len(name) > MAX_DOMAIN:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) and _a_label_ok(label) for label in labels)


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
