"""Envelope addresses: parsing the path in `MAIL FROM:<...>` / `RCPT TO:<...>` (RFC 5321 §4.1.2).

Owns: what a mailbox string means — local part, domain, null path, source routes, address
literals, quoting — and nothing about whether it is deliverable or allowed (policy decides).

Deliberately strict, because relays have been abused through lenient parsing (adversarial.md §4):
- a source route `<@a,@b:user@d>` is accepted and ignored (RFC 5321 §4.1.2, §C);
- exactly one `@` outside quotes separates local part and domain; `a@b@c` is a syntax error;
- `%` and `!` are ordinary local-part characters here: they never route anywhere;
- a domain is a dotted name (one trailing dot ignored) or an address literal `[1.2.3.4]`,
  `[IPv6:...]`; an address literal never names an accepted domain;
- non-ASCII is allowed only when the client asked for SMTPUTF8 (RFC 6531 §3.3); an IDN is
  kept as its IDNA2008 A-labels (policy/domains.normalize_domain, the `idna` package);
- nothing but the path between the brackets: no spaces (RFC 5321 §4.1.2 has none in Path);
- a quoted local part holds only qtextSMTP / quoted-pairSMTP (RFC 5321 §4.1.2): printable
  ASCII (and UTF-8 with SMTPUTF8, RFC 6531 §3.3), never a control character, escaped or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mxgate.names import is_valid_domain, normalize_domain

# RFC 5321 §4.5.3.1.1 / §4.5.3.1.2 / §4.5.3.1.3
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_DOT_ATOM_CHARS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_SOURCE_ROUTE = re.compile(r"^@[^:,<>]+(,@[^:,<>]+)*:")
_SPACE = re.compile(r"\s")  # str patterns: exactly the characters str.isspace() accepts


class AddressSyntaxError(ValueError):
    """The path is not an RFC 5321 path. `reason` is a stable code for the reply and trace."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Address:
    local: str
    domain: str  # normalised (lower case, no trailing dot); "" for <postmaster> and <>
    literal: bool = False  # domain is an address literal

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain

    def __str__(self) -> str:
        if self.is_null:
            return ""
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def key(self) -> str:
        """Lookup key: local parts compared case-insensitively, as every MTA in practice does."""
        return str(self).lower()


NULL_ADDRESS = Address("", "")


# Parsed paths remembered: a mailbox server sees the same few senders and recipients in every
# transaction, and the parse (IDNA, domain checks) was ~4.5 µs, twice per message (issue 19,
# bench P1). Only successes are kept (a refusal parses anew, same error); emptied when full, so
# a client cycling through addresses costs a miss, never memory.
_PARSED: dict[tuple[str, bool, bool], Address] = {}
_PARSED_KEPT = 4096


def parse_path(text: str, *, allow_null: bool, smtputf8: bool = False) -> Address:
    """Parse the `<...>` path of MAIL or RCPT (without the ESMTP parameters)."""
    key = (text, allow_null, smtputf8)
    address = _PARSED.get(key)
    if address is None:
        address = _parse_path(text, allow_null=allow_null, smtputf8=smtputf8)
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        _PARSED[key] = address
    return address


def _parse_path(text: str, *, allow_null: bool, smtputf8: bool) -> Address:
    if "\r" in text or "\n" in text or "\x00" in text:
        raise AddressSyntaxError("bad-characters", "control characters in address")
    text = text.strip()
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressSyntaxError("missing-brackets", "address must be enclosed in <>")
    inner = text[1:-1]
    if _space_outside_quotes(inner):
        raise AddressSyntaxError("bad-syntax", "space inside the angle brackets")
    if len(inner) > MAX_PATH:
        raise AddressSyntaxError("too-long", "path too long")
    if inner == "":
        if allow_null:
            return NULL_ADDRESS
        raise AddressSyntaxError("null-not-allowed", "the null path is not allowed here")
    inner = _SOURCE_ROUTE.sub("", inner, count=1)
    if not smtputf8 and not inner.isascii():
        raise AddressSyntaxError("non-ascii", "non-ASCII address without SMTPUTF8")
    local, domain = _split(inner)
    if not domain:
        # RFC 5321 §4.5.1: <postmaster> without a domain must be accepted as a recipient.
        if local.lower() == "postmaster" and not allow_null:
            return Address("postmaster", "")
        raise AddressSyntaxError("missing-domain", "address needs a domain")
    _check_local(local)
    if domain.startswith("["):
        return Address(local, _parse_literal(domain), literal=True)
    norm = normalize_domain(domain)
    if not is_valid_domain(norm) or len(norm) > MAX_DOMAIN:
        raise AddressSyntaxError("bad-domain", "malformed domain")
    return Address(local, norm)


