r"""The common case of DKIM verification (RFC 6376 §6.1) and of a one-set ARC chain (RFC 8617
§5.2), proved to pass without dkimpy's verify flow; dkimpy decides everything else.

Owns: `dkim_passes` and `arc_chain_passes`. Each returns True only when the signature(s)
verified over exactly the bytes dkimpy would hash, and None ("ask dkimpy") otherwise: never a
failure verdict of its own, so every fail, neutral, permerror, temperror and every reason is
dkimpy's. What is left here is dkimpy's ~100 µs of Python per signature around the RSA check
(a DKIM object per message, eager debug formatting, every header canonicalised per signature,
tag validation by sre, its ARC chain bookkeeping; issue 19).

Why a pass here is dkimpy's pass:
- the header fields and body are dkimpy's own parse (`dkim.rfc822_parse`, remembered per
  message in dkim_canon), the canonicalisations are dkimpy's functions (dkim_canon's swaps,
  tested byte-identical), header selection is dkimpy's `select_headers` rule (bottom-up, the
  bug#644046 extra From), the b= removal is dkimpy's `RE_BTAG`;
- the signature field is taken only in a shape where dkimpy's checks all hold: the tags are a
  known subset (no l=, z=, unknown ones), v=1, a=rsa-sha256, c= one of the four spellings, d=
  and s= plain LDH labels, i= ending in "@"+d or "."+d, q=dns/txt, t= not in the future, x=
  not yet reached, b=/bh= strict base64, h= naming From (RFC 6376 §5.4; dkimpy does not ask);
- the key record is dkimpy's parse of the one TXT answer, k=rsa, ≥ 1024 bits, and no tag
  beyond v=, k=, p=, n= and s=email/* (t= flags, h= and g= go to dkimpy); with a=rsa-sha256
  that key suits the signature (RFC 6376 §6.1.2 steps 6 and 8), the check dkim.py and arc.py
  add to dkimpy's passes (dkim.unsuitable_key), so a pass here needs no such check;
- RSA is checked by OpenSSL (rsa_signing) over sha256 of those bytes.
Anything else, or any exception on the way, is None. The key lookups made here are kept in
a `Lookups` that replays them to dkimpy: one DNS question per key, and dkimpy sees the very
answer (or DnsTemporaryError) this code saw.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time

import dkim as _dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.hazmat.primitives import hashes

from mxgate.auth import dkim_canon, dkim_tags, rsa_signing

MIN_KEY_BITS = 1024  # RFC 8301 §3.2 (dkim.MIN_KEY_BITS, repeated: dkim.py imports this module)
_DKIM_TAGS = frozenset((b"v", b"a", b"b", b"bh", b"c", b"d", b"h", b"i", b"q", b"s", b"t", b"x"))
_AMS_TAGS = frozenset((b"i", b"a", b"b", b"bh", b"c", b"d", b"h", b"s", b"t"))
_AS_TAGS = frozenset((b"i", b"a", b"b", b"cv", b"d", b"s", b"t"))
_KEY_TAGS = frozenset((b"v", b"k", b"p", b"n", b"s"))
_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_SELECTOR = _LDH | frozenset(b"_")
_B64_TEXT = re.compile(rb"[A-Za-z0-9+/]+={0,2}")  # base64's letters, then the padding
_NAME = frozenset(range(0x21, 0x7F)) - frozenset(b":")
_SIMPLE = _dkim.canonicalization.Simple
_RELAXED = _dkim.canonicalization.Relaxed
# c= spellings dkimpy's CanonicalizationPolicy.from_c_value reads (one word: body simple).
_C_VALUES = {b"simple/simple": (_SIMPLE, _SIMPLE), b"simple": (_SIMPLE, _SIMPLE),
             b"relaxed/simple": (_RELAXED, _SIMPLE), b"relaxed": (_RELAXED, _SIMPLE),
             b"relaxed/relaxed": (_RELAXED, _RELAXED), b"simple/relaxed": (_SIMPLE, _RELAXED)}
ENABLED = True  # False: dkimpy decides every signature (the differential tests' reference)
_ARC_NAMES = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()


class Lookups:
    """A dnsfunc that asks each key name once and replays its answer (or its exception)."""

    def __init__(self, dnsfunc) -> None:
        self._dnsfunc = dnsfunc
        self._seen: dict = {}

    def __call__(self, name, timeout=5):
        key = (name, timeout)
        if key not in self._seen:
            try:
                self._seen[key] = (self._dnsfunc(name, timeout=timeout), None)
            except Exception as exc:  # DnsTemporaryError and the like: dkimpy must meet it too
                self._seen[key] = (None, exc)
        record, error = self._seen[key]
        if error is not None:
            raise error
        return record


def _b64(value: bytes) -> bytes | None:
    """Strict base64 of a folded b=/bh= value, or None (dkimpy then judges the value): letters
    of the alphabet, at least one, then at most two `=`, a multiple of 4 long. One regex match,
    not a set test byte by byte (issue 19: 4.2 -> 1.7 µs for a 2048-bit b=, three per ARC set)."""
    text = b"".join(value.split())
    if len(text) % 4 or _B64_TEXT.fullmatch(text) is None:
        return None
    return base64.b64decode(text)


def _plain_domain(value: bytes | None, allowed=_LDH) -> bool:
    return bool(value) and len(value) <= 253 and allowed.issuperset(value) and not value.startswith(b".")


def _h_list(value: bytes) -> list[bytes] | None:
    r"""dkimpy's `re.split(\s*:\s*)` of h= lower-cased, when every name is a plain field name."""
    names = [n.strip().lower() for n in value.split(b":")]
    if not all(n and _NAME.issuperset(n) for n in names) or b"from" not in names:
        return None
    return names


