"""Header hygiene on raw message bytes (RFC 5322 §2.2, §3.6), keeping line endings as sent.

Owns: splitting a message into header fields and body without decoding it (8-bit junk and
bare-LF messages pass through untouched), removing forged trust headers before evaluation
(an `Authentication-Results` carrying our authserv-id, any `X-MXGate-*`), renaming upstream
`Authentication-Results` to `Authentication-Results-Original`, prepending folded headers,
and finding the RFC5322.From domain that DMARC aligns against.

Must not know: what the results mean, DNS, or who is trusted. Pure functions, no I/O.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters
MAX_AUTHSERV_SCAN = 998
MAX_FROM_SCAN = 8192  # far beyond a real From field; bounds the work on a hostile one
AUTH_RESULTS = b"authentication-results"  # RFC 8601 §2.2
AUTH_RESULTS_ORIGINAL = b"Authentication-Results-Original"
OUR_PREFIX = b"x-mxgate-"  # our own stamps; never believed when they arrive from outside
# The gateway's verdict stamps: kept when the message arrives through the connector locked to
# the gateway (the gateway removed any copy an outside sender had put there).
GATEWAY_STAMPS = (b"x-mxgate-spam-score", b"x-mxgate-spam-verdict", b"x-mxgate-checks")
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")  # RFC 5322 §2.2: printable US-ASCII except ":"
MEMO_BLOCK = 16384  # parsed header blocks kept (64 at most, and 16 whole answers): bounds the memos to ~2.3 MB
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")
# Lines end at LF (CRLF or bare LF), as SMTP DATA and dkimpy see them; a bare CR is data.
_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")
# Closed quoted strings and (non-nested) comments of a From value (RFC 5322 §3.2.4, §3.2.2).
_QUOTED_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\([^()]*\)')
_AT_DOMAIN = re.compile(r"@\s*([^\s<>()\[\],;:\"@\\]+|\[[^\[\]]*\])")


class _computed_once:
    """functools.cached_property without its lock (Python 3.11 takes one RLock, shared by every
    instance, on each first read): the value is a pure function of the immutable field, so two
    threads computing it at once store the same bytes."""

    def __init__(self, func):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)  # found there from now on
        return value


@dataclass(frozen=True)
class HeaderField:
    """One header field as it appeared: `raw` holds every line of it with terminators."""

    name: bytes  # lowercased; b"" for a line that is not a field (kept, never matched)
    raw: bytes

    @_computed_once
    def value(self) -> bytes:
        """The unfolded value after the colon (RFC 5322 §2.2.3), outer whitespace stripped."""
        _, _, rest = self.raw.partition(b":")
        lf = rest.find(b"\n")
        if lf < 0 or lf == len(rest) - 1:  # one line: no fold to remove (issue 19: the sub was ~1.5 µs a field)
            return rest.strip()
        # Each line end but the last is a CRLF starting a continuation line (folding as SMTP
        # carries it): the regex removes just those, strip() the last. Counted in C, not scanned
        # by sre, whose `\r?\n` has no literal to search for (issue 19: ~5 µs for an ARC-Seal).
        if rest.count(b"\r\n ") + rest.count(b"\r\n\t") == rest.count(b"\n") - (rest[-1:] == b"\n"):
            return rest.replace(b"\r\n", b"").strip()
        return _UNFOLD.sub(b"", rest).strip()


SPLIT_KEPT = 65536  # bytes: the last message split, up to this size, is split once for all its readers
_last_split: tuple = (None, None)  # (message, its _split): a bytes object is immutable, `is` finds it


def _split(message: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, blank separator line, body); separator is b"" when there is no body.

    The same message is split by each reader in turn (issue 19: the checks read the sender's head
    and the seal the stamped message, ~6 of ~10 splits per gateway message were of the object just
    split): the last one's parts are kept, and the same parts (the same objects, whose hashes the
    header parse memo then has) are returned for it."""
    global _last_split
    last = _last_split
    if last[0] is message:
        return last[1]
    parts = _split_now(message)
    if type(message) is bytes and len(message) <= SPLIT_KEPT:
        _last_split = (message, parts)  # one tuple: another thread reads the old pair or the new one
    return parts


def _split_now(message: bytes) -> tuple[bytes, bytes, bytes]:
    if message.startswith((b"\r\n", b"\n")):  # empty header section
        sep = b"\r\n" if message.startswith(b"\r\n") else b"\n"
        return b"", sep, message[len(sep):]
    end = _header_end(message)
    if end is None:
        return message, b"", b""
    head_end, body_start = end
    return message[:head_end], message[head_end:body_start], message[body_start:]


