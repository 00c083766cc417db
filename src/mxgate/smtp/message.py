"""Small, fast reads and writes of a message's header block for the SMTP path.

Owns: finding the header block, counting Received headers (loop detection), pulling Subject
and Message-ID for the trace, and composing our own Received header (RFC 5321 §4.4). Full
header hygiene for authentication lives in auth/headers.py.
"""

from __future__ import annotations

import email.utils
import functools
import re
import time

_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
_SAFE_TOKEN = re.compile(r"[^A-Za-z0-9.\-_:\[\]@]")
_VALUE_OF: dict[str, re.Pattern[bytes]] = {}  # header name -> its first-value pattern (a handful of names)


def header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        return b""
    return data if end < 0 else data[: end + 2]


def continues_no_field(headers: bytes) -> bool:
    """Whether the header block's first line starts with a space or a tab: a continuation of no
    field (RFC 5322 §2.2.3). Under the fields a relay puts on top it would continue the last of
    them — our own Received, which the next hop's enhanced filtering trusts (auth/received.py)."""
    return headers[:1] in (b" ", b"\t")


def count_received(headers: bytes) -> int:
    return sum(1 for at in _line_starts(headers.lower(), b"received") if _RECEIVED.match(headers, at))


def _line_starts(lowered: bytes, key: bytes):
    """Offsets, in order, of the lines of `lowered` (a header block, lower-cased) that begin with
    `key`: where a `^key` MULTILINE | IGNORECASE search can match. Found by bytes.find because
    sre tries such a pattern at every offset (~40 µs per search of a 5 KB block; two to four per
    message: issue 19, bench P3)."""
    if lowered.startswith(key):
        yield 0
    needle = b"\n" + key
    at = lowered.find(needle)
    while at >= 0:
        yield at + 1
        at = lowered.find(needle, at + 1)


def header_value(headers: bytes, name: str) -> str:
    """First value of a header, unfolded, decoded leniently; "" when absent. (The value
    stops at CR or LF, not at LF only: a greedy `.` took the first line's CR and lost the fold.)"""
    return _first_value(headers, headers.lower(), name)


def header_values(headers: bytes, *names: str) -> tuple[str, ...]:
    """`header_value` of each name, the block lower-cased once for all of them (the trace reads
    Subject and Message-ID of every message: issue 19, bench P3)."""
    lowered = headers.lower()
    return tuple(_first_value(headers, lowered, name) for name in names)


def _first_value(headers: bytes, lowered: bytes, name: str) -> str:
    pattern = _VALUE_OF.get(name)
    if pattern is None:
        pattern = _VALUE_OF[name] = re.compile(rb"^" + re.escape(name.encode()) + rb"[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)",
                                                re.IGNORECASE | re.MULTILINE)
    m = next(filter(None, (pattern.match(headers, at) for at in _line_starts(lowered, name.lower().encode()))), None)
    if not m:
        return ""
    return decode_words(m.group(1).replace(b"\r\n", b"").strip().decode("utf-8", "replace"))


def decode_words(text: str) -> str:
    """`text` with its RFC 2047 encoded words decoded, as a reader shows it; text without any,
    or with words the stdlib cannot decode (an unknown charset, a bad byte), as written."""
    if "=?" not in text:  # no encoded word (RFC 2047 §2): decode_header would return it as is
        return text
    try:
        from email.header import decode_header, make_header

        return str(make_header(decode_header(text)))
    except Exception:
        return text


def safe_token(text: str, limit: int = 255) -> str:
    """A HELO or similar peer-chosen token made safe to place in a header comment."""
    return _SAFE_TOKEN.sub("?", text)[:limit]


def received_header(*, helo: str, peer_ip: str, by: str, protocol: str, trace_id: str, recipient: str | None,
                    tls: str = "", connector: str = "", now: float | None = None) -> bytes:
    value = _received_head(helo, peer_ip, by, protocol, tls, connector) + trace_id
    # A quoted local part (RFC 5321 §4.1.2) may hold `(ip) by host (Postfix)`: written after our
    # `by`, it would be read as a hop of its own by the next walk (auth/received.py). The `for`
    # clause is optional (RFC 5321 §4.4): a dot-atom recipient only.
    if recipient and '"' not in recipient:
        value += f"\r\n\tfor <{recipient}>"
    value += "; " + _date(int(now or time.time()))
    return b"Received: " + value.encode("utf-8", "replace") + b"\r\n"


@functools.lru_cache(maxsize=256)
def _received_head(helo: str, peer_ip: str, by: str, protocol: str, tls: str, connector: str) -> str:
    """Our Received value up to its id: the same for every message of a session (issue 19, bench
    P1: composed anew per message). Pure; the HELO is peer-chosen, hence the bound."""
    ip_literal = f"IPv6:{peer_ip}" if ":" in peer_ip else peer_ip
    parts = [f"from {safe_token(helo or 'unknown')} ([{ip_literal}])"]
    if tls:
        parts.append(f"({tls})")
    parts.append(f"by {by} (mxgate)")
    if connector:
        parts.append(f"(connector {safe_token(connector.replace(' ', '_'), 64)})")
    parts.append(f"with {protocol} id ")
    return "\r\n\t".join(parts)


_last_date: tuple[int, str] = (-1, "")  # (second, its date); one tuple, rebound whole (threads)


def _date(second: int) -> str:
    """RFC 5322 §3.3 date-time of a Received field (whole seconds), formatted once per second."""
    global _last_date
    cached = _last_date
    if cached[0] != second:
        cached = _last_date = (second, email.utils.formatdate(second, usegmt=True))
    return cached[1]


def protocol_name(esmtp: bool, tls: bool, auth: bool) -> str:
    """RFC 3848 'with' values."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if auth else "")