def _times_ok(tags: dict, now: int) -> bool:
    # dkimpy: t= may be up to 10 h ahead, x= up to 10 h past; here t= not ahead, x= not reached.
    t = tags.get(b"t")
    if t is not None and not (t.isdigit() and len(t) <= 12 and int(t) <= now):
        return False
    x = tags.get(b"x")
    if x is not None and not (x.isdigit() and len(x) <= 12 and int(x) > now + 1 and (t is None or int(x) >= int(t))):
        return False
    return True


def _key(lookups: Lookups, tags: dict, timeout) -> object | None:
    """The OpenSSL public key of s=/d=, or None unless the record is a plain RSA key."""
    record = lookups(tags[b"s"] + b"._domainkey." + tags[b"d"] + b".", timeout=timeout)
    if not record or type(record) not in (bytes, str) or len(record) > dkim_tags.MAX_REMEMBERED:
        return None
    raw = record.encode("ascii") if type(record) is str else record
    key_tags = dkim_tags.parse_tag_value(raw)
    if not _KEY_TAGS.issuperset(key_tags) or key_tags.get(b"k", b"rsa") != b"rsa" or \
            key_tags.get(b"v", b"DKIM1") != b"DKIM1" or key_tags.get(b"s", b"*") not in (b"*", b"email"):
        return None
    pk, keysize, ktag, tlsrpt = dkim_tags.evaluate_pk(b"", record)
    if ktag != b"rsa" or tlsrpt or not keysize or keysize < MIN_KEY_BITS:
        return None
    return rsa_signing._openssl_public(pk), (pk["modulus"].bit_length() + 7) // 8


def _positions(headers) -> dict[bytes, list[int]]:
    """Each lower-cased field name's indexes, top first."""
    return _positions_of([field[0].lower() for field in headers])


def _positions_of(names: list[bytes]) -> dict[bytes, list[int]]:
    """_positions of fields whose lower-cased names are `names`."""
    where: dict[bytes, list[int]] = {}
    for i, name in enumerate(names):
        if name in where:
            where[name].append(i)
        else:
            where[name] = [i]
    return where


def _select(headers, positions, include: list[bytes]) -> list:
    """dkim.select_headers: each name in `include` takes the lowest field of that name not
    yet taken, none when all are (RFC 6376 §5.4.2); a canonical name is the raw one lowered."""
    left = {}
    out = []
    for h in include:
        free = left.get(h)
        if free is None:
            free = left[h] = list(positions.get(h, ()))
        if free:
            out.append(headers[free.pop()])
    return out


def _signed_ok(headers, positions, include, sig_field, header_canon, signature: bytes, key) -> bool:
    """dkimpy's hash_headers + RSASSA-PKCS1-v1_5 verify (RFC 6376 §3.7)."""
    public, modlen = key
    if len(signature) != modlen:
        return False  # dkimpy's own verifier decides a wrong-length signature
    selected = header_canon.canonicalize_headers(_select(headers, positions, include))
    name, value = header_canon.canonicalize_headers([(sig_field[0], dkim_canon.RE_BTAG.sub(b"\\1", sig_field[1]))])[0]
    h = hashlib.sha256()
    for x, y in selected:
        h.update(x + b":" + y)
    h.update(name + b":" + value.rstrip())
    try:
        public.verify(signature, h.digest(), _PKCS1, utils.Prehashed(_SHA256))
    except InvalidSignature:
        return False
    return True