def header_length(message: bytes) -> int:
    """Bytes of the header block as split_headers cuts it, without copying the message."""
    if message.startswith((b"\r\n", b"\n")):
        return 0
    end = _header_end(message)
    return len(message) if end is None else end[0]


def _header_end(message: bytes) -> tuple[int, int] | None:
    """(end of the last header line, start of the body) at the first empty line — the first LF
    followed by LF or CRLF, as `\\r?\\n\\r?\\n` finds it — or None. bytes.find, not that regex:
    sre tries the pattern at every offset (~80 µs for a 5 KB message, four times per message
    on the mailbox's ARC path; bench P3, issue 19).

    The last few messages' answers are kept by identity: the same bytes object is cut four times
    on the mailbox's P3 path (the ARC pre-check, validate_arc, author_domains, the hygiene) and
    the two finds cost ~13 µs on a 5 KB message here (issue 19, session 6). A bytes object cannot
    change, and the one kept here cannot be freed and its id reused; other types are not kept."""
    if type(message) is not bytes or len(message) > _ENDS_MAX:
        return _find_header_end(message)
    kept = _ends
    for seen, end in kept:
        if seen is message:
            return end
    end = _find_header_end(message)
    _remember_end(message, end, kept)
    return end


_ENDS_KEPT = 4  # messages whose header end is kept (the newest first)
_ENDS_MAX = 1 << 20  # larger messages are not kept alive here
_ends: tuple[tuple[bytes, tuple[int, int] | None], ...] = ()  # rebound whole (threads read it without a lock)


def _remember_end(message: bytes, end: tuple[int, int] | None, kept: tuple) -> None:
    global _ends
    _ends = ((message, end),) + kept[:_ENDS_KEPT - 1]


def _find_header_end(message: bytes) -> tuple[int, int] | None:
    crlf = message.find(b"\n\r\n")  # SMTP's line ending first: neither search reads the body
    lf = message.find(b"\n\n", 0, len(message) if crlf < 0 else crlf + 1)  # one starting before crlf
    if lf >= 0:
        return lf + 1, lf + 2
    return None if crlf < 0 else (crlf + 1, crlf + 3)


def split_headers(message: bytes) -> tuple[bytes, bytes]:
    """(header block with each field's line endings, body); the blank line is in neither."""
    head, _, body = _split(message)
    return head, body


def line_ending(message: bytes) -> bytes:
    """The message's own line ending: CRLF unless its first line ends in a bare LF."""
    first = message.find(b"\n")
    return b"\n" if first >= 0 and (first == 0 or message[first - 1:first] != b"\r") else b"\r\n"


def parse_fields(header_block: bytes) -> tuple[HeaderField, ...]:
    """Header fields in order; continuation lines (leading SP/HTAB) stay with their field.

    One message's header block is read by several checks, the stamping and the seal (issue 19:
    seven parses per message on the gateway): recent blocks up to MEMO_BLOCK bytes are parsed
    once. The fields are immutable, so sharing them is safe."""
    if len(header_block) <= MEMO_BLOCK:
        return _parse_block_memo(bytes(header_block))
    return _parse_fields(header_block)


_BLANK_LINES = (b"\r\n", b"\n")


@functools.lru_cache(maxsize=16)
def _parse_block_memo(block: bytes) -> tuple[HeaderField, ...]:
    # Each block's answer at once, before the blank-line cut below (issue 19: a P3 gateway
    # message has nine parse_fields reads of two or three equal blocks; the cut copied the block,
    # hashed the copy and built the tuple again each time, ~1.3 µs a read of a head with its
    # blank line against ~0.5 without).
    # The same block with and without its blank line (a MessageSource's head keeps it,
    # split_headers drops it): one parse for both (issue 19: two per gateway message). The
    # blank line after a line's end is a last field of its own, with no name.
    for blank in _BLANK_LINES:
        if block.endswith(blank) and len(block) > len(blank) and block[-len(blank) - 1] == 0x0A:
            return _parse_fields_memo(block[:-len(blank)]) + (HeaderField(b"", blank),)
    return _parse_fields_memo(block)


@functools.lru_cache(maxsize=64)
def _parse_fields_memo(header_block: bytes) -> tuple[HeaderField, ...]:
    seeded = _seeded.pop(header_block, None)  # a parse remember_prepended built: taken once, then memoised
    return seeded if seeded is not None else _parse_fields(header_block)


_seeded: dict[bytes, tuple[HeaderField, ...]] = {}
SEEDED_MAX = 8  # blocks seeded and not yet read: a few messages in flight


