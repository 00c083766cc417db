"""Parse `Received:` header values into the facts enhanced filtering needs.

Owns: unfolding the Received headers out of a header block (`received_values`) and
reading one header value into a `ReceivedHop` (`parse_received`): the HELO name, the
reverse-DNS name and the relay's address literal from the TCP-info comment, plus the
`by`, `with` and `for` clauses (RFC 5321 §4.4, RFC 3848).

Must not know: which hops are trusted (that is `auth/skiplist.py`), DNS, sockets, clocks.
Every input is hostile text: nothing here raises, and work per header is linear in a
capped length (`MAX_RECEIVED_CHARS`); the tokenizer is one regex with no nested
quantifiers, so it cannot backtrack catastrophically.

How the relay address is chosen, in order (the HELO text never supplies it):
1. the first comment of the `from` clause that carries an address: Postfix
   `(rdns [ip])`, Exim `([ip]:port helo=x)`, Exchange/qmail bare `(ip)`, qmail
   `(user@ip)`; nested comments such as `(may be forged)` are ignored;
2. otherwise an address literal standing bare in the `from` clause after the HELO
   (`from name [ip] by ...`, QMQP style);
3. otherwise the `from` domain itself when it is an address (`from [ip] (helo=x)`,
   `from 192.0.2.10 by ...`) — only when nothing else is present.
The HELO is the value of an explicit `HELO x` / `helo=x` marker in a `from` comment
(qmail, Exim, CommuniGate), else the `from` domain as written.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mxgate.names import IPAddress, normalize_ip


# Real Received headers are a few hundred characters; anything past this is junk or an
# attack on our CPU. Bounds the work per header.
MAX_RECEIVED_CHARS = 4096
# RFC 4291 §2.2 text form is at most 45 chars; zone ids and ports add a little.
MAX_LITERAL_CHARS = 80
# rDNS placeholders MTAs write when the PTR lookup failed (Postfix `unknown`,
# Courier/others `softdnserr`); they are not names.
RDNS_PLACEHOLDERS = frozenset({"unknown", "softdnserr"})
# RFC 5321 §4.4 clause keywords, in their RFC order.
CLAUSE_KEYWORDS = ("from", "by", "via", "with", "id", "for")

# One token per match: parentheses (nesting tracked by the caller), an address literal
# with an optional `:port` (Exim, CommuniGate), an angle path, `;`, a word, or a stray
# bracket. Character classes only, so matching is linear.
_TOKEN = re.compile(
    r"""
      (?P<open>\()
    | (?P<close>\))
    | (?P<literal>\[[^\[\]()<>\s]*\](?::\d{1,5})?)
    | (?P<angle><[^<>()]*>)
    | (?P<semi>;)
    | (?P<word>[^\s()\[\]<>;]+)
    | (?P<stray>[\[\]<>])
    """,
    re.VERBOSE,
)
_HEADER_NAME = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$", re.DOTALL)
_PORT_SUFFIX = re.compile(r"^(.*\]):\d{1,5}$")


@dataclass(frozen=True)
class ReceivedHop:
    """What one Received header says about the hop it records."""

    from_helo: str | None
    rdns: str | None
    ip: IPAddress | None
    by: str | None
    with_proto: str | None
    for_addr: str | None
    has_from: bool


@dataclass(frozen=True)
class _Token:
    kind: str  # "literal" | "angle" | "word" | "comment"
    text: str
    words: tuple[str, ...] = ()  # for comments: the depth-1 tokens, nested ones dropped


def received_values(header_block: bytes | str) -> list[str]:
    """Return the unfolded values of every Received header, top (newest) first.

    Accepts a header block or a whole message (stops at the first empty line), with
    CRLF or bare-LF line ends (RFC 5322 §2.2.3 unfolding: a line starting with WSP
    continues the previous one). Bytes that are not UTF-8 are read as Latin-1, so no
    surrogates leak out and nothing raises.
    """
    text = _decode(header_block)
    values: list[str] = []
    current: list[str] | None = None
    length = 0
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if line == "" or line == "\r":
            break  # end of the header section (RFC 5322 §2.1)
        if line[0] in " \t":
            if current is not None and length < MAX_RECEIVED_CHARS:
                current.append(line)
                length += len(line)
            continue
        if current is not None:
            values.append(_finish(current))
            current = None
        match = _HEADER_NAME.match(line[:MAX_RECEIVED_CHARS])
        if match and match.group(1).lower() == "received":
            current = [match.group(2)]
            length = len(current[0])
    if current is not None:
        values.append(_finish(current))
    return values


def parse_received(value: str) -> ReceivedHop:
    """Read one Received header value (without the `Received:` name). Never raises."""
    try:
        return _parse(value)
    except Exception:  # defence in depth: a parser bug must not become a 451 storm
        return ReceivedHop(None, None, None, None, None, None, False)


def parse_ip_literal(text: str) -> IPAddress | None:
    """Read an address as MTAs write it: `[1.2.3.4]`, `[1.2.3.4]:25`, `[IPv6:...]`,
    `fe80::1%7`, `user@1.2.3.4`, `10.0.8.6.13219` (port after a fifth dot).
    IPv4-mapped IPv6 becomes IPv4 so one host has one identity. None if not an address."""
    if len(text) > MAX_LITERAL_CHARS:
        return None
    s = text.strip()
    if "@" in s:
        s = s.rsplit("@", 1)[1]
    port = _PORT_SUFFIX.match(s)
    if port:
        s = port.group(1)
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    if s[:5].lower() == "ipv6:":  # RFC 5321 §4.1.3 IPv6-address-literal tag
        s = s[5:]
    s = s.split("%", 1)[0]  # RFC 4007 §11 zone id: meaningless off-link
    address = _try_address(s)
    if address is None and s.count(".") == 4:
        address = _try_address(s.rsplit(".", 1)[0])  # `a.b.c.d.port`
    if address is None and s.count(":") == 1 and "." in s:
        address = _try_address(s.split(":", 1)[0])  # bare `a.b.c.d:port`
    return address


def _try_address(s: str) -> IPAddress | None:
    if not s:
        return None
    try:
        return normalize_ip(ipaddress.ip_address(s))
    except ValueError:
        return None


def _decode(block: bytes | str) -> str:
    if isinstance(block, str):
        return block
    try:
        return bytes(block).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(block).decode("latin-1")  # total: every byte maps to a character


def _finish(pieces: list[str]) -> str:
    return "".join(pieces)[:MAX_RECEIVED_CHARS].strip()


def _tokenize(value: str) -> list[_Token]:
    """Top-level tokens up to the `;` before the date; comments become one token."""
    tokens: list[_Token] = []
    depth = 0
    comment: list[str] = []
    for match in _TOKEN.finditer(value[:MAX_RECEIVED_CHARS]):
        kind = match.lastgroup or "stray"
        text = match.group()
        if kind == "open":
            depth += 1
            continue
        if kind == "close":
            if depth == 1:
                tokens.append(_Token("comment", "", tuple(comment)))
                comment = []
            depth = max(depth - 1, 0)
            continue
        if depth == 1 and kind in ("literal", "word", "angle"):
            comment.append(text)
        elif depth == 0:
            if kind == "semi":
                break  # RFC 5321 §4.4: `;` then the date, which we do not need
            if kind != "stray":
                tokens.append(_Token(kind, text))
    if depth > 0 and comment:  # unclosed comment: keep what it said
        tokens.append(_Token("comment", "", tuple(comment)))
    return tokens


def _clauses(tokens: list[_Token]) -> dict[str, list[_Token]]:
    """Split tokens into clauses; the token right after a keyword always belongs to it,
    so a HELO of `by` or `with` cannot start a clause."""
    clauses: dict[str, list[_Token]] = {}
    current: list[_Token] | None = None
    for token in tokens:
        key = token.text.lower() if token.kind == "word" else ""
        if key in CLAUSE_KEYWORDS and key not in clauses and (current is None or current):
            current = clauses[key] = []
            continue
        if current is not None:
            current.append(token)
    return clauses


def _parse(value: str) -> ReceivedHop:
    clauses = _clauses(_tokenize(value.replace("\r", " ").replace("\n", " ")))
    helo, rdns, ip = None, None, None
    if "from" in clauses:
        helo, rdns, ip = _read_from(clauses["from"])
    return ReceivedHop(
        from_helo=helo,
        rdns=rdns,
        ip=ip,
        by=_first_text(clauses.get("by")),
        with_proto=_upper(_first_text(clauses.get("with"))),
        for_addr=_read_for(clauses.get("for")),
        has_from="from" in clauses,
    )


def _read_from(tokens: list[_Token]) -> tuple[str | None, str | None, IPAddress | None]:
    head = tokens[0] if tokens and tokens[0].kind != "comment" else None
    rest = tokens[1:] if head is not None else tokens
    marker_helo = None
    ip, rdns = None, None
    for token in rest:
        if token.kind != "comment":
            continue
        found_ip, found_rdns, found_helo = _read_comment(token.words)
        marker_helo = marker_helo or found_helo
        if ip is None and found_ip is not None:
            ip, rdns = found_ip, found_rdns
        elif rdns is None and ip is None and found_rdns is not None and found_helo is None:
            rdns = found_rdns  # a name-only comment: `from helo (rdns) [ip]`
    if ip is None:
        ip = next((a for t in rest if t.kind != "comment" and (a := parse_ip_literal(t.text))), None)
    head_text = _strip_port(head.text) if head is not None else None
    if ip is None and head_text is not None:
        ip = parse_ip_literal(head_text)  # `from [ip]` with no TCP-info at all
    if marker_helo is not None:
        # qmail/Exim/CommuniGate: `from <rdns> (HELO helo)`, so the head is the rDNS name.
        helo = marker_helo
        rdns = rdns or (_name(head_text) if head_text and parse_ip_literal(head_text) is None else None)
    else:
        helo = head_text
    return helo, rdns, ip


def _read_comment(words: tuple[str, ...]) -> tuple[IPAddress | None, str | None, str | None]:
    """One `from`-clause comment → (address, rDNS name before it, HELO marker value)."""
    ip, rdns, helo = None, None, None
    previous: str | None = None
    for index, word in enumerate(words):
        lowered = word.lower()
        if lowered.startswith("helo="):
            helo = helo or word[5:] or _at(words, index + 1)
        elif lowered == "helo":
            helo = helo or _at(words, index + 1)
        elif ip is None:
            found = parse_ip_literal(word)
            if found is not None:
                ip = found
                rdns = _name(previous) if previous is not None else None
        if index > 0 and words[index - 1].lower() == "helo":
            previous = None  # the HELO value is not an rDNS name
        else:
            previous = word if not lowered.startswith("helo=") else None
    if ip is None and len(words) == 1 and helo is None:
        rdns = _name(words[0])
    return ip, rdns, helo


def _name(word: str | None) -> str | None:
    """An rDNS name as written: `IDENT:user@host` → host, trailing dot stripped,
    placeholders and address literals → None."""
    if not word:
        return None
    if word[:6].upper() == "IDENT:":
        word = word[6:]
    word = word.rsplit("@", 1)[-1].rstrip(".")
    if not word or word.lower() in RDNS_PLACEHOLDERS or word.startswith("["):
        return None
    if parse_ip_literal(word) is not None or "=" in word or ":" in word:
        return None
    return word


def _read_for(tokens: list[_Token] | None) -> str | None:
    text = _first_text(tokens)
    if text is None:
        return None
    text = text.strip("<>").strip()
    return text or None


def _first_text(tokens: list[_Token] | None) -> str | None:
    if not tokens or tokens[0].kind == "comment":
        return None
    return tokens[0].text


def _at(words: tuple[str, ...], index: int) -> str | None:
    return words[index] if index < len(words) else None


def _strip_port(text: str) -> str:
    match = _PORT_SUFFIX.match(text)
    return match.group(1) if match else text


def _upper(text: str | None) -> str | None:
    return text.upper() if text else None