def _body_ok(body: bytes, body_canon, bh: bytes) -> bool:
    return hashlib.sha256(body_canon.canonicalize_body(body)).digest() == bh


def dkim_passes(message: bytes, idx: int, lookups: Lookups, timeout) -> bool | None:
    """True when the idx-th DKIM-Signature (top first, as dkimpy counts them) passes."""
    try:
        return _dkim_passes(message, idx, lookups, timeout)
    except Exception:  # anything unexpected: dkimpy decides (a verifier error is never a pass)
        return None


def _dkim_passes(message, idx, lookups, timeout):
    headers, body = dkim_canon.parsed_message(message)
    sigs = [f for f in headers if f[0].lower() == b"dkim-signature"]
    if idx >= len(sigs):
        return None
    sig_field = sigs[idx]
    tags = dkim_tags.parse_tag_value(sig_field[1])
    if not _DKIM_TAGS.issuperset(tags) or tags.get(b"v") != b"1" or tags.get(b"a") != b"rsa-sha256" or \
            tags.get(b"q", b"dns/txt") != b"dns/txt":
        return None
    canon = _C_VALUES.get(tags.get(b"c", b"simple/simple"))
    d, s = tags.get(b"d"), tags.get(b"s")
    if canon is None or not _plain_domain(d) or not _plain_domain(s, _SELECTOR) or b"b" not in tags \
            or b"bh" not in tags or b"h" not in tags or not _times_ok(tags, int(time.time())):
        return None
    i = tags.get(b"i")
    if i is not None and not (len(i) > len(d) and i.lower().endswith(d.lower()) and i[-len(d) - 1] in b"@." and i.count(b"@") == 1):
        return None
    include = _h_list(tags[b"h"])
    bh, signature = _b64(tags[b"bh"]), _b64(tags[b"b"])
    if include is None or bh is None or signature is None:
        return None
    if not _body_ok(body, canon[1], bh):
        return None
    key = _key(lookups, tags, timeout)
    if key is None:
        return None
    include.append(b"from")  # dkimpy: any extra From above the signed one (bug#644046)
    return True if _signed_ok(headers, _positions(headers), include, sig_field, canon[0], signature, key) else None


ARC_TIMEOUT = 5  # dkim.arc_verify looks keys up with timeout=5 whatever it is given


def arc_chain_passes(message: bytes, lookups: Lookups) -> bool | None:
    """True when the message carries exactly one ARC set (i=1, cv=none) whose AMS and
    ARC-Seal both verify: dkimpy's arc_verify would answer (pass, "success")."""
    try:
        return _arc_passes(message, lookups)
    except Exception:
        return None


def _arc_passes(message, lookups):
    headers, body = dkim_canon.parsed_message(message)
    arc = {}
    for raw in headers:
        name = raw[0].lower()  # = dkimpy's relaxed name: rfc822_parse's names hold no WSP
        if not name.startswith(b"arc-"):
            continue
        if name not in _ARC_NAMES or name in arc:
            return None  # another ARC-ish field, a second set or a duplicate: dkimpy's chain logic
        value = dkim_canon.canonicalize_headers([raw])[0][1]
        m = _dkim.ARC.INSTANCE_RE.search(value)  # how dkimpy numbers the sets
        if m is None or m.group(1) != b"1":
            return None
        arc[name] = (raw, value)
    if len(arc) != 3:
        return None
    now = int(time.time())
    # ARC-Message-Signature (RFC 8617 §4.1.2): dkimpy parses its relaxed value.
    ams_raw, ams_value = arc[b"arc-message-signature"]
    ams = dkim_tags.parse_tag_value(ams_value)
    if not _AMS_TAGS.issuperset(ams) or ams.get(b"i") != b"1" or ams.get(b"a") != b"rsa-sha256" or \
            ams.get(b"c", b"relaxed/relaxed") != b"relaxed/relaxed" or not _plain_domain(ams.get(b"d")) or \
            not _plain_domain(ams.get(b"s"), _SELECTOR) or b"h" not in ams or b"bh" not in ams or \
            b"b" not in ams or not _times_ok(ams, now) or b" i=1;" not in ams_raw[1].lower():
        return None
    include = _h_list(ams[b"h"])
    bh, ams_sig = _b64(ams[b"bh"]), _b64(ams[b"b"])
    if include is None or b"arc-seal" in include or bh is None or ams_sig is None:
        return None
    # ARC-Seal (RFC 8617 §4.1.3): instance 1 must say cv=none.
    as_raw, as_value = arc[b"arc-seal"]
    seal = dkim_tags.parse_tag_value(as_value)
    if not _AS_TAGS.issuperset(seal) or seal.get(b"i") != b"1" or seal.get(b"a") != b"rsa-sha256" or \
            seal.get(b"cv") != b"none" or not _plain_domain(seal.get(b"d")) or \
            not _plain_domain(seal.get(b"s"), _SELECTOR) or b"b" not in seal or not _times_ok(seal, now):
        return None
    seal_sig = _b64(seal[b"b"])
    if seal_sig is None or not _body_ok(body, _RELAXED, bh):
        return None
    ams_key, seal_key = _key(lookups, ams, ARC_TIMEOUT), _key(lookups, seal, ARC_TIMEOUT)
    if ams_key is None or seal_key is None:
        return None
    include.append(b"from")
    positions = _positions(headers)
    if not _signed_ok(headers, positions, include, ams_raw, _RELAXED, ams_sig, ams_key):
        return None
    # dkimpy signs the seal over the set's AAR and AMS (its sorted list, the seal itself last)
    # and then the seal field rebuilt from its relaxed value.
    return True if _signed_ok(headers, positions, [b"arc-authentication-results", b"arc-message-signature"],
                              (b"ARC-Seal", b" " + as_value), _RELAXED, seal_sig, seal_key) else None


