"""Parse `Received:` header values into the facts enhanced filtering needs.

Owns: unfolding the Received headers out of a header block (`received_values`) and
reading one header value into a `ReceivedHop` (`parse_received`): the HELO name, the
reverse-DNS name and the relay's address literal from the TCP-info comment, plus the
`by`, `with` and `for` clauses (RFC 5321 §4.4, RFC 3848).

Must not know: which hops are trusted (that is `auth/skiplist.py`), DNS, sockets, clocks.
Every input is hostile text: nothing here raises, and work per header is linear in a
capped length (`MAX_RECEIVED_CHARS`); the tokenizer is one regex with no nested
quantifiers, so it cannot backtrack catastrophically.

How the peer (the TCP client the writing MTA recorded) is found — the sender chooses the
HELO/EHLO argument, an AUTH identity, a client-certificate name, an ident reply, and with
some MTAs (Postfix, qmail) that text may hold spaces, parentheses, ` by ` or `;`:
1. The date is cut at the *last* top-level `;`, and the `from` part ends at the *last*
   top-level `by`: the MTA writes both after the sender's text.
2. The MTA family is read from the `by` part (the MTA's own words: `(Postfix)`, `(Exim 4.96)`,
   `(8.17.1/8.17.1)`, `with Microsoft SMTP Server`, `mx.google.com`, ...).
3. Unbalanced parentheses anywhere in the header mean the sender's text moved the MTA's own
   comments: no peer (the skip-list walk stops there).
4. Marked sender text is never an address: `helo=x`, `HELO x`, `EHLO x`, `claiming to be "x"`,
   `account u`, `Authenticated sender:`, `AUTH:`, `Client CN` — nor anything after the marker.
5. Families that write the peer first and the HELO after it (Exim `([ip]:port helo=x)`,
   CommuniGate `[ip] (account u HELO x)`, ecelerity): the first address before any marker,
   else the `from [ip]` itself. The others we know (Postfix, Sendmail/Proofpoint, Exchange,
   Gmail, Courier, Domino, Mimecast, Barracuda, IronPort, GMX/IONOS, mxgate) write the HELO
   first: the *last* TCP-info element, a comment (`(rdns [ip])`, `(ip)`, `(user@ip)`,
   `([ip] verified)`, at most three words) or a bare `[ip]` (`(EHLO x) [ip]`, QMQP).
6. `from [ip] by ...` with nothing else is the peer only for families that do not always
   write TCP-info (webmail `from ip by ... with HTTP`); for Postfix and the like it is the HELO.
7. An MTA not recognised (qmail and MessageLabs write nothing after `by` to know them by) is
   read both ways; if the readings name different addresses, the header is unreadable.
8. Envelope addresses are the sender's text too, written after `by` (`for <path>`, Exim's and
   Haraka's `envelope-from <path>`): the family is read without them, and a quoted string from
   the first `by` on that holds parentheses, angle brackets or a `by` (a quoted local part
   carrying a fake clause) makes the header unreadable.
The HELO reported is the marker's value (qmail, Exim, CommuniGate, GMX), else the `from` word.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import NamedTuple

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
# TCP-info is `[ip]`, `rdns [ip]`, `IDENT:u@rdns [ip] (may be forged)`, `[ip] verified`:
# a comment with more words is prose (TLS details, a client certificate), never the peer.
MAX_TCP_INFO_WORDS = 3
# Words MTAs write next to the peer address that are not names.
_PEER_QUALIFIERS = frozenset({"verified", "unverified", "rdns", "failed", "may", "be", "forged"})
# Text the sender chose, recorded by the MTA next to the TCP-info: the HELO/EHLO argument,
# an AUTH identity, a certificate name, an envelope address. Nothing at or after one of
# these in a comment is ever read as the peer (adversarial.md §9).
_SENDER_TEXT_WORDS = frozenset({
    "helo", "ehlo", "lhlo", "account", "claiming", "authenticated", "auth:", "auth", "client",
    "using", "envelope-from", "envelope-sender", "squirrelmail", "nasmail", "sasl", "user",
    "login", "plain", "cram-md5",
})
_SENDER_TEXT_PREFIXES = ("helo=", "ehlo=", "ident=", "auth=", "authenticated", "envelope-",
                         "smtp.auth=", "user=", "x509=", "cn=")
# MTA families (identified by what they write after `by`, which the sender cannot reach):
# (family, by-host suffixes, signatures in the by part).
_FAMILIES: tuple[tuple[str, tuple[str, ...], tuple[re.Pattern[str], ...]], ...] = (
    ("mxgate", (), (re.compile(r"^mxgate\b"),)),
    ("postfix", (), (re.compile(r"^postfix\b"),)),
    ("exim", (), (re.compile(r"\bexim\b"),)),
    ("communigate", (), (re.compile(r"\bcommunigate\b"),)),
    ("ecelerity", (), (re.compile(r"\becelerity\b"),)),
    ("obtuse", (), (re.compile(r"\bid smtpd"),)),  # Obtuse smtpd: `host(ip), claiming to be "x" via SMTP`
    ("sendmail", (".pphosted.com", ".ppe-hosted.com"), (re.compile(r"^\d+\.\d+[\w.]*/[\w./-]+"),)),
    ("exchange", (".outlook.com", ".office365.com", ".protection.outlook.com"),
     (re.compile(r"microsoft smtp ?(server|svc)"), re.compile(r"\bwith mapi\b"))),
    ("gmail", ("google.com",), ()),
    ("domino", (), (re.compile(r"\bdomino\b"),)),
    ("courier", (), (re.compile(r"^courier\b"),)),
    ("mimecast", (".mimecast.com", ".mimecast-offshore.com"), ()),
    ("barracuda", (".barracudanetworks.com", ".cudamail.com"), (re.compile(r"\bbarracuda\b"),)),
    ("ironport", (".iphmx.com",), (re.compile(r"\bironport\b"),)),
    ("gmx", ("gmx.net", "gmx.com", "web.de", "kundenserver.de", "perfora.net", "ionos.com"),
     (re.compile(r"\bnemesis\b"), re.compile(r"^mp\d+$"))),
)
# Families that write the peer first and the sender's HELO after it (`[ip]:port helo=x`,
# `[ip] (account u HELO x)`): past the first marker everything is the sender's text.
_HELO_LAST_FAMILIES = frozenset({"exim", "communigate", "ecelerity", "obtuse"})
# Families that always write TCP-info in a comment: a bare `from [x]` there is the HELO.
_TCP_INFO_FAMILIES = frozenset({"mxgate", "postfix", "sendmail", "exchange", "gmail", "courier", "mimecast",
                                "barracuda", "ironport", "domino"})

# One token per match: parentheses (nesting tracked by the caller), an address literal
# with an optional `:port` (Exim, CommuniGate), an angle path, `;`, a word, or a stray
# bracket. Character classes only, so matching is linear. No groups: `findall` returns the
# lexemes themselves, and each alternative starts with its own characters (`_kind`).
_TOKEN = re.compile(
    r"""
      \(
    | \)
    | \[[^\[\]()<>\s]*\](?::\d{1,5})?
    | <[^<>()]*>
    | ;
    | [^\s()\[\]<>;]+
    | [\[\]<>]
    """,
    re.VERBOSE,
)
_STRAYS = frozenset("[]<>")
_NOT_WORDS = frozenset(";[]<>")
_HEADER_NAME = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$", re.DOTALL)
_PORT_SUFFIX = re.compile(r"^(.*\]):\d{1,5}$")
_WRAPPED_FROM = re.compile(r"^\s*\(\s*(?i:from)\s+([^()]*)\)")


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
    family: str | None = None  # the MTA family recognised from its `by` clause
    note: str = ""  # why a `from` hop has no peer address (empty when it has one)


class _Token(NamedTuple):  # a tuple: a dozen per header, a frozen dataclass cost ~1 µs each
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
    if isinstance(header_block, bytes) and header_block.isascii():
        # Only the Received lines and their continuations go through the loop below, found
        # with C-speed searches (issue 19: ~18 µs a message went on splitting and stepping
        # over every header line). ASCII only: a non-ASCII block decodes as a whole (UTF-8
        # or Latin-1), so it takes the loop. test_received_fastpath compares the two.
        return _unfold(_received_lines(header_block))
    return _unfold(_decode(header_block))


# A line starting with "received" (any case), or the first empty line, which ends the header
# section: empty once one CR before its LF is dropped (an empty line, "\r" or "\r\r" as
# _unfold reads lines). One at the very end needs no match: nothing can follow it.
_RECEIVED_OR_END = re.compile(rb"\n(?:((?i:received))|\r{0,2}\n)")


def _received_lines(block: bytes) -> str:
    """The lines of an ASCII header block that `_unfold` can take a Received value from: each
    line starting with "received" (any case) and its continuation lines, joined by LF."""
    block = b"\n" + block  # every line now follows a LF, the first one too
    segments = []
    found = _RECEIVED_OR_END.search(block)
    while found is not None and found.lastindex:  # not the end of the header section
        start = found.start() + 1
        stop = block.find(b"\n", start)
        while stop >= 0 and block[stop + 1:stop + 2] in (b" ", b"\t"):  # RFC 5322 §2.2.3 folding
            stop = block.find(b"\n", stop + 1)
        if stop < 0:
            segments.append(block[start:])
            break
        segments.append(block[start:stop])
        found = _RECEIVED_OR_END.search(block, stop)
    return b"\n".join(segments).decode("ascii")


def _unfold(text: str) -> list[str]:
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
        # The name is ASCII and starts the line: a line whose first 8 characters do not
        # lower-case to "received" cannot be one, and most header lines stop here.
        if line[:8].lower() != "received":
            continue
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
        return _ours(value) or _parse(value)
    except Exception:  # defence in depth: a parser bug must not become a 451 storm
        return ReceivedHop(None, None, None, None, None, None, True, None, "parser error")


# mxgate's own Received field (smtp/message.received_header) in its plain form, every piece in a
# charset where no word is a sender-text marker, a clause keyword, a bracket or a `;`: what
# `_parse` answers for it is read off the match (issue 19: the walk of a message relayed by our
# gateway, ~20 µs a field through the general parser). Anything else, or a piece `_ours` checks
# and finds a keyword or marker in, goes to `_parse`: the answer is always the general parser's
# (tests/auth/test_received_ours.py compares the two on generated hostile fields).
_OURS = re.compile(
    r"from ([A-Za-z0-9._-]+)"  # the HELO, as safe_token leaves a hostname
    r"[ \t]+\((?:([A-Za-z0-9._-]+) )?(\[(?:IPv6:)?[0-9A-Fa-f.:]+\])\)"  # (rdns [ip])
    r"(?:[ \t]+\(using ([A-Za-z0-9._/ -]+)(?:\([0-9]+ bits\))?\))?"  # the TLS comment
    r"[ \t]+by ([A-Za-z0-9.-]+) \(mxgate\)"
    r"(?:[ \t]+\(connector [A-Za-z0-9._-]+\))?"
    r"[ \t]+with ([A-Za-z]+) id ([A-Za-z0-9]+)"
    r"(?:[ \t]+for <([A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+)>)?"
    r"; [A-Za-z0-9 ,:+-]*"
)
_OUR_KEYWORDS = frozenset({"by", "with", "for"})  # the by part's words `_parse` looks for


def _ours(value: str) -> ReceivedHop | None:
    """`_parse(value)` for mxgate's plain Received field, or None (then `_parse` reads it)."""
    if len(value) > MAX_RECEIVED_CHARS:
        return None
    m = _OURS.fullmatch(value)
    if m is None:
        return None
    helo, rdns, literal, tls, by, proto, ident, rcpt = m.groups()
    # A by-part word that is a keyword moves the clauses `_parse` reads; an rDNS word that is a
    # sender-text marker (or `HELO`) hides the address or names the HELO; a TLS word `helo`/`ehlo`
    # would be read as the HELO's marker.
    if by.lower() in _OUR_KEYWORDS or proto.lower() in _OUR_KEYWORDS or ident.lower() in _OUR_KEYWORDS:
        return None
    if rdns is not None and _is_marker(rdns):
        return None
    if tls is not None and any(w.lower() in ("helo", "ehlo") for w in tls.split()):
        return None
    ip = parse_ip_literal(literal)
    if ip is None:
        return None
    return ReceivedHop(helo, _name(rdns) if rdns is not None else None, ip, by, proto.upper(), rcpt, True, "mxgate", "")


