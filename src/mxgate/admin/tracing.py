"""Message trace detail for the admin: the trace row and events, plus what the stored copy shows —
the Received chain with the hop enhanced filtering chose, and the Authentication-Results.

Owns: finding a trace row's stored copy (the recipient's Maildir, by the trace id our Received
header carries; or the quarantine row) and describing its headers. Read-only; must not know
HTTP. The trace itself stays authoritative: the copy only explains it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mxgate.auth.received import parse_received, received_values
from mxgate.delivery.maildir import InvalidMailboxError, mailbox_dirname
from mxgate.smtp import message as msg
from mxgate.store.schema import quarantine

HEAD_BYTES = 64 * 1024  # our Received header is on top; the chain rarely exceeds this
SCAN_LIMIT = 5000  # files examined per lookup, newest first, so a huge Maildir cannot stall a page
_AUTH_RESULTS = re.compile(rb"^(Authentication-Results(?:-Original)?|X-MXGate-[A-Za-z-]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                           re.IGNORECASE | re.MULTILINE)


def _mailbox_for(policy, recipient: str) -> str:
    r = recipient.lower()
    for m in policy.mailboxes:
        if m.address.lower() == r or r in (a.lower() for a in m.aliases):
            return m.address
    return recipient


def find_stored_copy(maildir_root: Path, mailbox: str, trace_id: str, created_at: float) -> bytes | None:
    """The delivered copy carrying `id <trace_id>` in its headers, searched in every folder."""
    try:
        base = Path(maildir_root) / mailbox_dirname(mailbox)
    except InvalidMailboxError:
        return None
    needle = f" id {trace_id}".encode()
    dirs = [base] + [d for d in base.glob(".*") if d.is_dir()] if base.exists() else []
    candidates: list[tuple[float, Path]] = []
    for d in dirs:
        for sub in ("new", "cur"):
            try:
                with os.scandir(d / sub) as it:
                    for e in it:
                        mtime = e.stat().st_mtime
                        if mtime >= created_at - 60:  # delivered at (or just after) the trace time
                            candidates.append((mtime, Path(e.path)))
            except FileNotFoundError:
                continue
    candidates.sort(key=lambda c: abs(c[0] - created_at))
    for _mtime, path in candidates[:SCAN_LIMIT]:
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except OSError:
            continue
        if needle in msg.header_block(head):
            return path.read_bytes()
    return None


def quarantined_copy(engine, trace_id: str) -> bytes | None:
    with engine.connect() as conn:
        row = conn.execute(select(quarantine.c.body).where(quarantine.c.trace_id == trace_id)).first()
    return bytes(row.body) if row else None


def describe_headers(data: bytes, original_ip: str) -> dict[str, Any]:
    """Received chain (newest first) marking our hop and the one enhanced filtering chose."""
    head = msg.header_block(data)
    hops = []
    for i, value in enumerate(received_values(head)):
        hop = parse_received(value)
        ip = str(hop.ip) if hop.ip is not None else ""
        hops.append({"index": i, "value": value, "from_helo": hop.from_helo or "", "ip": ip, "by": hop.by or "",
                     "ours": i == 0, "chosen": bool(original_ip) and ip == original_ip})
    # Mark only the first matching hop below ours: the walk stops at the original sender.
    seen = False
    for h in hops:
        h["chosen"] = h["chosen"] and not seen and not h["ours"]
        seen = seen or h["chosen"]
    auth = [{"name": m.group(1).decode("ascii", "replace"),
             "value": re.sub(rb"\r?\n[ \t]+", b" ", m.group(2)).strip().decode("utf-8", "replace")}
            for m in _AUTH_RESULTS.finditer(head)]
    return {"received": hops, "auth_headers": auth, "subject": msg.header_value(head, "Subject"),
            "from": msg.header_value(head, "From")}


def trace_detail(st, row_id: int) -> dict[str, Any]:
    row = st.trace.show(row_id)
    data: bytes | None = None
    if row["status"] == "Quarantined":
        data = quarantined_copy(st.engine, row["trace_id"])
    elif row["status"] == "Delivered" and row["recipient"]:
        mailbox = _mailbox_for(st.policy_store.current().policy, row["recipient"])
        data = find_stored_copy(st.home.maildir, mailbox, row["trace_id"], row["created_at"])
    row["stored"] = describe_headers(data, row["original_ip"]) if data is not None else None
    row["age"] = time.time() - row["created_at"]
    return row


def readable_detail(detail: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A trace row's detail as (label, text) lines an admin reads — nested tables as dotted
    labels, lists joined, yes/no — never a Python dict repr. The client certificate has its own
    section on the page, so it is left out here."""
    out: list[tuple[str, str]] = []
    for key, value in detail.items():
        if not prefix and key == "certificate":
            continue
        label = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, dict):
            if value:
                out += readable_detail(value, f"{prefix}{key}.")
            else:
                out.append((label, "—"))
        elif isinstance(value, (list, tuple)):
            out.append((label, ", ".join(_plain(v) for v in value) or "—"))
        else:
            out.append((label, _plain(value)))
    return out


def _plain(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)