# --- sealing: the first ARC set on a message (RFC 8617 §5.1), dkimpy's arc_sign steps ---------

_AR_NAME = b"Authentication-Results"
_SEAL_SHOULD_NOT = frozenset(_dkim.DKIM.SHOULD_NOT) | {b"authentication-results"}  # arc_sign adds AR
_SEAL_SIGN = frozenset(_dkim.DKIM.SHOULD) | frozenset(_dkim.DKIM.FROZEN)


def seal_first_set(message: bytes, selector: bytes, domain: bytes, private_key_pem: bytes, srv_id: bytes,
                   results, results_text: str, timestamp=None, include_headers=None, parsed=None) -> list[bytes] | None:
    """dkim.arc_sign(message, selector, domain, private_key_pem, srv_id, timestamp=...,
    include_headers=...) byte for byte, for the common case only: no ARC field on the message
    yet (instance 1), our Authentication-Results its only one, on top (`results`: the parse of
    its value `results_text`, as seal_arc hands it to dkimpy) and no arc= result in it
    (cv=none); rsa-sha256, CRLF. `parsed`: rfc822_parse's answer for `message` when the caller
    has it (dkim_canon.parse_from_fields), else it is parsed here.
    None for anything else (dkimpy then seals). What is skipped is dkimpy's generic work: its
    object, the ARC-field sort (every field canonicalised again), the AR parses, the
    canonicalisation of fields no signature covers and the b= cut made twice per signature;
    the hashed bytes, the folding, the b= cut and the RSA signature (deterministic, RFC 8017
    §8.2) are its own functions' (a test compares the output with dkim.arc_sign's on every
    message shape it takes)."""
    try:
        return _seal_first_set(message, selector, domain, private_key_pem, srv_id, results, results_text,
                               timestamp, include_headers, parsed)
    except Exception:  # dkimpy seals, and raises what it raises
        return None


