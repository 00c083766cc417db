"""The one streaming walk over a message's MIME tree that every content check reads.

Owns: reading the message line by line from its spooled file (never a whole parse in memory),
the MIME structure (RFC 2046 §5.1 boundaries, message/rfc822 bodies), decoding base64 and
quoted-printable as it streams, file names (RFC 2231 parameters, RFC 2047 words), the first bytes
of each file, zip archives' members (names, first bytes, nested zips), a sample of the text for
the score, and the limits — depth, parts, decoded bytes, compression ratio, archive members and
nesting — enforced while streaming: the walk stops at the first one passed and raises
`InspectionLimit`, which the pipeline treats as the check's error (`on_error`), never a pass.
A part readers may read two ways (a structure field given twice, differently) raises it too.
It also checks the message's `Budget` as it goes, so a timed-out walk stops instead of running on.
Must not know: which extensions are blocked, scores, SMTP, or what a limit's verdict is.
"""

from __future__ import annotations

import binascii
import re
import email.header
import email.utils
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO

from mxgate.filters.result import Budget, BudgetExceeded
from mxgate.smtp.source import MessageSource

SNIFF_BYTES = 8
ZIP_MAGIC = b"PK\x03\x04"
# Leading bytes → type name used in `blocked_types`.
SIGNATURES = ((b"MZ", "exe"), (b"\x7fELF", "elf"), (b"\xcf\xfa\xed\xfe", "macho"), (b"\xca\xfe\xba\xbe", "macho"),
              (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"), (ZIP_MAGIC, "zip"))
_LINE = 8192  # readline cap: the session refuses text lines over 998 bytes (RFC 5322 §2.1.1) anyway
_CHECK_EVERY = 64  # lines between looks at the budget
BATCH = 64 * 1024  # bytes of a part decoded at once


@dataclass(frozen=True)
class Limits:
    depth: int = 20  # nested multipart / message levels (real mail rarely passes 5)
    parts: int = 1000  # MIME entities in one message
    decoded_bytes: int = 64 * 1024 * 1024  # decoded from transfer encodings and archives, together
    part_header: int = 64 * 1024  # one part's header block
    archive_members: int = 1000  # per archive
    archive_depth: int = 3  # zip inside zip inside zip inside the message
    ratio: float = 100.0  # inflated/compressed above this is a bomb (deflate reaches ~1000 on zeros)
    ratio_floor: int = 1024 * 1024  # ...for members that inflate past this (tiny files compress well)
    text_sample: int = 256 * 1024  # decoded text kept for the score's content rules
    spool_in_memory: int = 1024 * 1024  # an archive bigger than this is inspected from a temp file


LIMITS = Limits()


class InspectionLimit(Exception):
    """The message passed a limit of the walk; `code` is stable (trace, tests), e.g. "mime-depth"."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class FoundFile:
    name: str  # "invoice.zip/setup.exe" for archive members
    sniffed: str  # type from SIGNATURES, "" when unknown
    also: tuple[str, ...] = ()  # the part's other names (a reader may save it under any of them)


@dataclass
class Walk:
    header_block: bytes = b""  # the top-level header block, as received (ends with the blank line)
    files: list[FoundFile] = field(default_factory=list)
    text: bytes = b""  # the first `text_sample` bytes of decoded text/* parts
    parts: int = 0
    decoded: int = 0
    max_depth: int = 0


def sniff(head: bytes) -> str:
    return next((kind for magic, kind in SIGNATURES if head.startswith(magic)), "")


@dataclass
class _Entity:
    maintype: str
    subtype: str
    boundary: bytes
    name: str
    encoding: str
    also: tuple[str, ...] = ()  # every other name the part's fields give it


def _decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # a charset unknown here or a byte it cannot decode: what a reader shows instead
        try:
            parts = email.header.decode_header(value)
        except Exception:  # not even words: judged as written
            return value
        return "".join(_lenient(text, charset) for text, charset in parts)


def _lenient(text: bytes | str, charset: str | None) -> str:
    """One decoded word's text as a reader shows it: bad bytes replaced, an unknown charset read
    as Latin-1 (RFC 2047 §6.2 lets a reader display what it cannot decode; the name's extension,
    which is what is judged, is ASCII either way)."""
    if isinstance(text, str):
        return text
    try:
        return text.decode(charset or "ascii", "replace")
    except LookupError:
        return text.decode("latin-1")


_WANTED = (b"content-type", b"content-disposition", b"content-transfer-encoding")
# A file inside text, as readers find one (Thunderbird's text parser): uuencode's `begin <mode> name`
# (its first data line too, to sniff), or yEnc's `=ybegin ... name=<rest of the line>`.
_ENCODED_IN_TEXT = re.compile(rb"^begin(?:-base64)? [0-7]{3,4} ([^\r\n]+?)[ \t]*\r?\n(?:([^\r\n]*)\r?\n)?"
                              rb"|^=ybegin [^\r\n]*?\bname=([^\r\n]+?)[ \t]*\r?$", re.M)
_PARAM = re.compile(r';\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


def _fields(raw_header: bytes) -> dict[bytes, list[str]]:
    """The three fields that matter, unfolded (RFC 5322 §2.2.3), every occurrence in order: the
    first gives the structure (type, boundary, encoding); the names come from all of them."""
    out: dict[bytes, list[str]] = {}
    name = b""
    value: list[bytes] = []
    for line in raw_header.split(b"\n") + [b"end:"]:
        if line[:1] in (b" ", b"\t"):
            value.append(line.strip())
            continue
        if name in _WANTED:
            out.setdefault(name, []).append(b" ".join(value).decode("utf-8", "surrogateescape").replace("\r", ""))
        key, sep, rest = line.partition(b":")
        name, value = (key.strip().lower(), [rest.strip()]) if sep else (b"", [])
    return out


def _param_values(value: str, key: str) -> list[str]:
    """Every value of parameter `key` in one field value, the RFC 2231 forms (`key*`, `key*0*`...)
    decoded: readers differ in which one they take (RFC 6266 §4.3 prefers `key*`)."""
    found, extended = [], False
    for m in _PARAM.finditer(value):
        k = m.group(1).lower()
        if k == key:
            found.append(_unquote(m.group(2)))
        elif k.startswith(key + "*"):
            extended = True
    if extended:
        part = Message()
        part["content-type"] = value
        try:
            params = part.get_params() or []
            values = [email.utils.collapse_rfc2231_value(v) for k, v in params[1:] if k.lower() == key]
        except Exception:  # undecodable extended values: the plain ones above are still judged
            values = []
        found += [v for v in values if v not in found]
    return found


def _other_names(fields: dict[bytes, list[str]], name: str) -> tuple[str, ...]:
    """Every name but `name` a reader could give the part: each `filename` of each
    Content-Disposition and each `name` of each Content-Type, RFC 2047 words decoded."""
    out: list[str] = []
    for field, key in ((b"content-disposition", "filename"), (b"content-type", "name")):
        for value in fields.get(field, ()):
            if "name" not in value.lower():
                continue
            for raw in _param_values(value, key):
                decoded = _decode_words(raw).strip() if raw else ""
                if decoded and decoded != name and decoded not in out:
                    out.append(decoded)
    return tuple(out)


def _simple_params(value: str) -> dict[str, str] | None:
    """Parameters of a field without RFC 2231 extensions (None when there are some: the stdlib then parses)."""
    params = {}
    for m in _PARAM.finditer(value):
        key = m.group(1).lower()
        if key.endswith("*") or "*" in key:
            return None
        params.setdefault(key, _unquote(m.group(2)))
    return params


def _unquote(v: str) -> str:
    """A parameter value as `_PARAM` matched it, its quoted-string unquoted (RFC 2045 §5.1)."""
    return v[1:-1].replace('\\"', '"').replace("\\\\", "\\") if v.startswith('"') else v


def _ambiguity(fields: dict[bytes, list[str]], ctype_value: str) -> str:
    """Why readers may disagree on the part's structure or encoding, or "": a Content-Type or
    Content-Transfer-Encoding given twice with different values, or two boundary parameters.
    Readers differ in which one they take; a walk that took the other would miss what they show."""
    for name, norm in ((b"content-type", str), (b"content-transfer-encoding", str.lower)):
        values = fields.get(name, ())
        if len(values) > 1 and len({norm(" ".join(v.split())) for v in values}) > 1:
            return f"{name.decode()} given twice, differently"
    if "boundary" in ctype_value.lower() and len(set(_param_values(ctype_value, "boundary"))) > 1:
        return "two boundary parameters"
    return ""


def _entity(raw_header: bytes) -> _Entity:
    fields = _fields(raw_header)
    ctype_value = fields.get(b"content-type", ("",))[0]
    disp_value = fields.get(b"content-disposition", ("",))[0]
    ambiguous = _ambiguity(fields, ctype_value)
    if ambiguous:
        raise InspectionLimit("mime-ambiguous", ambiguous)
    ctype = ctype_value.split(";", 1)[0].strip().lower()
    if ctype.count("/") != 1 or " " in ctype:
        ctype = "text/plain"  # RFC 2045 §5.2: a malformed type means text/plain
    ct_params, disp_params = _simple_params(ctype_value), _simple_params(disp_value)
    if ct_params is None or disp_params is None:  # RFC 2231 continuations and charsets
        part = Message()
        for key, values in fields.items():
            part[key.decode()] = values[0]
        try:
            boundary = part.get_boundary() or ""
        except Exception:
            boundary = ""
        try:
            name = part.get_filename() or part.get_param("name") or ""
        except Exception:
            name = ""
    else:
        boundary = ct_params.get("boundary", "")
        name = disp_params.get("filename") or ct_params.get("name") or ""
    maintype, _, subtype = ctype.partition("/")
    # Most parts name no file: "" decodes to "" without the email package (~2 µs a part; issue 19)
    name = _decode_words(name).strip() if isinstance(name, str) and name else ""
    encoding = fields.get(b"content-transfer-encoding", ("",))[0].strip().lower()
    twice = len(fields.get(b"content-type", ())) > 1 or len(fields.get(b"content-disposition", ())) > 1
    also = _other_names(fields, name) if twice or "name" in (ctype_value + disp_value).lower() else ()
    return _Entity(maintype, subtype, boundary.encode("utf-8", "replace"), name, encoding, also)


class _Decoder:
    """Streaming Content-Transfer-Encoding decoder (RFC 2045 §6): one line in, bytes out."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._b64 = b""

    def feed(self, line: bytes) -> bytes:
        if self.encoding == "base64":
            self._b64 += line.translate(None, b" \t\r\n")
            cut = len(self._b64) // 4 * 4
            chunk, self._b64 = self._b64[:cut], self._b64[cut:]
            try:
                return binascii.a2b_base64(chunk)
            except binascii.Error:  # broken base64 (RFC 2045 §6.8 says ignore what is not in the alphabet)
                return b""
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(line)
        return line


class _Walker:
    def __init__(self, limits: Limits, budget: Budget | None, inspect_archives: bool):
        self.limits = limits
        self.budget = budget
        self.inspect_archives = inspect_archives
        self.out = Walk()
        self._lines = 0
        self._enclosed = None  # the decoded body of an encoded message/rfc822 being read
        self._text_tail: bytes | None = None  # a text part's unfinished last line (scan_text)

    # --- accounting -------------------------------------------------------------------------
    def tick(self) -> None:
        self._lines += 1
        if self.budget is not None and self._lines % _CHECK_EVERY == 0:
            self.budget.check()

    def count_decoded(self, n: int) -> None:
        self.out.decoded += n
        if self.out.decoded > self.limits.decoded_bytes:
            raise InspectionLimit("decoded-bytes", f"more than {self.limits.decoded_bytes} bytes decoded")

    def new_part(self, depth: int) -> None:
        self.out.parts += 1
        self.out.max_depth = max(self.out.max_depth, depth)
        if self.out.parts > self.limits.parts:
            raise InspectionLimit("mime-parts", f"more than {self.limits.parts} MIME parts")
        if depth > self.limits.depth:
            raise InspectionLimit("mime-depth", f"MIME nested more than {self.limits.depth} levels")

    # --- structure --------------------------------------------------------------------------
    @staticmethod
    def boundary_of(line: bytes, stack: list[tuple[bytes, int]]) -> tuple[int, bool] | None:
        """(index in stack, closing) when `line` is a delimiter of an open multipart (RFC 2046 §5.1.1)."""
        if not line.startswith(b"--") or not stack:
            return None
        text = line.rstrip(b"\r\n").rstrip(b" \t")
        for i in range(len(stack) - 1, -1, -1):
            b = stack[i][0]
            if text == b"--" + b:
                return i, False
            if text == b"--" + b + b"--":
                return i, True
        return None

    def headers(self, reader: BinaryIO, stack) -> tuple[bytes, bytes | None]:
        """One entity's header block, and the line that ended it when that was a delimiter (or b"" at EOF)."""
        lines = []
        size = 0
        while True:
            line = reader.readline(_LINE)
            self.tick()
            if not line:
                return b"".join(lines), b""
            if line in (b"\r\n", b"\n"):
                return b"".join(lines), None
            if self.boundary_of(line, stack) is not None:
                return b"".join(lines), line
            size += len(line)
            if size > self.limits.part_header:
                raise InspectionLimit("part-header", f"a part's header block is over {self.limits.part_header} bytes")
            lines.append(line)

    def skip_to_boundary(self, reader: BinaryIO, stack) -> bytes:
        """Preamble/epilogue: read to the next delimiter of an open multipart (b"" at EOF)."""
        while True:
            line = reader.readline(_LINE)
            self.tick()
            if not line or self.boundary_of(line, stack) is not None:
                return line

    def leaf(self, reader: BinaryIO, stack, ent: _Entity, enclosed: bool = False) -> bytes:
        """A leaf's body, decoded as it streams; returns the delimiter line that ended it (b"" at EOF).

        Lines are gathered into batches of up to BATCH bytes and decoded per batch; once nothing
        more is needed from the part (its first bytes, the text sample, an archive's bytes), the
        rest is only scanned for its end. With `enclosed` (an encoded message/rfc822) every decoded
        byte is kept in `self._enclosed` for the caller to walk. A text part is decoded to its end:
        readers show a uuencoded or yEnc block inside it as a file (`scan_text`)."""
        decoder = _Decoder(ent.encoding)
        is_file = bool(ent.name or ent.also) or ent.maintype != "text"
        self._keep_text = not is_file and len(self.out.text) < self.limits.text_sample
        self._text_tail = b"" if not is_file else None
        self._head = b""
        self._spool = None
        self._enclosed = tempfile.SpooledTemporaryFile(self.limits.spool_in_memory) if enclosed else None
        plain = ent.encoding not in ("base64", "quoted-printable")
        prev_eol = b""
        ended = b""
        try:
            while True:
                if not (self._keep_text or len(self._head) < SNIFF_BYTES or self._spool is not None
                        or self._enclosed is not None or self._text_tail is not None):
                    ended = self.skip_leaf(reader, stack)  # nothing more to learn from this part
                    break
                if not stack:  # a single-part message: no delimiter to look for
                    batch = reader.read(BATCH)
                    if self.budget is not None:
                        self.budget.check()
                    if not batch:
                        break
                    self.take(decoder.feed(batch) if not plain else batch, is_file)
                    continue
                lines, size = [], 0
                while size < BATCH:
                    line = reader.readline(_LINE)
                    self.tick()
                    if not line:
                        break
                    if line[:2] == b"--" and self.boundary_of(line, stack) is not None:
                        ended = line
                        break
                    lines.append(line)
                    size += len(line)
                if lines:
                    batch = b"".join(lines)
                    if plain:
                        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1): hold it back.
                        eol = b"\r\n" if batch.endswith(b"\r\n") else b"\n" if batch.endswith(b"\n") else b""
                        data, prev_eol = prev_eol + batch[: len(batch) - len(eol)], eol
                    else:
                        data = decoder.feed(batch)
                    self.take(data, is_file)
                if ended or not lines:
                    break
            if self._text_tail:
                self.scan_text(b"\n")  # the part's last line
            if is_file:
                name = ent.name or (ent.also[0] if ent.also else "(unnamed)")
                self.out.files.append(FoundFile(name, sniff(self._head), tuple(a for a in ent.also if a != name)))
                if self._spool is not None:
                    self.archive(self._spool, name, 1)
        finally:
            if self._spool is not None:
                self._spool.close()
                self._spool = None
        return ended

    def take(self, data: bytes, is_file: bool) -> None:
        """Decoded bytes of the current leaf: count, sniff, sample text, spool an archive."""
        if not data:
            return
        self.count_decoded(len(data))
        if len(self._head) < SNIFF_BYTES:
            self._head += data[: SNIFF_BYTES - len(self._head)]
        if self._enclosed is not None:
            self._enclosed.write(data)
        if self._keep_text:
            self.out.text += data[: self.limits.text_sample - len(self.out.text)]
            self._keep_text = len(self.out.text) < self.limits.text_sample
        if self._text_tail is not None:
            self.scan_text(data)
        if self.inspect_archives and is_file and self._head.startswith(ZIP_MAGIC):
            if self._spool is None:
                self._spool = tempfile.SpooledTemporaryFile(self.limits.spool_in_memory)
            self._spool.write(data)

    def scan_text(self, data: bytes) -> None:
        """Files encoded inside text (uuencode `begin 644 name`, yEnc `=ybegin ... name=`): found by
        their names, a uuencoded one sniffed from its first line. Whole lines only: the part of a
        line `data` ends inside waits for the next call (bounded by the readline cap)."""
        text = self._text_tail + data
        cut = text.rfind(b"\n") + 1
        self._text_tail = text[cut:][-_LINE:]
        if b"begin" not in text[:cut]:
            return
        for m in _ENCODED_IN_TEXT.finditer(text, 0, cut):
            name = m.group(1) or m.group(3)
            try:
                head = binascii.a2b_uu(m.group(2)) if m.group(1) and m.group(2) else b""
            except binascii.Error:
                head = b""
            self.out.files.append(FoundFile(name.decode("utf-8", "replace").strip(), sniff(head)))

    def skip_leaf(self, reader: BinaryIO, stack) -> bytes:
        """The rest of a part nothing more is needed from: find its end, count its bytes (an upper
        bound of what it decodes to). Returns the delimiter line, or b"" at the end."""
        pending = 0
        budget = self.budget
        while True:
            line = reader.read(256 * 1024) if not stack else reader.readline(_LINE)
            if not line:
                self.count_decoded(pending)
                return b""
            if stack and line[:2] == b"--" and self.boundary_of(line, stack) is not None:
                self.count_decoded(pending)
                return line
            pending += len(line)
            self._lines += 1
            if pending > 1024 * 1024 or self._lines % _CHECK_EVERY == 0:
                self.count_decoded(pending)
                pending = 0
                if budget is not None:
                    budget.check()

    def run(self, source: MessageSource) -> Walk:
        reader = source.open()
        stack: list[tuple[bytes, int]] = []  # none open before the top-level header block
        top = _read_header(source.head, self.limits)
        if top is not None:  # the header block split off already: what `headers` would read, read at once
            raw, lines = top
            reader.read(len(source.head))
            self._lines += lines
            if self.budget is not None and lines >= _CHECK_EVERY:
                self.budget.check()
            ended = None
        else:
            raw, ended = self.headers(reader, stack)
        self.out.header_block = raw + b"\r\n"
        self.entities(reader, raw, ended, 0)
        return self.out

    def entities(self, reader: BinaryIO, raw: bytes, ended: bytes | None, depth: int) -> None:
        """Every entity of the message whose top-level header block `raw` was read (and the line
        that ended it, as `headers` returns it), to the end of `reader`."""
        stack: list[tuple[bytes, int]] = []  # open multiparts: (boundary, depth), innermost last
        while True:
            self.new_part(depth)
            ent = _entity(raw)
            if ended:  # the header block was cut by a delimiter: an empty entity
                line = ended
            elif ended is not None:  # the message ended inside a header block
                line = b""
            elif ent.maintype == "multipart" and ent.boundary:
                stack.append((ent.boundary, depth))
                line = self.skip_to_boundary(reader, stack)
            elif ent.maintype == "message" and ent.subtype in ("rfc822", "global") and ent.encoding in ("", "7bit", "8bit", "binary"):
                depth += 1  # RFC 2046 §5.2.1: the body is a whole message, with its own header
                raw, ended = self.headers(reader, stack)
                continue
            elif ent.maintype == "message" and ent.subtype in ("rfc822", "global"):
                # RFC 2046 §5.2.1 forbids a transfer encoding here, and readers decode it anyway and
                # show the message inside: walked once decoded, as a message one level deeper.
                enclosed = None
                try:
                    line = self.leaf(reader, stack, ent, enclosed=True)
                    enclosed, self._enclosed = self._enclosed, None
                    enclosed.seek(0)
                    self.entities(enclosed, *self.headers(enclosed, []), depth + 1)
                finally:
                    for spool in (enclosed, self._enclosed if enclosed is None else None):
                        if spool is not None:  # the leaf's spool when it raised, else the one walked
                            spool.close()
                    self._enclosed = None
            else:
                line = self.leaf(reader, stack, ent)
            # `line` is a delimiter of an open multipart, or b"" at the end of the message.
            while True:
                if not line:
                    return  # unterminated multiparts end with the message (lenient, like MUAs)
                index, closing = self.boundary_of(line, stack)  # type: ignore[misc]
                parent_depth = stack[index][1]
                del stack[index + 1:]
                if not closing:
                    depth = parent_depth + 1
                    raw, ended = self.headers(reader, stack)
                    break
                stack.pop()
                line = self.skip_to_boundary(reader, stack)

    # --- archives ---------------------------------------------------------------------------
    def archive(self, blob, prefix: str, depth: int) -> None:
        if depth > self.limits.archive_depth:
            raise InspectionLimit("archive-depth", f"{prefix}: archives nested more than {self.limits.archive_depth} deep")
        try:
            blob.seek(0)
            archive = zipfile.ZipFile(blob)
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
            raise InspectionLimit("archive-unreadable", f"{prefix}: {exc.__class__.__name__}") from None
        if len(infos) > self.limits.archive_members:
            raise InspectionLimit("archive-members", f"{prefix}: more than {self.limits.archive_members} members")
        declared = 0
        for info in infos:
            declared += info.file_size
            if info.file_size > self.limits.ratio_floor and info.file_size > self.limits.ratio * max(info.compress_size, 1):
                raise InspectionLimit("archive-ratio", f"{prefix}/{info.filename}: compression ratio over "
                                      f"{self.limits.ratio:g} ({info.compress_size} -> {info.file_size} bytes)")
        if self.out.decoded + declared > self.limits.decoded_bytes:
            raise InspectionLimit("decoded-bytes", f"{prefix}: members declare {declared} bytes")
        for info in infos:
            if self.budget is not None:
                self.budget.check()
            name = f"{prefix}/{info.filename}"
            if info.flag_bits & 0x1 or info.is_dir():  # encrypted members: judged by name only
                self.out.files.append(FoundFile(name, ""))
                continue
            try:
                with archive.open(info) as member:
                    head = member.read(SNIFF_BYTES)  # inflates only a few bytes
                    self.out.files.append(FoundFile(name, sniff(head)))
                    if head.startswith(ZIP_MAGIC):
                        with tempfile.SpooledTemporaryFile(self.limits.spool_in_memory) as inner:
                            inner.write(head)
                            self.copy_member(member, inner, info, name, len(head))
                            self.archive(inner, name, depth + 1)
            except (InspectionLimit, BudgetExceeded):  # out of time is not unreadable (a 554 for load)
                raise
            except Exception as exc:  # corrupt member, unsupported compression: not inspectable
                raise InspectionLimit("archive-unreadable", f"{name}: {exc.__class__.__name__}") from None

    def copy_member(self, member, out, info: zipfile.ZipInfo, name: str, done: int) -> None:
        """Inflate one member into `out`, counting real bytes (the sizes in the directory can lie)."""
        self.count_decoded(done)
        while True:
            if self.budget is not None:
                self.budget.check()
            chunk = member.read(64 * 1024)
            if not chunk:
                return
            done += len(chunk)
            self.count_decoded(len(chunk))
            if done > self.limits.ratio_floor and done > self.limits.ratio * max(info.compress_size, 1):
                raise InspectionLimit("archive-ratio", f"{name}: inflates past ratio {self.limits.ratio:g}")
            out.write(chunk)


def _read_header(head: bytes, limits: Limits) -> tuple[bytes, int] | None:
    """(`raw`, lines read) that `_Walker.headers` returns for the top-level entity of a message
    whose header block `head` (ending with its blank line) is split off already, when its line by
    line read would take exactly that block: every line ends in LF, none is blank before the
    last, none is longer than a readline takes (_LINE), and the block is within `part_header`.
    None otherwise (the walk reads it line by line). Issue 19: a dozen readline/tick rounds per
    gateway message (~15 µs) for a block the gateway has already split, parsed and checked."""
    raw = head[:-2]
    if head[-2:] != b"\r\n" or (raw and raw[-1:] != b"\n") or len(raw) > limits.part_header:
        return None
    if raw.startswith((b"\n", b"\r\n")) or b"\n\n" in raw or b"\n\r\n" in raw:
        return None  # a blank line before the last one ends the block there
    if len(raw) > _LINE and max(map(len, raw.split(b"\n"))) + 1 > _LINE:
        return None  # a line readline would cut in two
    return raw, raw.count(b"\n") + 1


def walk(source: MessageSource | bytes, *, limits: Limits = LIMITS, budget: Budget | None = None,
         inspect_archives: bool = True) -> Walk:
    """Walk `source` once; raises InspectionLimit at the first limit passed, BudgetExceeded when out of time."""
    if isinstance(source, (bytes, bytearray)):
        source = MessageSource.from_bytes(bytes(source))
    return _Walker(limits, budget, inspect_archives).run(source)


__all__ = ["LIMITS", "Limits", "InspectionLimit", "FoundFile", "Walk", "walk", "sniff"]