def parse_ip_literal(text: str) -> IPAddress | None:
    """Read an address as MTAs write it: `[1.2.3.4]`, `[1.2.3.4]:25`, `[IPv6:...]`,
    `fe80::1%7`, `user@1.2.3.4`, `10.0.8.6.13219` (port after a fifth dot).
    IPv4-mapped IPv6 becomes IPv4 so one host has one identity. None if not an address."""
    if len(text) > MAX_LITERAL_CHARS:
        return None
    return _literal(text)


# The same few relays and senders' names and addresses come in every message; ipaddress's
# parse was a third of a header's reading (issue 19). Pure and of at most MAX_LITERAL_CHARS.
@functools.lru_cache(maxsize=4096)
def _literal(text: str) -> IPAddress | None:
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


def _lex(text: str) -> list[str]:
    """Every `_TOKEN` match of `text`, in order: one regex pass (findall, no match objects)
    shared by `_before_date` and `_scan` (issue 19: two finditer passes were half a parse).
    A lexeme's first character tells its kind (`_kind`): the alternatives start apart."""
    return _TOKEN.findall(text)


def _kind(text: str) -> str:
    """The kind of a lexeme other than `(`, `)` and `;`: a lone bracket is stray, else an
    address literal starts with `[`, a path with `<`, and anything else is a word."""
    if text in _STRAYS:
        return "stray"
    return "literal" if text[0] == "[" else "angle" if text[0] == "<" else "word"


