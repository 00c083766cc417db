"""Delivery Status Notifications: the bounce (or delay warning) the gateway sends its sender.

Owns: the RFC 3464 ``multipart/report; report-type=delivery-status`` message — a human part,
the machine-readable ``message/delivery-status`` part, and the original headers as
``text/rfc822-headers`` (RFC 6522) — and the rule never to bounce a bounce. When an address is
not ASCII (SMTPUTF8 mail) the report is the RFC 6533 form: ``message/global-delivery-status``
with ``utf-8`` address types and the original headers as ``message/global-headers``.
Must not know: the spool, SMTP transport, retry timing. Pure apart from a default ``date``
and a random boundary/Message-ID; the caller sends the bytes with ``MAIL FROM:<>``
(:data:`DSN_ENVELOPE_SENDER`, RFC 5321 §4.5.5) to the original envelope sender.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

CRLF = b"\r\n"
DSN_ENVELOPE_SENDER = ""  # RFC 5321 §4.5.5: notifications use the null reverse-path
ACTIONS = ("failed", "delayed")  # RFC 3464 §2.3.3 actions this gateway reports
MAX_FIELD_CHARS = 900  # stays under the 998-octet line limit of RFC 5322 §2.1.1 with the name
MAX_HEADER_BYTES = 100 * 1024  # same bound as the header block the gateway accepts
_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")  # RFC 3463 status-code
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


class DsnError(ValueError):
    """The DSN cannot be built from these values (a field would break the message)."""


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient to report. ``diagnostic`` is typed, e.g. ``smtp; 550 5.1.1 no such user``."""

    address: str
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None
    original_recipient: str | None = None  # the ORCPT value when the client gave one (RFC 3461)
    will_retry_until: datetime | None = None  # for ``delayed`` reports


def _clean(value: str) -> str:
    """One header-safe line: control characters become spaces, non-ASCII becomes ``?``."""
    text = "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in value)
    text = text.encode("ascii", "replace").decode("ascii").strip()
    if len(text) > MAX_FIELD_CHARS:
        text = text[: MAX_FIELD_CHARS - 3] + "..."
    return text


def _address(value: str, what: str) -> str:
    # Addresses come from the SMTP layer already parsed; anything with line breaks here is a
    # bug or an injection attempt, so refuse instead of cleaning.
    if not value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise DsnError(f"{what} is not a usable address: {value!r}")
    return value


def _date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return format_datetime(value)


def _typed(kind: str, value: str) -> str:
    # RFC 3464 fields are "type; value"; accept a value that already names its type.
    return value if ";" in value.split(" ", 1)[0] else f"{kind}; {value}"


def original_header_block(message_or_headers: bytes) -> bytes:
    """The header section (up to the first empty line) with CRLF endings, bounded in size."""
    head = re.split(rb"\r?\n\r?\n", message_or_headers, maxsplit=1)[0]
    lines = _LINE_ENDS.split(head)
    out: list[bytes] = []
    size = 0
    for line in lines:
        if size + len(line) + 2 > MAX_HEADER_BYTES:
            break  # cut at a line boundary, never mid-line
        out.append(line)
        size += len(line) + 2
    return CRLF.join(out) + CRLF if out and any(out) else b""


def _is_global(sender: str, failed: Sequence[FailedRecipient]) -> bool:
    """RFC 6533 is needed when an address the report names is not ASCII."""
    names = [sender] + [r.address for r in failed] + [r.original_recipient or "" for r in failed]
    return not all(n.isascii() for n in names)


def _recipient_field(address: str, utf8: bool) -> str:
    # RFC 6533 §3: in message/global-delivery-status a UTF-8 address is sent as is, type "utf-8".
    return f"utf-8; {address}" if utf8 and not address.isascii() else f"rfc822; {address}"


def _human_text(reporting_mta: str, failed: Sequence[FailedRecipient], action: str) -> list[str]:
    if action == "failed":
        lines = [
            f"This is the mail system at host {reporting_mta}.",
            "",
            "Your message could not be delivered to one or more recipients.",
            "It has been returned to you; the details follow.",
        ]
    else:
        lines = [
            f"This is the mail system at host {reporting_mta}.",
            "",
            "Your message has not been delivered yet to one or more recipients.",
            "The mail system will keep trying; you do not need to send it again.",
        ]
    lines.append("")
    for rcpt in failed:
        detail = _clean(rcpt.diagnostic) if rcpt.diagnostic else rcpt.status
        lines.append(f"<{rcpt.address}>: {detail}")
    return lines


