"""Normalising the names everything compares: domain names, IP addresses, `host:port` text.

Owns: one spelling of each — a domain lower-cased, one trailing dot stripped, IDNA A-labels; an
IP address with IPv4-mapped IPv6 mapped to IPv4 and any zone id dropped; `host:port` split (and
joined) with IPv6 literals in brackets. A leaf: imports nothing from mxgate (only `idna`), so the pure core
(policy/, smtp/, auth/received.py) and the edges share it. Must not know what the names mean.
"""

from __future__ import annotations

import ipaddress
import re

import idna

# RFC 1035 §2.3.4: labels of at most 63 octets, names of at most 253 in text form.
MAX_LABEL = 63
MAX_DOMAIN = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalize_domain(name: str) -> str:
    """Lower-case, strip the root's trailing dot, convert an IDN to its A-labels (IDNA2008 with UTS #46
    mapping, RFC 5891 — not Python's IDNA2003 codec, which maps "ß" to "ss" and accepts symbols
    IDNA2008 disallows). A name IDNA2008 refuses is returned as given: is_valid_domain then fails.
    "a.test.." keeps its dots: stripping one would leave "a.test.", valid once normalised again."""
    name = name.strip()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    if not name.isascii():
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


def normalize_ip(value: str | IPAddress) -> IPAddress:
    """Parse an address, mapping IPv4-mapped IPv6 to IPv4 and dropping an IPv6 zone id.

    A peer at ``::ffff:127.0.0.66`` is the IPv4 host 127.0.0.66 (RFC 4291 §2.5.5.2) and must be
    matched as such, never as a distinct IPv6 address; a zone id (RFC 4007 §11) is meaningless
    off-link. Raises ValueError for text that is not an address.
    """
    if type(value) is ipaddress.IPv4Address:  # the common case, first
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    else:
        ip = value
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def parse_hostport(text: str, default_port: int | None = None, *, min_port: int = 1) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port", "[v6]" or a bare IPv6 literal → (host, port).

    Without `default_port` the port is required; `min_port=0` lets a listener ask the kernel for
    a free port. Raises ValueError naming what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""  # a bare IPv6 literal has several colons and no port
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in {text!r}")
        return host, default_port
    if not port_text.isdigit() or not min_port <= int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    """(host, port) → "host:port", an IPv6 literal in brackets ("[::1]:25")."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