def _scan(lexed: list[str]) -> tuple[list[_Token], bool]:
    """Top-level tokens of the lexed value (without `;`) and whether its parentheses and
    brackets balance. Comments become one token holding their depth-1 words (nested comments
    dropped)."""
    tokens: list[_Token] = []
    depth = 0
    balanced = True
    comment: list[str] = []
    for text in lexed:
        if text == "(":
            depth += 1
            continue
        if text == ")":
            if depth == 0:
                balanced = False  # a `)` nobody opened: someone's text closed the MTA's comment
                continue
            if depth == 1:
                tokens.append(_Token("comment", "", tuple(comment)))
                comment = []
            depth -= 1
            continue
        if depth == 1:
            if text not in _NOT_WORDS:  # literals, paths and words; not `;` or a stray
                comment.append(text)
        elif depth == 0 and text != ";" and text != "<" and text != ">":
            tokens.append(_Token(_kind(text), text))  # a stray `[` or `]` is kept: see `_parse`
    if depth > 0:
        balanced = False
        if comment:  # unclosed comment: keep what it said (for by/with), never trusted
            tokens.append(_Token("comment", "", tuple(comment)))
    return tokens, balanced


def _before_date(lexed: list[str]) -> tuple[int, bool]:
    """(how many lexemes come before the value's last top-level `;`, whether its
    parentheses balance overall). RFC 5321 §4.4 ends the header with `;` date-time. The last
    `;`, not the first: a HELO may contain `;`. The MTA writes the date itself, so a `(` left
    open or a `)` never opened anywhere in the header means sender text moved the structure:
    the caller trusts nothing."""
    depth, cut, balanced = 0, None, True
    for index, text in enumerate(lexed):
        if text == "(":
            depth += 1
        elif text == ")":
            balanced = balanced and depth > 0
            depth = max(depth - 1, 0)
        elif text == ";" and depth == 0:
            cut = index
    return (len(lexed) if cut is None else cut), balanced and depth == 0


