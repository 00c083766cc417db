"""Attachment policy: blocked file types by name and by content, including inside zip archives.

Owns: walking the MIME tree (bounded in parts and depth), reading each part's file name and
first bytes, looking inside zip archives (names and first bytes of members, nested zips up to
MAX_ARCHIVE_DEPTH), and the magic numbers that identify executables whatever they are named.
Must not know: SMTP, or what the action does. Malformed MIME never raises: the email package
is lenient, and anything it cannot decode is judged by its name alone.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "attachments"
MAX_PARTS = 500  # MIME parts examined; a message with more is judged on the first ones
MAX_ARCHIVE_MEMBERS = 1000  # members examined per archive (zip bombs list millions)
MAX_ARCHIVE_DEPTH = 2  # zip inside zip inside the message
SNIFF_BYTES = 8
ZIP_MAGIC = b"PK\x03\x04"
# Leading bytes → type name used in `blocked_types`.
SIGNATURES = ((b"MZ", "exe"), (b"\x7fELF", "elf"), (b"\xcf\xfa\xed\xfe", "macho"), (b"\xca\xfe\xba\xbe", "macho"),
              (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"), (ZIP_MAGIC, "zip"))


@dataclass(frozen=True)
class FoundFile:
    name: str  # "invoice.zip/setup.exe" for archive members
    sniffed: str  # type from SIGNATURES, "" when unknown


def sniff(head: bytes) -> str:
    return next((kind for magic, kind in SIGNATURES if head.startswith(magic)), "")


def _zip_members(blob: bytes, prefix: str, depth: int, out: list[FoundFile]) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        infos = archive.infolist()[:MAX_ARCHIVE_MEMBERS]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return
    for info in infos:
        name = f"{prefix}/{info.filename}"
        head = b""
        if not info.flag_bits & 0x1:  # encrypted members: judged by name only
            try:
                with archive.open(info) as member:
                    head = member.read(SNIFF_BYTES)  # decompresses only a few bytes
            except Exception:  # corrupt member, unsupported compression: name only
                head = b""
        out.append(FoundFile(name, sniff(head)))
        if head.startswith(ZIP_MAGIC) and depth < MAX_ARCHIVE_DEPTH and info.file_size < 50 * 1024 * 1024:
            try:
                _zip_members(archive.read(info), name, depth + 1, out)
            except Exception:
                continue


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        name = ""
    return str(name).strip() if isinstance(name, str) else ""


def list_files(data: bytes, inspect_archives: bool) -> list[FoundFile]:
    """Every attachment-like part (named, or a non-text leaf) with its sniffed type."""
    out: list[FoundFile] = []
    msg = message_from_bytes(data)
    for count, part in enumerate(msg.walk()):
        if count >= MAX_PARTS:
            break
        if part.is_multipart():
            continue
        name = _filename(part)
        if not name and part.get_content_maintype() == "text":
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            payload = b""
        out.append(FoundFile(name or "(unnamed)", sniff(payload[:SNIFF_BYTES])))
        if inspect_archives and payload.startswith(ZIP_MAGIC):
            _zip_members(payload, name or "(unnamed)", 1, out)
    return out


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> list[FoundFile]:
    return list_files(facts.data, cfg["inspect_archives"])


def blocked(files: list[FoundFile], extensions, types) -> list[str]:
    exts = {e.lower().lstrip(".") for e in extensions}
    bad = []
    for f in files:
        base = f.name.rsplit("/", 1)[-1].lower().rstrip(". ")
        ext = base.rsplit(".", 1)[-1] if "." in base else ""
        if ext in exts:
            bad.append(f"{f.name} (extension .{ext})")
        elif f.sniffed and f.sniffed in types:
            bad.append(f"{f.name} (content is {f.sniffed})")
    return bad


def decide(raw: list[FoundFile], cfg: CheckSettings) -> CheckResult:
    bad = blocked(raw, cfg["blocked_extensions"], cfg["blocked_types"])
    if bad:
        return fired(NAME, cfg.action, "blocked-attachment", "blocked: " + "; ".join(bad[:10]), blocked=bad[:10])
    return passed(NAME, f"{len(raw)} file(s) allowed", blocked=[])
