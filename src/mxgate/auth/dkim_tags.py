"""dkimpy's tag-list parse and key-record evaluation, each result remembered by its exact input.

Owns: swapping `dkim.parse_tag_value` (RFC 6376 §3.2) and `dkim.evaluate_pk` (the key record,
§3.6.1) inside dkimpy for the same functions with their results kept in bounded LRUs. A P3
message makes the mailbox parse the same few tag lists about ten times (the DKIM-Signature
in our loop and dkimpy's, each ARC-Seal and ARC-Message-Signature in ours and dkimpy's, each
key record per signature checked): issue 19, ~9 µs each.

The parse itself is dkimpy's steps without its sre match per tag (a test compares the two,
errors included, on every short mix of names, `=`, `;`, whitespace and 8-bit bytes).

Why this cannot let a sender steer a verdict: both are pure functions of their input bytes,
the key is those whole bytes, and every caller gets a fresh copy it may change (dkimpy sets
`sig[b'c']` on an ARC signature's dict). Only successes are remembered; an input that raises
is parsed again every time, so its error is dkimpy's own. The key record is remembered by
the TXT text, never by selector or domain: the lookup itself still goes through the
resolver on every signature, so its TTL, a rotated key, a revoked one (empty p=) or a DNS
error (temperror) take effect exactly as before. Inputs over MAX_REMEMBERED bytes are not kept.
`install()` is idempotent.
"""

from __future__ import annotations

import functools

import dkim as _dkim
import dkim.util as _util

ORIGINAL_PARSE = _util.parse_tag_value
ORIGINAL_EVALUATE = _dkim.evaluate_pk
MAX_REMEMBERED = 4096  # a signature field or key record longer than this is computed each time
TAG_LISTS = 2048  # ~2 fields and 1 record per signature; a busy node sees a few hundred senders
KEY_RECORDS = 1024


_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _parse(tag_list: bytes) -> dict[bytes, bytes]:
    """dkim.util.parse_tag_value's steps, same errors, without its per-tag listcomp and sre
    match: its `^[a-zA-Z](\\w)*` only asks that the stripped tag name start with an ASCII letter."""
    tags: dict[bytes, bytes] = {}
    tag_specs = tag_list.strip().split(b";")
    if not tag_specs[-1]:  # trailing semicolons are valid
        tag_specs.pop()
    for tag_spec in tag_specs:
        key, eq, value = tag_spec.partition(b"=")
        if not eq:
            raise _util.InvalidTagSpec(tag_spec)
        key = key.strip()
        if not key or key[0] not in _LETTERS:
            raise _util.InvalidTagSpec(tag_spec)
        if key in tags:
            raise _util.DuplicateTag(key)
        tags[key] = value.strip()
    return tags


@functools.lru_cache(maxsize=TAG_LISTS)
def _parsed(tag_list: bytes) -> tuple:
    return tuple(_parse(tag_list).items())


def parse_tag_value(tag_list):
    """dkim.util.parse_tag_value: a fresh {tag: value} dict; raises what dkimpy raises."""
    if type(tag_list) is not bytes:
        return ORIGINAL_PARSE(tag_list)
    if len(tag_list) <= MAX_REMEMBERED:
        return dict(_parsed(tag_list))
    return _parse(tag_list)


@functools.lru_cache(maxsize=KEY_RECORDS)
def _evaluated(record: bytes | str) -> tuple:
    # The name only appears in the error for an empty record, which is never cached.
    return ORIGINAL_EVALUATE(b"", record)


def evaluate_pk(name, s):
    """dkim.evaluate_pk: (key, bits, k= type, s=tlsrpt) from a key record's text."""
    if not s or type(s) not in (bytes, str) or len(s) > MAX_REMEMBERED:
        return ORIGINAL_EVALUATE(name, s)
    pk, keysize, ktag, seqtlsrpt = _evaluated(s)
    # An RSA key is dkimpy's dict of integers (rsa_signing reads it); the caller gets its own.
    return (dict(pk) if type(pk) is dict else pk), keysize, ktag, seqtlsrpt


def install() -> None:
    _dkim.parse_tag_value = parse_tag_value  # module globals read by verify, arc verify and sign
    _dkim.evaluate_pk = evaluate_pk  # read by load_pk_from_dns (dkimpy 1.1)


install()