def _keyword_index(tokens: list[_Token], keyword: str, start: int = 0, last: bool = False) -> int | None:
    found = None
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token.kind == "word" and token.text.lower() == keyword:
            if not last:
                return index
            found = index
    return found


def _clause_value(tokens: list[_Token], keyword: str) -> str | None:
    index = _keyword_index(tokens, keyword)
    if index is None or index + 1 >= len(tokens) or tokens[index + 1].kind == "comment":
        return None
    return tokens[index + 1].text


def _family(by_part: list[_Token]) -> str | None:
    """The MTA that wrote the header, from what follows `by` (text the MTA wrote itself) up to
    the envelope addresses it records there (`for <path>`, `envelope-from <path>`): a recipient
    named `exim-users@` must not make a Sendmail hop read as Exim's."""
    host = by_part[0].text.lower() if by_part and by_part[0].kind != "comment" else ""
    words = " ".join(" ".join(t.words) if t.kind == "comment" else t.text for t in _own_words(by_part[1:])).lower()
    for family, host_suffixes, signatures in _FAMILIES:
        if any(host.endswith(s) for s in host_suffixes) or any(sig.search(words) for sig in signatures):
            return family
    return None


def _own_words(tokens: list[_Token]) -> list[_Token]:
    """The tokens of a `by` part without the envelope addresses recorded there (the sender's
    text): paths (`<...>`), the word after `for` (Exim writes it bare), and comments holding a
    path or starting with `envelope-from`/`envelope-sender`."""
    own = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
            continue
        first = (token.words[0] if token.words else "") if token.kind == "comment" else token.text
        if token.kind == "angle" or first.lower().startswith("envelope-") or (
                token.kind == "comment" and any(w[:1] == "<" for w in token.words)):
            continue
        skip = token.kind == "word" and first.lower() == "for"
        own.append(token)
    return own


