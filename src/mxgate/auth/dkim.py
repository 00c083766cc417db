"""DKIM (RFC 6376) verification of every signature, signing, and key generation, via dkimpy.

Owns: looping over *all* DKIM-Signature fields (dkimpy's `dkim.verify` checks only the
first), mapping each outcome onto the RFC 8601 §2.7.1 result words, and producing keys in
the forms dkimpy and DNS want. Must not know: DMARC alignment, policy, or where the TXT
records come from — lookups go through the `dnsfunc` the caller passes
(`mxgate.auth.dns.dnsfunc_for`), whose `DnsTemporaryError` becomes `temperror`.

Algorithms: rsa-sha256 and ed25519-sha256 (RFC 8463 §3: verifiers MUST implement it; dkimpy
gets Ed25519 from OpenSSL through auth/ed25519.py, PyNaCl is not needed). rsa-sha1 is refused.

Deliberate divergences from dkimpy's verdicts (test_auth_differential.py pins each):
- `unsuitable_key`: a key record that cannot verify the signature's a= is a permerror, as
  RFC 6376 §6.1.2 requires — k= naming another key type than a= (step 8, "inappropriate key
  algorithm") or h= leaving out a='s hash (step 6). dkimpy verifies with whatever key type k=
  names and never reads h=, so an RSA signature whose field says a=ed25519-sha256 passed over a
  k=rsa key (and an Ed25519 one saying a=rsa-sha256 over a k=ed25519 key). ARC uses the same
  check (arc.py).
- rsa-sha1 (a= in any case) is a permerror with the reason `RSA_SHA1_REFUSED`, decided before
  any key lookup: RFC 8301 §3.1, "rsa-sha1 MUST NOT be used for signing or verifying"; RFC 8601
  §2.7.1 permerror, a signature the verifier cannot accept. dkimpy passes a valid one (and
  calls a=RSA-SHA1 neutral). So it never makes DMARC pass; the Authentication-Results carry
  the reason (results.py). ARC already refuses it (dkimpy's ARC verifier takes rsa-sha256 only).
- a body length (l=) shorter than the canonicalised body: `policy` (RFC 8601 §2.7.1, signed but
  not acceptable here), never `pass`. dkimpy passes it, and whoever holds one message signed
  with l= appends what he likes (a paragraph, a whole MIME part) and keeps DKIM's, hence
  DMARC's, pass (RFC 6376 §8.2). A signature whose l= covers the whole body is judged as usual.

Blocking and CPU-bound (RSA); call from a worker thread.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Callable

import dkim as dkimpy

from mxgate.auth import dkim_canon, dkim_fast, ed25519, rsa_signing  # noqa: F401  (OpenSSL signs and verifies RSA and Ed25519, remembered canonicalisation for dkimpy; see the modules)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import InvalidTagValueList

from mxgate.auth.dkim_tags import parse_tag_value  # remembered tag lists and key records for dkimpy too

from mxgate.auth.dns import DnsTemporaryError
from mxgate.auth.headers import parse_fields, split_headers

DKIM_RESULTS = ("pass", "fail", "neutral", "policy", "temperror", "permerror")  # RFC 8601 §2.7.1
# RFC 6376 §6.1: verifiers MAY limit how many signatures they try; each costs a DNS lookup
# and an RSA operation, and a message can carry hundreds.
MAX_SIGNATURES = 10
HEADER_B_PREFIX = 8  # RFC 6008 §4: header.b carries enough of b= to tell signatures apart
RSA_KEY_BITS = 2048  # RFC 8301 §3.2: at least 1024 bits, 2048 recommended
MIN_KEY_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept shorter RSA keys
DNS_TIMEOUT = 5.0
RSA_SHA1_REFUSED = "rsa-sha1 not accepted: RFC 8301"  # also shown in Authentication-Results

DnsFunc = Callable[..., "bytes | None"]


@dataclass(frozen=True)
class DkimResult:
    result: str  # one of DKIM_RESULTS
    domain: str  # d=
    selector: str  # s=
    header_b: str  # first 8 characters of b=
    reason: str = ""  # for the trace; never sent to a client


def _tags(raw_value: bytes) -> dict[bytes, bytes]:
    try:
        return parse_tag_value(raw_value)
    except (InvalidTagValueList, ValueError, IndexError):
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()


def _classify(error: Exception) -> str:
    """RFC 8601 §2.7.1 word for a dkimpy exception."""
    if isinstance(error, dkimpy.ValidationError):
        # A body that no longer matches is a failed verification; other validation
        # problems (expired, bad tags) mean the signature could not be processed.
        return "fail" if "body hash mismatch" in str(error) else "neutral"
    if isinstance(error, dkimpy.MessageFormatError):
        return "neutral"
    return "permerror"  # KeyFormatError, UnknownKeyTypeError, ParameterError, ...


class _RecordingLookup:
    """Wraps a dnsfunc to remember the key record, so 'no key' is told apart from 'bad sig'."""

    def __init__(self, dnsfunc: DnsFunc) -> None:
        self._dnsfunc = dnsfunc
        self.record: bytes | None = None
        self.looked_up = False

    def __call__(self, name, timeout: float = DNS_TIMEOUT):
        self.looked_up = True
        self.record = self._dnsfunc(name, timeout=timeout)
        return self.record


def unsuitable_key(a_tag: bytes | None, record: bytes | str | None) -> str:
    """Why the key record cannot verify a signature whose a= is `a_tag`, or "" when it can (or
    when the record or a= is malformed: dkimpy's verdict on those stands).

    RFC 6376 §6.1.2: step 6, the record's h= (§3.6.1, colon-separated, unknown names ignored)
    must list a='s hash; step 8, its k= (default "rsa") must be a='s key type. Either failing is
    PERMFAIL before any signature is computed (§6.1.3)."""
    if not a_tag or not record or type(record) not in (bytes, str) or b"-" not in a_tag:
        return ""
    try:
        key_tags = parse_tag_value(record.encode("ascii") if isinstance(record, str) else record)
    except (InvalidTagValueList, ValueError, IndexError, UnicodeError):
        return ""
    key_type, _, hash_name = a_tag.partition(b"-")
    k = key_tags.get(b"k", b"rsa")
    if k != key_type:
        return (f"key record k={_text(k)} cannot verify a={_text(a_tag)} "
                "(RFC 6376 6.1.2: inappropriate key algorithm)")
    h = key_tags.get(b"h")
    if h is not None and hash_name not in [name.strip() for name in h.split(b":")]:
        return (f"key record h={_text(h)} does not allow a={_text(a_tag)} "
                "(RFC 6376 6.1.2: inappropriate hash algorithm)")
    return ""


def _named(tags: dict[bytes, bytes], word: str, reason: str = "") -> DkimResult:
    """A result for the signature whose tags are `tags` (d=, s= and header.b from them)."""
    return DkimResult(word, _text(tags.get(b"d")).lower(), _text(tags.get(b"s")),
                      "".join(_text(tags.get(b"b")).split())[:HEADER_B_PREFIX], reason)


def _verify_one(verifier: dkimpy.DKIM, idx: int, tags: dict[bytes, bytes], dnsfunc: DnsFunc) -> DkimResult:
    domain, selector = _text(tags.get(b"d")).lower(), _text(tags.get(b"s"))
    header_b = "".join(_text(tags.get(b"b")).split())[:HEADER_B_PREFIX]
    lookup = _RecordingLookup(dnsfunc)

    def result(word: str, reason: str) -> DkimResult:
        return DkimResult(word, domain, selector, header_b, reason)

    error = None
    try:
        ok = verifier.verify(idx=idx, dnsfunc=lookup)
    except DnsTemporaryError as exc:
        return result("temperror", f"key lookup: {exc}")
    except dkimpy.DKIMException as exc:
        ok, error = False, exc
    except IndexError:
        # dkimpy's i=/d= check indexes past the start of an i= no longer than d= (i=d, no "@"):
        # the ValidationError it meant to raise (RFC 6376 §3.5 i=: a subdomain of d=).
        return result("neutral", "i= domain is not a subdomain of d=")
    if lookup.record is not None:
        # The key was fetched, so dkimpy parsed this signature (its signature_fields): a key that
        # cannot verify its a= is PERMFAIL whatever dkimpy then made of it (module docstring).
        unsuitable = unsuitable_key(verifier.signature_fields.get(b"a"), lookup.record)
        if unsuitable:
            return result("permerror", unsuitable)
    if error is not None:
        return result(_classify(error), str(error)[:200])
    if ok:
        unsigned = _unsigned_body(verifier)
        return result("policy", unsigned) if unsigned else result("pass", "")
    if lookup.looked_up and lookup.record is None:
        return result("permerror", "no key record")  # RFC 6376 §6.1.2 step 3: PERMFAIL
    if lookup.looked_up:
        try:
            dkimpy.evaluate_pk(b"key", lookup.record)
        except (dkimpy.DKIMException, ValueError) as exc:  # revoked (empty p=), unparsable, too small
            # ValueError: binascii.Error from p= that is not base64, which dkimpy lets through here.
            return result("permerror", f"key record: {str(exc)[:200]}")
    return result("fail", "signature did not verify")


def _unsigned_body(verifier: dkimpy.DKIM) -> str:
    """Why the signature just verified leaves part of the body unsigned (its l= is shorter than
    the body canonicalised as its c= says, RFC 6376 §3.4, §3.5), or "" when it signs it all."""
    fields = verifier.signature_fields
    length = fields.get(b"l")
    if length is None:
        return ""
    try:
        canon = dkimpy.CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
        signed, total = int(length), len(canon.canonicalize_body(verifier.body))
    except (dkimpy.DKIMException, ValueError):  # cannot happen after a pass: dkimpy read both
        return "l= body length unreadable"
    if total <= signed:
        return ""
    return f"l={signed} signs {signed} of the body's {total} bytes (RFC 6376 8.2)"


def verify_dkim(message: bytes, dnsfunc: DnsFunc, *, timeout: float = DNS_TIMEOUT) -> tuple[DkimResult, ...]:
    """One result per DKIM-Signature (top first, at most MAX_SIGNATURES); () when unsigned.

    An unsigned message yields an empty tuple: RFC 8601 reports that as `dkim=none`.
    """
    head, body = split_headers(message)
    fields = parse_fields(head)
    signatures = [f for f in fields if f.name == b"dkim-signature"][:MAX_SIGNATURES]
    if not signatures:
        return ()
    dkim_canon.remember_parse(message, fields, body)  # the verifiers' parse, from ours (issue 19)
    all_tags = [_tags(f.value) for f in signatures]
    # The common case is proved to pass without dkimpy's flow (dkim_fast); everything else,
    # and every verdict but pass, is dkimpy's, with the key answers dkim_fast already got.
    lookups = dkim_fast.Lookups(dnsfunc)
    results: list[DkimResult] = []
    verifier = None
    for i, tags in enumerate(all_tags):
        if tags.get(b"a", b"").lower() == b"rsa-sha1":  # RFC 8301 §3.1 (module docstring)
            results.append(_named(tags, "permerror", RSA_SHA1_REFUSED))
            continue
        if dkim_fast.ENABLED and dkim_fast.dkim_passes(message, i, lookups, timeout):
            results.append(_named(tags, "pass"))
            continue
        if verifier is None:
            try:
                verifier = dkimpy.DKIM(message, minkey=MIN_KEY_BITS, timeout=timeout)
            except dkimpy.DKIMException as exc:  # header section dkimpy cannot parse
                # (dkim_fast reads dkimpy's parse of it, so it passed none of them)
                return tuple(_named(t, "permerror", f"message: {str(exc)[:200]}") for t in all_tags)
        results.append(_verify_one(verifier, i, tags, lookups))
    return tuple(results)


def sign_dkim(message: bytes, domain: str, selector: str, private_key_pem: bytes,
              include_headers: list[str] | None = None) -> bytes:
    """The `DKIM-Signature: ...` field (folded, CRLF-terminated) to put on top of `message`.

    relaxed/simple canonicalisation (dkimpy's default, RFC 6376 §3.4) and rsa-sha256.
    """
    return dkimpy.sign(message, selector.encode("ascii"), domain.encode("ascii"), private_key_pem,
                       include_headers=[h.encode("ascii") for h in include_headers]
                       if include_headers else None)


def generate_dkim_key(bits: int = RSA_KEY_BITS) -> tuple[bytes, str]:
    """(PKCS#1 PEM private key for dkimpy, TXT value `v=DKIM1; k=rsa; p=...`)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,  # dkimpy reads PKCS#1
                                    serialization.NoEncryption())
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode("ascii")