def remember_prepended(prefix: bytes, head: bytes) -> bool:
    """Keep parse_fields' answer for the header block of `prefix + head + body` (what
    split_headers cuts from it), built from the parse of `head` already made and one of
    `prefix`: the gateway puts its fields on top of a message whose head every check has read,
    and the seal reads the stamped head again (issue 19: a second parse of the whole head per
    message). Only where the two parses are that one parse: `prefix` whole lines with no empty
    one, `head` a header block ending in its blank line (a MessageSource's head) whose first line
    is not a continuation (it would join the prefix's last field) nor empty: split_headers then
    cuts exactly `prefix` + the block of `head`. False otherwise (nothing kept: parse_fields
    parses it)."""
    # No empty line in `prefix`, which ends a line, and `head` starting with a field's first line:
    # the first empty line of prefix + head + body is then the one that ends `head`.
    if not prefix.endswith(b"\n") or b"\n\n" in prefix or b"\n\r\n" in prefix or prefix.startswith((b"\r\n", b"\n")):
        return False
    if not head or head[:1] in (b" ", b"\t", b"\r", b"\n"):
        return False
    inner, blank, rest = _split(head)
    if not blank or rest or len(prefix) + len(inner) > MEMO_BLOCK:  # `head` must end in its blank line
        return False
    block = prefix + inner
    fields = _parse_fields(prefix) + parse_fields(inner)
    if len(_seeded) >= SEEDED_MAX:
        _seeded.clear()
    _seeded[block] = fields
    return True


def _parse_fields(header_block: bytes) -> tuple[HeaderField, ...]:
    # The lines `_LINE.findall` cuts (each up to its LF, then any unterminated rest), by
    # bytes.split; each field built once with all its lines (issue 19: ~55 -> ~30 µs for the
    # 35 lines of a P3 mailbox message's header block).
    lines = header_block.split(b"\n")
    rest = lines.pop()
    lines = [line + b"\n" for line in lines]
    if rest:
        lines.append(rest)
    fields: list[HeaderField] = []
    name, raw = b"", None
    for line in lines:
        if line[:1] in (b" ", b"\t") and raw is not None:
            raw.append(line)
            continue
        if raw is not None:
            fields.append(HeaderField(name, b"".join(raw)))
        field_name, colon, _ = line.partition(b":")
        field_name = field_name.rstrip(b" \t")  # RFC 5322 §4.5.3 obs-optional: WSP before the colon
        name = field_name.lower() if colon and _FIELD_NAME.match(field_name) else b""
        raw = [line]
    if raw is not None:
        fields.append(HeaderField(name, b"".join(raw)))
    return tuple(fields)


def authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2), normalised.

    Leading comments are skipped, a quoted id is unquoted; lowercased, trailing dot removed.
    """
    # Bounded: a value stuffed with comments is not ours either way, and is then renamed
    # (never trusted) instead of dropped. 998 = RFC 5322 §2.1.1 line limit.
    text = value[:MAX_AUTHSERV_SCAN].decode("utf-8", "replace")
    while True:  # drop leading CFWS, including nested comments
        text = text.lstrip(" \t\r\n")
        if not text.startswith("("):
            break
        depth, i = 0, 0
        for i, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                break
        text = text[i + 1:]
    if text.startswith('"'):
        ident = text[1:].split('"', 1)[0].replace("\\", "")
    else:
        ident = re.split(r"[;\s(]", text, maxsplit=1)[0]
    return ident.strip().rstrip(".").lower()


def sanitize_inbound_headers(message: bytes, authserv_id: str, keep: tuple[bytes, ...] = ()) -> bytes:
    """Drop forged trust headers, keep upstream results under a new name (RFC 8601 §5).

    `keep` names X-MXGate-* fields (lower case) to leave in place: only for a trusted hop."""
    head, sep, body = _split(message)
    lowered = head.lower()
    if OUR_PREFIX not in lowered and AUTH_RESULTS not in lowered:
        # No field can be dropped or renamed, and the fields joined are `head` again: the message
        # as it came (issue 19, bench P1: most messages carry neither).
        return bytes(message)  # the same object when it is bytes
    return _sanitized_fields(head, authserv_id, keep) + sep + body


def _sanitized_fields(head: bytes, authserv_id: str, keep: tuple[bytes, ...]) -> bytes:
    ours = authserv_id.strip().rstrip(".").lower()
    out: list[bytes] = []
    for field in parse_fields(head):
        if field.name.startswith(OUR_PREFIX) and field.name not in keep:
            continue
        if field.name == AUTH_RESULTS:
            if authserv_id_of(field.value) == ours:
                continue  # claims to be our own verdict: a forgery from outside
            out.append(AUTH_RESULTS_ORIGINAL + field.raw[field.raw.index(b":"):])
            continue
        out.append(field.raw)
    return b"".join(out)


_NOT_A_FOLD = re.compile(rb"\r(?!\n)|(?<!\r)\n(?![ \t])|\r\n(?![ \t])")
_FOLD_POINTS = re.compile(rb"(?<=\S)(?=[ \t])")


@functools.lru_cache(maxsize=1024)  # pure; our stamps repeat from message to message
def fold_header(name: str, value: str, eol: bytes = b"\r\n") -> bytes:
    """ "Name: value" + eol, folded at whitespace so lines stay within 78 where possible.

    A value that already contains folds (e.g. a DKIM-Signature from dkimpy) keeps them,
    normalised to `eol`; a bare CR or LF not followed by whitespace is header injection.
    """
    raw_name = name.encode("ascii")
    if not _FIELD_NAME.match(raw_name):
        raise ValueError(f"invalid header field name {name!r}")
    raw = value.encode("utf-8")  # RFC 6532 allows UTF-8; our own values are ASCII
    # Without CR or LF (every value we compose) neither the injection check nor the re-fold
    # below can match: both skipped (issue 19: fold_header misses its memo for every message
    # whose results carry a per-message header.b).
    if (b"\r" in raw or b"\n" in raw) and _NOT_A_FOLD.search(raw.rstrip(b"\r\n")):
        raise ValueError(f"header {name} value contains a line break that is not a fold")
    raw = raw.rstrip(b"\r\n")
    if b"\n" in raw:
        return raw_name + b": " + re.sub(rb"\r?\n", eol, raw.lstrip()) + eol
    lines: list[bytes] = []
    current = raw_name + b":"
    for word in _FOLD_POINTS.split(b" " + raw.lstrip()):
        if len(current) + len(word) > MAX_LINE and current.strip() and len(current) > len(raw_name) + 1:
            lines.append(current)
            current = b""
        current += word
    lines.append(current)
    return eol.join(lines) + eol


def prepend_headers(message: bytes, headers: list[tuple[str, str]]) -> bytes:
    """Put `headers` on top of the message, in the given order, folded, in its line ending."""
    eol = line_ending(message)
    return b"".join(fold_header(name, value, eol) for name, value in headers) + message


def author_domains(message: bytes) -> tuple[str, ...]:
    """Every RFC5322.From domain a reader could take for the author, as written (in order,
    duplicates dropped; the caller normalises to A-labels).

    Covers several From fields and several addresses (RFC 7489 §6.6.1), and a From whose
    syntax is broken: every `@domain` outside closed quoted strings and comments counts
    (RFC 5322 §3.4: a display name cannot hold a bare `@`), so a malformed field — which a
    strict parser would drop and a mail client may still display — never hides an author.
    """
    head, _ = split_headers(message)
    found: list[str] = []
    for field in parse_fields(head):
        if field.name != b"from":
            continue
        value = field.value
        for domain in _from_domains(value) if len(value) <= _FROM_MEMO else _from_domains_now(value):
            if domain not in found:
                found.append(domain)
    return tuple(found)


def _from_domains_now(value: bytes) -> tuple[str, ...]:
    """Every `@domain` of one From value (author_domains' rule), in order, with repeats."""
    out = []
    for domain in _AT_DOMAIN.findall(_QUOTED_OR_COMMENT.sub(" ", value.decode("utf-8", "replace")[:MAX_FROM_SCAN])):
        domain = domain.strip().strip("[]").rstrip(".").lower()
        if domain:  # 8-bit junk kept: DMARC reads its skeleton
            out.append(domain)
    return tuple(out)


# Pure on the value: a sender's From repeats message after message (issue 19: two regex passes
# per gateway message). Values up to one line's length (RFC 5322 §2.1.1) are remembered.
_FROM_MEMO = 998
_from_domains = functools.lru_cache(maxsize=1024)(_from_domains_now)


def header_from_domain(message: bytes) -> str | None:
    """The RFC5322.From domain, or None when there is not exactly one From field with
    exactly one author domain (DMARC then uses `author_domains`, RFC 7489 §6.6.1)."""
    head, _ = split_headers(message)
    if sum(1 for f in parse_fields(head) if f.name == b"from") != 1:
        return None
    domains = author_domains(message)
    return domains[0] if len(domains) == 1 and " " not in domains[0] and "\ufffd" not in domains[0] else None