def _parse(value: str) -> ReceivedHop:
    text = value[:MAX_RECEIVED_CHARS].replace("\r", " ").replace("\n", " ")
    text = _WRAPPED_FROM.sub(r"from \1", text, count=1)  # NAVGW: `(from helo [ip]) by ...`
    lexed = _lex(text)
    cut, balanced_overall = _before_date(lexed)
    # The tokens before the cut are exactly those of `text[:cut]` alone: no token spans a `;`
    # at depth 0, and each pattern matches the same text whatever follows it.
    tokens, balanced = _scan(lexed[:cut])
    balanced = balanced and balanced_overall
    start = _keyword_index(tokens, "from")
    has_from = start is not None
    # The last top-level `by`: a HELO may itself contain ` by `, the MTA's own clause follows it.
    by_at = _keyword_index(tokens, "by", (start + 1) if has_from else 0, last=has_from)
    if by_at is not None and by_at + 1 >= len(tokens):
        by_at = None
    by_part = tokens[by_at + 1:] if by_at is not None else []
    family = _family(by_part)
    helo = rdns = ip = None
    note = ""
    if has_from:
        from_part = tokens[start + 1:by_at] if by_at is not None else tokens[start + 1:]
        if not balanced:
            # An unclosed `(` or a `)` never opened may come from the HELO and would shift
            # where the MTA's own TCP-info seems to start: nothing here can be trusted.
            # (A stray `[` cannot: an address literal never spans a space or a parenthesis.)
            note = "unbalanced parentheses in the header"
            helo = _first_text(from_part)
        elif _quoted_structure(text):
            # A quoted local part (RFC 5321 §4.1.2) in the `for <path>` or `envelope-from <path>`
            # the MTA writes after `by` may hold `(peer) by host (Postfix)`: a whole fake clause
            # after the real one. Nothing here can be trusted (the walk stops).
            note = "a quoted string in the header holds parentheses, angle brackets or `by`"
            helo = _first_text(from_part)
        else:
            helo, rdns, ip, note = _read_from(from_part, family)
    return ReceivedHop(
        from_helo=helo,
        rdns=rdns,
        ip=ip,
        by=_first_text(by_part),
        with_proto=_upper(_clause_value(by_part, "with")),
        for_addr=_read_for(by_part),
        has_from=has_from,
        family=family,
        note=note,
    )


