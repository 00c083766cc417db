r"""dkimpy's relaxed header canonicalisation (RFC 6376 §3.4.2), each field value's result remembered.

Owns: swapping `dkim.canonicalization.Relaxed.canonicalize_headers` for the same computation
with the canonical form of each value kept in a bounded LRU. dkimpy canonicalises the whole
header section again for every signature it makes or checks: a gateway message's fields are
canonicalised about four times (the DKIM verification, then ARC-Message-Signature and ARC-Seal,
each over every field, and the ARC set sort), two `re.sub` each. Issue 19: header
canonicalisation was ~38% of the ARC seal's Python time in a P3 gateway profile.
Same patterns and steps as dkimpy (unfold, compress WSP, strip, CRLF; name lower-cased and
right-stripped): byte-identical, a test compares it with dkimpy's on generated fields.
Values over MAX_REMEMBERED bytes or not `bytes` are computed without the cache. `install()` is idempotent.

It also swaps dkimpy's `RE_BTAG` (the b= value emptied from the signature field before it is
hashed, RFC 6376 §3.7) for a pattern that matches the same text: dkimpy's folding-whitespace
group `(?:(?:\s*\r?\n)?\s+)?` matches exactly the runs `\s*` matches, but sre backtracks through
it at every character of the signature (~85 → ~20 µs per field; two fields per ARC set
verified, issue 19 P3). A test compares the two on generated fields.

And dkimpy's `rfc822_parse` (the message into header fields and a CRLF body, once per
signature checked or made) for the same loop without its `re.split(b"\r?\n")` (sre tries the
optional CR at every byte: ~60 µs for a 5 KB message) and with its field-name pattern compiled
once: removing the CR before each LF and splitting at LF cuts the same lines. A test compares
the two, exceptions included, on every short mix of CR, LF, WSP, colons and "From ".
The last few messages' parses are remembered (by the whole message, MAX_PARSED_MESSAGE bytes at
most): the mailbox checks the DKIM signature and then the ARC chain of the same bytes, and
dkimpy parsed them twice (~30 µs each, issue 19). Each caller gets its own header lists.

And dkimpy's relaxed body canonicalisation (RFC 6376 §3.4.4: WSP before a line end removed,
other WSP runs made one SP, trailing empty lines dropped) for the same steps that skip a pass
with nothing to change: sre scanned the whole body twice per signature even when it held no
tab, no double space and no space before a line end (~60 µs for 2 KB, once per ARC-Message-
Signature made or checked). A test compares the two on every short mix of WSP, CR, LF and text.
The last few bodies' relaxed forms are kept too (found by comparing bytes): a relaxed DKIM
signature and the ARC-Message-Signatures over the same body canonicalise it once.

And dkimpy's `re` module global for one that answers its two hottest calls without sre:
`re.sub(rb"\s+", b"", value)` (the b= and bh= values unfolded, four or five times per signature
checked, ~8 µs each on 350 bytes) as `b"".join(value.split())` — bytes.split() splits at exactly
the six ASCII whitespace bytes a bytes `\s` matches — and its base64 syntax check of b=, made
twice per signature on the same value, remembered, and its split of the h= list at colons.
Everything else goes to `re` itself.
"""

from __future__ import annotations

import functools
import re
import threading

import dkim as _dkim
import dkim.canonicalization as _canon

MAX_REMEMBERED = 4096  # the cache holds at most 2,048 values of this size (8 MiB)
ORIGINAL = _canon.Relaxed.__dict__["canonicalize_headers"]
ORIGINAL_BTAG = _dkim.RE_BTAG
_BTAG_PATTERN = re.compile(rb"([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")
ORIGINAL_PARSE = _dkim.rfc822_parse
_NAME_COLON = re.compile(rb"([\x21-\x7e]+?):")  # dkimpy's own pattern
ORIGINAL_BODY = _canon.Relaxed.__dict__["canonicalize_body"]
MAX_PARSED_MESSAGE = 1 << 20  # a bigger message is parsed each time (the cache pins its bytes)
PARSED_MESSAGES = 4  # worker threads each check one message at a time
_WSP = re.compile(b"[\t ]+")
_LINE_BREAK = re.compile(b"\r?\n")
_TRAILING_WSP = re.compile(b"[\t ]+\r\n")  # dkimpy's strip_trailing_whitespace
# A WSP run that is not already one SP: a space followed by WSP, or a run starting with a tab.
# Replacing these with SP is dkimpy's `[\t ]+` -> SP, without touching the single spaces.
_WSP_TO_COMPRESS = re.compile(b" [\t ]+|\t[\t ]*")
ORIGINAL_RE = _dkim.re
_parsed_messages: dict[bytes, tuple] = {}
_parsed_lock = threading.Lock()


