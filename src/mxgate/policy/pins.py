"""Certificate pins as admins paste them, in one canonical form. Pure.

Owns: reading a SHA-256 pin of a certificate's SubjectPublicKeyInfo (RFC 7469 §2.4) in the
spellings tools print, and the one form mxgate stores, compares and shows: 64 lower-case hex
digits, no prefix (what `server/tls.spki_sha256` computes from a peer certificate).

Accepted spellings (surrounding blanks ignored):
  - 64 hex digits, either case:                         `3b9c...e1`
  - colon-separated hex pairs (Postfix, openssl -c):     `3B:9C:...:E1`
  - an algorithm prefix on either of those:              `sha256:3b9c...`, `SHA256:3B:9C:...`
  - base64 of the 32 digest bytes, as printed by
    `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`
    (also URL-safe or unpadded, and `sha256/` or curl's `sha256//` prefix).
Must not know certificates or TLS: the digest is computed elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import re

DIGEST_BYTES = 32  # SHA-256
_HEX = re.compile(r"^[0-9a-f]{64}$")
_HEX_PAIRS = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){31}$")
_B64 = re.compile(r"^[A-Za-z0-9+/_-]{43}=?$")
_ALGORITHM = re.compile(r"^sha-?256\s*", re.IGNORECASE)
_SEPARATORS = ("://", "//", ":", "/", "=")


def canonical_pin(text: str) -> str | None:
    """The pin as 64 lower-case hex digits, or None when `text` is not a SHA-256 pin in any known form."""
    text = str(text).strip()
    algorithm = _ALGORITHM.match(text)
    if algorithm is None:
        return _bare_pin(text)
    # A base64 digest may itself begin with "/": "sha256///e1…" is "sha256/" + "//e1…", not
    # "sha256//" + "/e1…". Each way of reading the separator is tried; only one can give 32 bytes.
    rest = text[algorithm.end():]
    for sep in _SEPARATORS:
        if rest.startswith(sep):
            pin = _bare_pin(rest[len(sep):].strip())
            if pin is not None:
                return pin
    return _bare_pin(text)  # a base64 digest that merely begins with the letters "sha256"


def _bare_pin(s: str) -> str | None:
    low = s.lower()
    if _HEX.match(low):
        return low
    if _HEX_PAIRS.match(low):
        return low.replace(":", "")
    if _B64.match(s):
        try:
            raw = base64.b64decode(s.replace("-", "+").replace("_", "/").rstrip("=") + "=", validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) == DIGEST_BYTES:
            return raw.hex()
    return None


def canonical_pins(pins: tuple[str, ...]) -> tuple[str, ...]:
    """Each pin in canonical form (unreadable ones kept as written, so validation can name them), once."""
    out: list[str] = []
    for p in pins:
        c = canonical_pin(p) or p
        if c not in out:
            out.append(c)
    return tuple(out)