def _read_from(tokens: list[_Token], family: str | None) -> tuple[str | None, str | None, IPAddress | None, str]:
    """(HELO, rDNS, TCP peer, why no peer) from the tokens between `from` and `by`."""
    head = tokens[0] if tokens and tokens[0].kind != "comment" else None
    rest = tokens[1:] if head is not None else tokens
    head_text = _strip_port(head.text) if head is not None else None
    head_ip = parse_ip_literal(head_text) if head_text and head.kind == "literal" or (
        head_text and head_text[:1].isalnum() and head_text.count(".") + head_text.count(":") >= 2) else None
    marker_helo = _marker_value(rest)
    note = ""
    if family in _HELO_LAST_FAMILIES:
        ip, rdns = _first_peer(rest)
        ip = ip or head_ip  # `from [ip] (helo=x)` (Exim), `from [ip] (HELO x)` (CommuniGate)
    elif family is not None:
        ip, rdns = _last_peer(rest)
        if ip is None and family not in _TCP_INFO_FAMILIES:
            ip = head_ip  # `from ip by ... with HTTP` (webmail)
    else:
        # An MTA we do not know: read it both ways; where the HELO could sit on either side of
        # the address the two readings disagree, and then nothing in the header is trusted.
        first, first_rdns = _first_peer(rest)
        last, rdns = _last_peer(rest)
        first, last = first or head_ip, last or head_ip
        ip = last if first is None or first == last else (first if last is None else None)
        rdns = rdns if ip == last else first_rdns
        if first is not None and last is not None and first != last:
            note = "an unknown MTA's header reads two ways; the HELO may hold either address"
    if marker_helo is not None:
        helo = marker_helo
        if rdns is None and head_text is not None and head_ip is None:
            rdns = _name(head_text)  # qmail/Exim/CommuniGate: `from <rdns> (HELO helo)`
    else:
        helo = head_text
    if ip is None and not note:
        note = f"no TCP-info address where {family} writes it" if family else "no TCP-info address"
    return helo, rdns, ip, note


# Header structure a quoted string must not hold: parentheses, angle brackets, a `by` word. (An
# address literal may: `claiming to be "[ip]"`, `Client CN "[ip]"` are read by their markers.)
_STRUCTURE = re.compile(r"[()<>]|(?<![^\s\"])(?i:by)(?![^\s\"])")


def _quoted_structure(text: str) -> bool:
    """Whether anything between the first and the last `"` from the first ` by ` on is header
    structure. The envelope paths an MTA writes after its `by` (`for <path>`, `envelope-from
    <path>`) may quote the sender's text, and however a stray `"` (in a HELO with ` by ` in it)
    pairs the quotes up, a quoted local part holding a clause lies between the first and the
    last one. Quoted words before `by` (a certificate's `Client CN "x", Issuer "y"`) are read
    by their markers; MTAs' own quoted words after it hold no structure."""
    by = _FIRST_BY.search(text)
    start = by.start() if by else 0
    first = text.find('"', start)
    return first >= 0 and _STRUCTURE.search(text, first, text.rfind('"')) is not None


_FIRST_BY = re.compile(r"(?i)(?:^|\s)by(?=\s)")


def _is_marker(word: str) -> bool:
    lowered = word.lower().lstrip("\"'")  # ZMailer quotes it: `"EHLO name"`
    return lowered in _SENDER_TEXT_WORDS or lowered.startswith(_SENDER_TEXT_PREFIXES)


def _marker_value(tokens: list[_Token]) -> str | None:
    """The HELO an MTA recorded with an explicit marker: `helo=x`, `HELO x`, `EHLO x`,
    `claiming to be "x"` (qmail, Exim, CommuniGate, GMX, IronPort, Obtuse smtpd)."""
    for token in tokens:
        words = token.words if token.kind == "comment" else (token.text,)
        for index, word in enumerate(words):
            lowered = word.lower()
            if lowered.startswith("helo=") and len(word) > 5:
                return word[5:]
            if lowered in ("helo", "ehlo", "helo=") and index + 1 < len(words):
                return words[index + 1]
    for index, token in enumerate(tokens):  # top level: `HELO x`, `claiming to be "x"`
        if token.kind == "word" and token.text.lower() in ("helo", "ehlo") and index + 1 < len(tokens):
            return tokens[index + 1].text
    return None