def _split(inner: str) -> tuple[str, str]:
    """Split at the one `@` outside a quoted string; more than one is a syntax error."""
    if inner.startswith('"'):
        end = _closing_quote(inner)
        rest = inner[end + 1 :]
        if not rest:
            return inner, ""
        if not rest.startswith("@") or "@" in rest[1:]:
            raise AddressSyntaxError("bad-syntax", "unexpected text after quoted local part")
        return inner[: end + 1], rest[1:]
    if inner.count("@") > 1:
        raise AddressSyntaxError("bad-syntax", "more than one @ in address")
    if "@" not in inner:
        return inner, ""
    local, domain = inner.split("@", 1)
    if not local:
        raise AddressSyntaxError("missing-local-part", "address needs a local part")
    if not domain:
        raise AddressSyntaxError("missing-domain", "address needs a domain")
    return local, domain


def _space_outside_quotes(inner: str) -> bool:
    if '"' not in inner:  # the common case: one C-level scan, no per-character loop
        return _SPACE.search(inner) is not None
    quoted = escaped = False
    for c in inner:
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted and c.isspace():
            return True
    return False


def _closing_quote(s: str) -> int:
    i = 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == '"':
            return i
        i += 1
    raise AddressSyntaxError("bad-syntax", "unterminated quoted string")


def _check_local(local: str) -> None:
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressSyntaxError("local-part-too-long", "local part longer than 64 octets")
    if local.startswith('"'):
        _check_quoted(local)
        return
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressSyntaxError("bad-local-part", "malformed local part")
    ascii_view = local if local.isascii() else "".join(c if ord(c) < 128 else "a" for c in local)
    if not _DOT_ATOM_CHARS.match(ascii_view):
        raise AddressSyntaxError("bad-local-part", "malformed local part")


def _check_quoted(local: str) -> None:
    """RFC 5321 §4.1.2: qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\\" %d32-126."""
    body, i = local[1:-1], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body) or not 32 <= ord(body[i + 1]) <= 126:
                raise AddressSyntaxError("bad-local-part", "invalid quoted-pair in local part")
            i += 2
            continue
        if (ord(c) < 32 or ord(c) == 127 or c == '"') or (128 <= ord(c) < 160):
            raise AddressSyntaxError("bad-local-part", "control character in quoted local part")
        i += 1


def _parse_literal(domain: str) -> str:
    import ipaddress  # local import: literals are rare

    if not domain.endswith("]"):
        raise AddressSyntaxError("bad-domain", "malformed address literal")
    body = domain[1:-1]
    try:
        if body.lower().startswith("ipv6:"):
            return "[IPv6:" + str(ipaddress.IPv6Address(body[5:])) + "]"
        return "[" + str(ipaddress.IPv4Address(body)) + "]"
    except ValueError:
        raise AddressSyntaxError("bad-domain", "malformed address literal") from None


def parse_address(text: str) -> Address:
    """Parse a bare `local@domain` (policy files, CLI); raises AddressSyntaxError."""
    text = text.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    addr = parse_path(text, allow_null=False, smtputf8=True)
    if not addr.domain or addr.literal:
        raise AddressSyntaxError("missing-domain", "an address with a domain name is needed")
    return addr


def is_valid_address(text: str) -> bool:
    try:
        parse_address(text)
        return True
    except AddressSyntaxError:
        return False
