"""Sender Rewriting Scheme for forwarded mail, so SPF holds at the destination. Pure.

Owns: turning an external envelope sender into an address in our own domain when mail is
forwarded to an external recipient (the forwarding server is not in the original sender's SPF
record, RFC 7208 §1.2.3), and reversing it when a bounce comes back. Must not know SMTP or
where the secret is kept (the caller passes it).

Format (the de-facto standard of Shevek's libsrs2, also used by Postfix's postsrsd):
    SRS0=HHHH=TT=orig-domain=orig-local@forward-domain
HHHH: the first 4 base64 characters of HMAC-SHA1(secret, TT + orig-domain + orig-local), all
lower-cased, so a bounce cannot be forged to turn us into an open relay; TT: days since the
epoch modulo 1024 in base32, so old addresses expire. An address already in SRS0 form is
re-forwarded as SRS1 (pointing back at the first forwarder) instead of growing without bound.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TIMESTAMP_PRECISION = 86400  # one day per tick (libsrs2)
TIMESTAMP_SLOTS = 1024  # two base32 characters
MAX_AGE_DAYS = 21  # libsrs2's default: bounces to older addresses are refused
HASH_LENGTH = 4


class SrsError(ValueError):
    """The address is not a valid SRS address for this secret (forged, expired, malformed)."""


@dataclass(frozen=True)
class SrsRewrite:
    address: str  # the rewritten envelope sender
    rewritten: bool


def _hash(secret: bytes, *parts: str) -> str:
    mac = hmac.new(secret, "".join(parts).lower().encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")[:HASH_LENGTH]


def _timestamp(now: float) -> str:
    t = int(now // TIMESTAMP_PRECISION) % TIMESTAMP_SLOTS
    return BASE32[t >> 5] + BASE32[t & 31]


def _age_days(stamp: str, now: float) -> int:
    try:
        value = (BASE32.index(stamp[0].upper()) << 5) | BASE32.index(stamp[1].upper())
    except (ValueError, IndexError):
        raise SrsError("bad timestamp") from None
    today = int(now // TIMESTAMP_PRECISION) % TIMESTAMP_SLOTS
    return (today - value) % TIMESTAMP_SLOTS


def forward(sender: str, forward_domain: str, secret: bytes, now: float, local_domains: frozenset[str] = frozenset()) -> SrsRewrite:
    """The envelope sender to use when forwarding mail from `sender` out of `forward_domain`.

    `<>` stays `<>` (never rewrite a bounce, RFC 5321 §4.5.5); a sender already in one of our
    own domains needs no rewrite, SPF for it is ours.
    """
    if not sender or "@" not in sender:
        return SrsRewrite(sender, False)
    local, _, domain = sender.rpartition("@")
    if domain.lower() in local_domains or domain.lower() == forward_domain.lower():
        return SrsRewrite(sender, False)
    upper = local[:5].upper()
    if upper in ("SRS0=", "SRS0+", "SRS0-") and len(local) > 5:
        # SRS1=HHHH=first-forwarder==HHHH=TT=orig-domain=orig-local (libsrs2 §"SRS1")
        rest = local[5:]
        h = _hash(secret, domain, rest)
        return SrsRewrite(f"SRS1={h}={domain}=={rest}@{forward_domain}", True)
    if upper in ("SRS1=", "SRS1+", "SRS1-") and len(local) > 5:
        first, sep, rest = local[5:].partition("=")[2].partition("==")
        if sep:
            h = _hash(secret, first, rest)
            return SrsRewrite(f"SRS1={h}={first}=={rest}@{forward_domain}", True)
    ts = _timestamp(now)
    h = _hash(secret, ts, domain, local)
    return SrsRewrite(f"SRS0={h}={ts}={domain}={local}@{forward_domain}", True)


def reverse(address: str, secret: bytes, now: float) -> str:
    """The original sender encoded in an SRS0 address we made; SrsError if forged or expired."""
    local, _, _domain = address.rpartition("@")
    if local[:5].upper() not in ("SRS0=", "SRS0+", "SRS0-"):
        raise SrsError("not an SRS0 address")
    parts = local[5:].split("=", 3)
    if len(parts) != 4 or not all(parts):
        raise SrsError("malformed SRS0 address")
    given, ts, orig_domain, orig_local = parts
    if not hmac.compare_digest(given.lower(), _hash(secret, ts, orig_domain, orig_local).lower()):
        raise SrsError("hash does not match (forged address)")
    if _age_days(ts, now) > MAX_AGE_DAYS:
        raise SrsError("SRS address expired")
    return f"{orig_local}@{orig_domain}"


def is_srs(address: str) -> bool:
    """Whether an address (or local part) has an SRS form; its signature is checked by `reverse`."""
    return address[:5].upper() in ("SRS0=", "SRS0+", "SRS0-", "SRS1=", "SRS1+", "SRS1-")