def _comment_peer(words: tuple[str, ...]) -> tuple[IPAddress | None, str | None, bool]:
    """A comment read as TCP-info: (address, rDNS name before it, whether a marker was met).
    Only words before the first sender-text marker count; of those, the last bracketed
    literal, else a lone word that is an address (`(ip)`, `(user@ip)`, `(ip:port)`)."""
    clean: list[str] = []
    marked = False
    for word in words:
        if _is_marker(word):
            marked = True
            break
        clean.append(word)
    if len(clean) > MAX_TCP_INFO_WORDS:
        return None, None, marked  # prose (TLS details, certificates), not TCP-info
    for index in range(len(clean) - 1, -1, -1):
        if clean[index].startswith("["):
            found = parse_ip_literal(clean[index])
            if found is not None:
                return found, _name(clean[index - 1]) if index > 0 else None, marked
    bare = [w for w in clean if w.lower() not in _PEER_QUALIFIERS]
    if len(bare) == 1 and not bare[0].startswith("["):
        found = parse_ip_literal(bare[0])
        if found is not None:
            return found, None, marked
    return None, (_name(clean[0]) if len(clean) == 1 and not marked else None), marked


def _first_peer(tokens: list[_Token]) -> tuple[IPAddress | None, str | None]:
    """Exim, CommuniGate, ecelerity: the peer comes first and the HELO after it; everything
    from the first marker on is the sender's text."""
    rdns = None
    for token in tokens:
        if token.kind == "comment":
            found, name, marked = _comment_peer(token.words)
            if found is not None:
                return found, name
            rdns = rdns or name
            if marked:
                break
        elif token.kind == "literal":
            found = parse_ip_literal(token.text)
            if found is not None:
                return found, rdns
        elif _is_marker(token.text):
            break
    return None, rdns


def _last_peer(tokens: list[_Token]) -> tuple[IPAddress | None, str | None]:
    """Postfix, Sendmail, qmail, Exchange, Gmail and most others write the HELO first and
    their TCP-info after it: the last TCP-info element — a comment such as `(rdns [ip])`, or a
    bare `[ip]` (`(EHLO x) [ip]`, QMQP) — is the MTA's. Anything a HELO injects comes before
    it; marker comments and the word after a top-level `HELO` are skipped. (Obtuse smtpd's
    `host(ip), claiming to be "x"` is an unknown family: read both ways, see `_read_from`.)"""
    ip: IPAddress | None = None
    rdns = name_only = None
    skip_next = False
    for token in tokens:
        if skip_next and token.kind != "comment":  # `HELO x` at top level: x is the sender's
            skip_next = False
            continue
        skip_next = False
        if token.kind == "comment":
            if token.words and _is_marker(token.words[0]):
                continue
            found, name, _ = _comment_peer(token.words)
            if found is not None:
                ip, rdns = found, name
            elif name is not None:
                name_only = name  # `from helo (rdns) [ip]`
        elif token.kind == "literal":
            found = parse_ip_literal(token.text)
            if found is not None:
                ip, rdns = found, name_only
        elif token.text.lower() in ("helo", "ehlo"):
            skip_next = True  # never a comment: a HELO ending in "HELO" must not hide TCP-info
    return ip, rdns


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


def _read_for(tokens: list[_Token]) -> str | None:
    text = _clause_value(tokens, "for")
    if text is None:
        return None
    text = text.strip("<>").strip()
    return text or None


def _first_text(tokens: list[_Token] | None) -> str | None:
    if not tokens or tokens[0].kind == "comment":
        return None
    return tokens[0].text


def _strip_port(text: str) -> str:
    match = _PORT_SUFFIX.match(text)
    return match.group(1) if match else text


def _upper(text: str | None) -> str | None:
    return text.upper() if text else None
