"""Building trace rows: one builder for a message's rows and one for a refusal's (mail-flow.md §6).

Owns: what every row of a kind carries — subject and Message-ID read from the stored bytes, the
size, the lower-cased recipient, the Receive/Reject event, one clock reading per batch — so the
roles, internal delivery and the outbound queue describe messages alike. Must not know SMTP
sessions or reply text: callers pass the rendered reply and the facts they gathered.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable, Sequence

from mxgate.smtp.message import header_block, header_values
from mxgate.trace.store import TraceRecord, refusal_status
from mxgate.verdict import Action, Verdict


_ID_BYTES = 8
_BUFFER = _ID_BYTES * 512
_random = b""
_taken = _BUFFER  # bytes of _random already handed out
_random_lock = threading.Lock()


def new_trace_id() -> str:
    """A new trace id: 16 hex digits from the OS's CSPRNG, as secrets.token_hex(8) gives, but
    read 4 KiB at a time — one getrandom() per 512 ids instead of one per refused recipient."""
    global _random, _taken
    with _random_lock:
        if _taken >= _BUFFER:
            _random, _taken = os.urandom(_BUFFER), 0
        chunk = _random[_taken:_taken + _ID_BYTES]
        _taken += _ID_BYTES
    return chunk.hex()


def _forget_random() -> None:
    global _taken
    _taken = _BUFFER  # a forked worker must not hand out the ids its parent still holds


os.register_at_fork(after_in_child=_forget_random)


Row = tuple  # (recipient, status, [(event, detail), ...]) or with a 4th item: this row's own detail


def message_records(trace_id: str, *, sender: str, data: bytes, rows: Iterable[Row], detail: dict[str, Any] | None = None,
                    size: int | None = None, now: float | None = None, **common: Any) -> list[TraceRecord]:
    """One row per recipient of one message. `data` is the message as stored, or its head with
    `size` when the body stays in a spool file (the header block gives subject and Message-ID);
    `detail` and `common` (from_ip, policy_version, role, direction...) are shared by every row;
    a row's own detail is merged over `detail`."""
    now = time.time() if now is None else now
    headers = header_block(data)
    subject, message_id = header_values(headers, "Subject", "Message-ID")
    out = []
    for recipient, status, events, *own in rows:
        out.append(TraceRecord(trace_id=trace_id, status=status, sender=sender, recipient=recipient.lower(),
                               subject=subject, message_id=message_id, size=len(data) if size is None else size,
                               detail={**(detail or {}), **(own[0] if own else {})},
                               events=[(now, e, d) for e, d in events], created_at=now, **common))
    return out


def refusal_records(verdict: Verdict, *, stage: str, reply: str, sender: str, recipients: Sequence[str],
                    detail: dict[str, Any], now: float | None = None, **common: Any) -> list[TraceRecord]:
    """One row per refused recipient (one row without a recipient before RCPT), each with its own
    trace id, the stable reason, and the reply as the client saw it: "Rejected" for a 5xx,
    "Deferred" for a 4xx (the sender retries). Hand them to `TraceStore.record_refusal`."""
    now = time.time() if now is None else now
    status, event_name = refusal_status(verdict.action is Action.TEMPFAIL)
    event = (now, event_name, f"at {stage}: {reply or verdict.reason}")
    return [TraceRecord(trace_id=new_trace_id(), status=status, sender=sender, recipient=r.lower(),
                        reason=verdict.reason, detail={"stage": stage, "reply": reply, **detail}, events=[event],
                        created_at=now, **common)
            for r in (recipients or [""])]