def build_dsn(
    reporting_mta: str,
    original_sender: str,
    original_envelope_id: str | None,
    failed: Sequence[FailedRecipient],
    original_headers: bytes,
    arrival_date: datetime,
    action: str = "failed",
    *,
    date: datetime | None = None,
) -> bytes | None:
    """Build the DSN message (CRLF line endings), or None when it must not be sent.

    None when the original envelope sender is null (``""``/``<>``): a notification about a
    notification could loop forever (RFC 3464 §2, RFC 5321 §4.5.5).
    """
    sender = original_sender.strip()
    if sender in ("", "<>"):
        return None
    sender = _address(sender.strip("<>"), "original sender")
    if action not in ACTIONS:
        raise DsnError(f"action must be one of {ACTIONS}, got {action!r}")
    if not failed:
        raise DsnError("a DSN needs at least one recipient")
    mta = _clean(reporting_mta)
    if not mta or " " in mta:
        raise DsnError(f"reporting MTA is not a host name: {reporting_mta!r}")
    for rcpt in failed:
        _address(rcpt.address, "recipient")
        if not _STATUS_RE.match(rcpt.status):
            raise DsnError(f"status {rcpt.status!r} of {rcpt.address} is not an RFC 3463 code")

    utf8 = _is_global(sender, failed)
    report = "global-delivery-status" if utf8 else "delivery-status"  # RFC 6522 §3: the 2nd part's subtype
    boundary = f"=_mxgate_{secrets.token_hex(12)}"
    now = date or datetime.now(timezone.utc)
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{secrets.token_hex(16)}@{mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: automatic responders must not reply to it
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report}; boundary="{boundary}"',
    ]

    per_message = [f"Reporting-MTA: dns; {mta}"]
    if original_envelope_id:
        per_message.append(f"Original-Envelope-Id: {_clean(original_envelope_id)}")
    per_message.append(f"Arrival-Date: {_date(arrival_date)}")
    status_lines = list(per_message)
    for rcpt in failed:
        status_lines.append("")
        if rcpt.original_recipient:
            orcpt = rcpt.original_recipient
            status_lines.append(f"Original-Recipient: {_recipient_field(_address(orcpt, 'ORCPT'), True)}"
                                if utf8 and not orcpt.isascii() else
                                f"Original-Recipient: {_typed('rfc822', _clean(orcpt))}")
        status_lines += [f"Final-Recipient: {_recipient_field(rcpt.address, utf8)}", f"Action: {action}",
                         f"Status: {rcpt.status}"]
        if rcpt.remote_mta:
            status_lines.append(f"Remote-MTA: {_typed('dns', _clean(rcpt.remote_mta))}")
        if rcpt.diagnostic:
            status_lines.append(f"Diagnostic-Code: {_typed('smtp', _clean(rcpt.diagnostic))}")
        if action == "delayed" and rcpt.will_retry_until is not None:
            status_lines.append(f"Will-Retry-Until: {_date(rcpt.will_retry_until)}")

    orig = original_header_block(original_headers)
    orig_cte = [] if orig.isascii() else ["Content-Transfer-Encoding: 8bit"]
    charset = "utf-8" if utf8 else "us-ascii"

    def text(lines: list[str]) -> bytes:
        return "\r\n".join(lines).encode(charset) + CRLF

    # RFC 6533 §6.3/§6.4: UTF-8 report fields and headers travel as message/global-*, 8bit.
    eight = ["Content-Transfer-Encoding: 8bit"] if utf8 else []
    parts = [
        text([f"Content-Type: text/plain; charset={charset}", "Content-Description: Notification", *eight, ""])
        + text(_human_text(mta, failed, action)),
        text([f"Content-Type: message/{report}", "Content-Description: Delivery report", *eight, ""])
        + text(status_lines),
        text([f"Content-Type: {'message/global-headers' if utf8 else 'text/rfc822-headers'}",
              "Content-Description: Undelivered message headers", *orig_cte, ""])
        + orig,
    ]
    delimiter = f"--{boundary}".encode("ascii")
    body = b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--" + CRLF
    return text(headers) + CRLF + text(["This is a MIME-encapsulated message.", ""]) + body