def _seal_first_set(message, selector, domain, private_key_pem, srv_id, results, results_text, timestamp,
                    include_headers, parsed):
    headers, body = parsed if parsed is not None else dkim_canon.parsed_message(message)
    names = [name.lower() for name, _ in headers]  # each once (issue 19: lowered four times a field)
    ars = 0
    for (name, _), lower in zip(headers, names):
        if lower.startswith(b"arc-"):
            return None  # a chain (or something dkimpy may number as one): dkimpy's sort decides
        ars += name == _AR_NAME
    arc_results = [r.result.lower() for r in results.results if r.method == "arc"]
    if ars != 1 or headers[0][0] != _AR_NAME or arc_results not in ([], ["none"]) or \
            headers[0][1].strip().decode("utf-8") != results_text:
        # Other AR fields (dkimpy parses each), arc= results making cv other than none, or a value
        # dkimpy would parse again rather than take seal_arc's parse of it.
        return None
    if include_headers is None:  # dkimpy's default_sign_headers on the same fields, lowered
        include = [x for x in names if x in _SEAL_SIGN]
        include = tuple(include + [x for x in include if x in _dkim.DKIM.FROZEN])
    else:
        include = tuple(x.lower() for x in include_headers)
    if b"from" not in include or _SEAL_SHOULD_NOT.intersection(include):
        return None  # dkimpy's ParameterError
    pk = rsa_signing._parsed_pem_key(private_key_pem)
    auth_results = srv_id + b"".join(b";\r\n " + str(res).encode("utf-8") for res in results.results)
    aar_value = b"i=1; " + auth_results.rstrip() + b"\r\n"
    relaxed = dkim_canon.canonicalize_headers
    # dkimpy canonicalises the AAR and every field, then selects (dkim.select_headers) the ones
    # h= names; a relaxed name is the parsed name lower-cased (it holds no WSP), so selecting
    # by name first and canonicalising only what is hashed hashes the same bytes.
    fields = [(b"ARC-Authentication-Results", aar_value)] + headers
    bodyhash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    stamp = str(timestamp or int(time.time())).encode("ascii")
    ams = _sealed_field(b"ARC-Message-Signature", [
        (b"i", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", domain), (b"s", selector),
        (b"t", stamp), (b"h", b" : ".join(include)), (b"bh", bodyhash), (b"b", b"0" * 60)],
        relaxed(_select(fields, _positions_of([b"arc-authentication-results"] + names), include)), pk)
    # The seal's h= is the set's AAR and AMS (RFC 8617 §5.1.1; dkimpy's sorted ARC fields, and
    # the message has no other ARC field).
    seal = _sealed_field(b"ARC-Seal", [
        (b"i", b"1"), (b"cv", b"none"), (b"a", b"rsa-sha256"), (b"d", domain), (b"s", selector), (b"t", stamp),
        (b"b", b"0" * 60)], relaxed([fields[0], (b"ARC-Message-Signature", ams)]), pk)
    return [b"ARC-Seal: " + seal, b"ARC-Message-Signature: " + ams, b"ARC-Authentication-Results: " + aar_value]


def _sealed_field(name: bytes, fields: list, signed: list, pk) -> bytes:
    """dkim.DomainSigner.gen_header (standardize off, CRLF) given the relaxed fields it signs:
    dkimpy's hash_headers without its select_headers and its second b= cut (of a value already
    cut: the same bytes)."""
    value = _unsigned_value(len(name), b"; ".join(b"=".join(x) for x in fields))
    h = hashlib.sha256()
    for x, y in signed:
        h.update(x + b":" + y)
    x, y = dkim_canon.canonicalize_headers([(name, b" " + value)])[0]
    h.update(x + b":" + y.rstrip())  # dkimpy hashes the signature field without its CRLF
    fields[-1] = (b"b", base64.b64encode(rsa_signing.openssl_sign(h, pk)))
    return fold(b"; ".join(b"=".join(x) for x in fields) + b"\r\n", namelen=len(name))


@functools.lru_cache(maxsize=64)
def _unsigned_value(namelen: int, tags: bytes) -> bytes:
    """gen_header's folded value with its b= placeholder cut: a pure function of the tag list,
    which is the same for every seal of one key in one second (t=), for the ARC-Seal always."""
    return dkim_canon.RE_BTAG.sub(b"\\1", fold(tags, namelen))


def fold(header: bytes, namelen: int = 0) -> bytes:
    """dkim.fold(header, namelen, linesep=CRLF) byte for byte: the same greedy cut at the last
    space within each line's 72 columns (71 after the first), by positions in `header` instead
    of dkimpy's copy of the rest per line (issue 19: ~7 -> ~3 µs for a seal's signed field, two
    per message). dkimpy's own for a name too long to leave a first line positive columns (its
    slices then count from the end) or a value that is not bytes."""
    maxleng = 72 - namelen
    if type(header) is not bytes or maxleng < 1:
        return _dkim.fold(header, namelen=namelen, linesep=b"\r\n")
    n = len(header)
    if n <= maxleng:
        return header
    if n - header.rfind(b"\r\n") == 2 and n <= maxleng + 2:
        return header
    i = header.rfind(b"\r\n ")
    if i == -1:
        parts, pos = [], 0
    else:
        pos = i + 3
        parts = [header[:pos]]
    while n - pos > maxleng:
        i = header.rfind(b" ", pos, pos + maxleng)
        if i == -1:
            end = pos + maxleng
            parts.append(header[pos:end])
            pos = end
        else:
            parts.append(header[pos:i])
            pos = i + 1
        parts.append(b"\r\n ")
        maxleng = 71
    parts.append(header[pos:])
    return b"".join(parts)
