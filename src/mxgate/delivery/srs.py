"""Sender Rewriting Scheme for forwarded mail, so SPF holds at the destination. Pure.

Owns: turning an external envelope sender into an address in our own domain when mail is
forwarded to an external recipient (the forwarding server is not in the original sender's SPF
record, RFC 7208 §1.2.3), and reversing it when a bounce comes back. Must not know SMTP or
where the secret is kept (the caller passes it).

Format (the de-facto standard of Shevek's libsrs2 "Guarded" scheme, also pysrs, srslib, postsrsd):
    SRS0=HHHH=TT=orig-domain=orig-local@forward-domain
    SRS1=HHHH=first-hop-domain=<opaque>@forward-domain     (a forward of a forward)
HHHH: base64 of HMAC-SHA1(secret, lower-cased data), cut to HASH_LENGTH characters and compared
case-insensitively (MTAs smash case) in constant time. The data is TT + orig-domain + orig-local
for SRS0, and first-hop-domain + <opaque> for SRS1, where <opaque> is the first hop's SRS0 local
part after "SRS0" *with* its separator (so SRS1 addresses read "…=first.example==HHHH=TT=…").
HASH_LENGTH is 10 (libsrs2 defaults to 4: 24 bits, guessable at RCPT in hours); a shorter
hash is refused, never compared on its own length. TT: days since the epoch modulo 1024 in
base32, so old addresses expire. Only the hop that issued an address reverses it; SRS1 reverses to
the first hop's SRS0 address, which that hop reverses in turn.
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
HASH_LENGTH = 10  # ~52 bits after case folding: guessing at RCPT is infeasible


class SrsError(ValueError):
    """The address is not a valid SRS address for this secret (forged, expired, malformed)."""


@dataclass(frozen=True)
class SrsRewrite:
    address: str  # the rewritten envelope sender
    rewritten: bool


def _hash(secret: bytes, *parts: str, length: int = HASH_LENGTH) -> str:
    mac = hmac.new(secret, "".join(parts).lower().encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")[:length]


def _hash_ok(given: str, secret: bytes, *parts: str, length: int = HASH_LENGTH) -> bool:
    """Constant-time, case-insensitive; a hash shorter than `length` is never accepted."""
    if len(given) != length:
        return False
    return hmac.compare_digest(given.lower().encode("ascii", "replace"), _hash(secret, *parts, length=length).lower().encode())


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


def forward(sender: str, forward_domain: str, secret: bytes, now: float, local_domains: frozenset[str] = frozenset(),
            *, hash_length: int = HASH_LENGTH) -> SrsRewrite:
    """The envelope sender to use when forwarding mail from `sender` out of `forward_domain`.

    `<>` stays `<>` (never rewrite a bounce, RFC 5321 §4.5.5); a sender already in one of our
    own domains needs no rewrite, SPF for it is ours.
    """
    if not sender or "@" not in sender:
        return SrsRewrite(sender, False)
    local, _, domain = sender.rpartition("@")
    if domain.lower() in local_domains or domain.lower() == forward_domain.lower():
        return SrsRewrite(sender, False)
    tag = local[:5].upper()
    if tag[:4] == "SRS0" and tag[4:5] in SEPARATORS and len(local) > 5:
        opaque = local[4:]  # keeps the first hop's separator (libsrs2 Guarded)
        return SrsRewrite(_srs1(secret, domain, opaque, forward_domain, hash_length), True)
    if tag[:4] == "SRS1" and tag[4:5] in SEPARATORS:
        parsed = _parse_srs1(local)
        if parsed is not None:  # keep the first hop; replace the previous hop's hash with ours
            _given, first, opaque = parsed
            return SrsRewrite(_srs1(secret, first, opaque, forward_domain, hash_length), True)
    ts = _timestamp(now)
    h = _hash(secret, ts, domain, local, length=hash_length)
    return SrsRewrite(f"SRS0={h}={ts}={domain}={local}@{forward_domain}", True)


SEPARATORS = ("=", "+", "-")


def _srs1(secret: bytes, first: str, opaque: str, forward_domain: str, hash_length: int) -> str:
    return f"SRS1={_hash(secret, first, opaque, length=hash_length)}={first}={opaque}@{forward_domain}"


def _parse_srs1(local: str) -> tuple[str, str, str] | None:
    """SRS1<sep>HASH=first-hop=<opaque> → (HASH, first-hop, opaque); opaque starts with a separator."""
    given, _, rest = local[5:].partition("=")
    first, _, opaque = rest.partition("=")
    if not given or not first or not opaque or opaque[0] not in SEPARATORS or len(opaque) < 2:
        return None
    return given, first, opaque


def reverse(address: str, secret: bytes, now: float, *, hash_length: int = HASH_LENGTH) -> str:
    """Where a bounce to an SRS address we issued goes: the original sender for SRS0, the first
    hop's SRS0 address for SRS1. SrsError if forged, expired, malformed or not ours."""
    local, _, _domain = address.rpartition("@")
    tag = local[:5].upper()
    if tag[:4] == "SRS1" and tag[4:5] in SEPARATORS:
        parsed = _parse_srs1(local)
        if parsed is None:
            raise SrsError("malformed SRS1 address")
        given, first, opaque = parsed
        if not _hash_ok(given, secret, first, opaque, length=hash_length):
            raise SrsError("hash does not match (forged address)")
        return f"SRS0{opaque}@{first}"
    if tag[:4] != "SRS0" or tag[4:5] not in SEPARATORS:
        raise SrsError("not an SRS address")
    parts = local[5:].split("=", 3)
    if len(parts) != 4 or not all(parts):
        raise SrsError("malformed SRS0 address")
    given, ts, orig_domain, orig_local = parts
    if not _hash_ok(given, secret, ts, orig_domain, orig_local, length=hash_length):
        raise SrsError("hash does not match (forged address)")
    if _age_days(ts, now) > MAX_AGE_DAYS:
        raise SrsError("SRS address expired")
    return f"{orig_local}@{orig_domain}"


def is_srs(address: str) -> bool:
    """Whether an address (or local part) has an SRS form; its signature is checked by `reverse`."""
    return address[:5].upper() in ("SRS0=", "SRS0+", "SRS0-", "SRS1=", "SRS1+", "SRS1-")


def reverse_any(address: str, secrets: list[bytes], now: float) -> str:
    """`reverse` with each secret still valid after a rotation (store/keys.py), newest first."""
    error = SrsError("no SRS secret")
    for secret in secrets:
        try:
            return reverse(address, secret, now)
        except SrsError as exc:
            if "hash" not in str(exc):
                raise  # malformed or expired: another secret cannot change that
            error = exc
    raise error