_WS = b" \t\n\r\x0b\x0c"  # what a bytes `\s` matches
_BTAG_STARTS = tuple(c + b"b" for c in (b";", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"))
_B64_OR_WS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" + _WS


def _cut_btag(value: bytes) -> bytes | None:
    r"""`_BTAG_PATTERN.sub(b"\1", value)` for a field where one place only can start a
    match (`[;\s]b\s*=`) and base64/WSP follow it to the end (b= last, as signers write
    it); None for any other field."""
    found = -1  # where the "=" after the only match start is
    n = len(value)
    for start in _BTAG_STARTS:
        p = value.find(start)
        while p >= 0:
            j = p + 2
            while j < n and value[j] in _WS:
                j += 1
            if j < n and value[j] == 0x3D:  # "=": a match starts at p
                if found >= 0:
                    return None  # two matches: sre decides
                found = j
            p = value.find(start, p + 1)
    if found < 0:
        return value  # no match anywhere: sub changes nothing
    j = found + 1
    rest = value[j:]
    run = rest.rstrip(_WS)
    if run.translate(None, _B64_OR_WS):
        return None  # something after the b= value: sre decides
    tail = rest[len(run):]  # WSP only: the group cannot take it; `(?:\r?\n\Z)?` may
    return value[:j] + (b"" if tail == b"\r\n" or tail == b"\n" else tail)


class _Btag:
    r"""dkimpy's RE_BTAG as it uses it (`.sub(b"\1", field)`: the b= value emptied from a
    signature field before hashing, RFC 6376 §3.7), answered without sre when `_cut_btag`
    can: sre walks its `(?:\s*[a-zA-Z0-9+/=])*` group one character at a time (~25-50 µs per
    field, three per P3 message verified and four per seal made; issue 19)."""

    pattern = _BTAG_PATTERN.pattern

    @staticmethod
    def sub(repl, string, count=0):
        if repl == b"\\1" and not count and type(string) is bytes:
            cut = _cut_btag(string)
            if cut is not None:
                return cut
        return _BTAG_PATTERN.sub(repl, string, count)

    def __getattr__(self, name: str):
        return getattr(_BTAG_PATTERN, name)


RE_BTAG = _Btag()


def rfc822_parse(message):
    """dkim.rfc822_parse: (headers as [name, value + CRLF] lists, body with CRLF line ends)."""
    if type(message) is not bytes or len(message) > MAX_PARSED_MESSAGE:
        return _parse(message)
    parsed = parsed_message(message)  # raises MessageFormatError as dkimpy does: nothing kept
    return [[name, value] for name, value in parsed[0]], parsed[1]


def parsed_message(message: bytes):
    """rfc822_parse's (fields, body) without a copy of the fields: for readers only (dkim_fast)."""
    if len(message) > MAX_PARSED_MESSAGE:
        return _parse(message)
    parsed = _parsed_messages.get(message)
    if parsed is None:
        parsed = _parse(message)
        with _parsed_lock:
            if len(_parsed_messages) >= PARSED_MESSAGES:
                _parsed_messages.pop(next(iter(_parsed_messages)))
            _parsed_messages[message] = parsed
    return parsed


def remember_parse(message: bytes, fields, body: bytes) -> bool:
    """Keep rfc822_parse's answer for `message`, read off a header parse the caller already has
    (`parse_from_fields`); False when that parse does not give it (nothing kept). Issue 19, P3:
    the mailbox parsed each message's header section twice, once for its own checks and once for
    the ARC verification (~30 µs)."""
    if type(message) is not bytes or len(message) > MAX_PARSED_MESSAGE or message in _parsed_messages:
        return False
    parsed = parse_from_fields(message, fields, body)
    if parsed is None:
        return False
    with _parsed_lock:
        if len(_parsed_messages) >= PARSED_MESSAGES:
            _parsed_messages.pop(next(iter(_parsed_messages)))
        _parsed_messages[message] = parsed
    return True


def parse_from_fields(message: bytes, fields, body: bytes):
    """rfc822_parse's (fields, body) for `message` read off a header parse the caller already
    has (`fields`: auth/headers.parse_fields of split_headers(message)'s head; `body` its body),
    or None when that parse does not give it unambiguously. It does when every field is a named
    one with no WSP before its colon and a terminated last line: each field is then dkimpy's
    [name, value + CRLF] (the name is the text before the colon, the value the rest with each
    line end made CRLF) and the body the rest after the blank line with CRLF line ends. Anything
    else — a line that is no field ("From " lines, junk, a leading continuation: dkimpy skips or
    refuses them), an empty header section — is left to `_parse` (None). A test compares this
    with `_parse` on generated messages."""
    if type(message) is not bytes or len(message) > MAX_PARSED_MESSAGE or not fields:
        return None
    # Every LF of the message ends a CRLF (SMTP's own line ending): the CRLF normalisation below
    # then gives back the bytes it is given, and is skipped (two counts of the message cost half
    # the two replaces per field and for the body; issue 19, P3).
    crlf = message.count(b"\n") == message.count(b"\r\n")
    headers = []
    for field in fields:
        raw = field.raw
        colon = raw.find(b":")
        if not field.name or colon != len(field.name) or raw[-1:] != b"\n":
            return None
        value = raw[colon + 1:]
        headers.append([raw[:colon], value if crlf else value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")])
    return headers, body if crlf else body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _parse(message):
    headers = []
    lines = message.replace(b"\r\n", b"\n").split(b"\n")  # = re.split(b"\r?\n", message)
    i = 0
    while i < len(lines):
        if len(lines[i]) == 0:
            i += 1  # end of the header section; the blank line is in neither part
            break
        if lines[i][0] in (0x09, 0x20):
            headers[-1][1] += lines[i] + b"\r\n"
        else:
            m = _NAME_COLON.match(lines[i])
            if m is not None:
                headers.append([m.group(1), lines[i][m.end(0):] + b"\r\n"])
            elif lines[i].startswith(b"From "):
                pass
            else:
                raise _dkim.MessageFormatError("Unexpected characters in RFC822 header: %s" % lines[i])
        i += 1
    return (headers, b"\r\n".join(lines[i:]))


def _relaxed(value: bytes) -> bytes:
    # dkimpy: re.sub(b"\r?\n", b"", v), then re.sub(b"[\t ]+", b" ", ...), strip, CRLF. Removing each
    # CRLF and then each LF removes the same bytes (a CR goes only with the LF after it); the WSP
    # pass runs only where a run is not already one SP. Every new field value of every message
    # came through here twice per sre pass (issue 19).
    if type(value) is not bytes:  # bytearray, memoryview: dkimpy's own steps
        return _WSP.sub(b" ", _LINE_BREAK.sub(b"", value)).strip() + b"\r\n"
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_TO_COMPRESS.sub(b" ", value)
    return value.strip() + b"\r\n"


_remembered = functools.lru_cache(maxsize=2048)(_relaxed)


def canonicalize_headers(headers):
    """dkim.canonicalization.Relaxed.canonicalize_headers: [(name, value)] → relaxed pairs."""
    return [(x[0].lower().rstrip(),
             _remembered(x[1]) if type(x[1]) is bytes and len(x[1]) <= MAX_REMEMBERED else _relaxed(x[1]))
            for x in headers]


_bodies: list[tuple[bytes, bytes]] = []  # (body, its relaxed form), newest last


def canonicalize_body(body):
    """dkim.canonicalization.Relaxed.canonicalize_body (RFC 6376 §3.4.4). The last few bodies'
    results are kept: a sender's relaxed DKIM signature and each ARC-Message-Signature made or
    checked canonicalise the same body (a byte comparison, no hashing, finds it)."""
    if type(body) is not bytes or len(body) > MAX_PARSED_MESSAGE:
        return _relaxed_body(body)
    for seen, relaxed in reversed(tuple(_bodies)):  # a snapshot: other threads append
        if seen is body or seen == body:
            return relaxed
    relaxed = _relaxed_body(body)
    with _parsed_lock:
        _bodies.append((body, relaxed))
        del _bodies[:-PARSED_MESSAGES]
    return relaxed


def _relaxed_body(body):
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_TO_COMPRESS.sub(b" ", body)
    return _canon.correct_empty_body(_canon.strip_trailing_lines(body))


_UNFOLD = rb"\s+"
_B64_SYNTAX = rb"[\s0-9A-Za-z+/]+[\s=]*$"  # dkimpy's validate_signature_fields
_H_LIST = rb"\s*:\s*"  # dkimpy's split of an h= list
_b64_syntax = functools.lru_cache(maxsize=256)(re.compile(_B64_SYNTAX).match)


class _ReForDkimpy:
    """dkimpy's view of the `re` module: two of its calls answered faster, the rest `re`'s."""

    @staticmethod
    def sub(pattern, repl, string, count=0, flags=0):
        if pattern == _UNFOLD and repl == b"" and not count and not flags and type(string) is bytes:
            return b"".join(string.split())
        return re.sub(pattern, repl, string, count, flags)

    @staticmethod
    def match(pattern, string, flags=0):
        if pattern == _B64_SYNTAX and not flags and type(string) is bytes and len(string) <= MAX_REMEMBERED:
            return _b64_syntax(string)
        return re.match(pattern, string, flags)

    @staticmethod
    def split(pattern, string, maxsplit=0, flags=0):
        # h= split at colons with the WSP around each colon dropped; a bytes `\s` and
        # bytes.strip() know the same six bytes, and sre tried `\s*` at every offset.
        if pattern == _H_LIST and not maxsplit and not flags and type(string) is bytes:
            parts = string.split(b":")
            if len(parts) == 1:
                return parts
            return [parts[0].rstrip()] + [p.strip() for p in parts[1:-1]] + [parts[-1].lstrip()]
        return re.split(pattern, string, maxsplit, flags)

    def __getattr__(self, name: str):
        return getattr(re, name)


RE_FOR_DKIMPY = _ReForDkimpy()


def install() -> None:
    _canon.Relaxed.canonicalize_headers = staticmethod(canonicalize_headers)
    _canon.Relaxed.canonicalize_body = staticmethod(canonicalize_body)
    _dkim.RE_BTAG = RE_BTAG  # read as a module global by hash_headers and verify (dkimpy 1.1)
    _dkim.rfc822_parse = rfc822_parse  # read as a module global by DomainSigner.set_message
    _dkim.re = RE_FOR_DKIMPY  # read as a module global by validate_signature_fields and verify_sig_process


install()
