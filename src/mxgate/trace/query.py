"""Trace search arguments as the admin gives them (CLI, API, pages): one parser, one set of errors.

Owns: reading times (epoch seconds, ISO 8601 — UTC unless an offset is given — or "15m"/"2h"/"3d"
ago), normalising the address and checking status and limit. Must not query the store.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from mxgate.errors import PolicyFormatError
from mxgate.trace.store import STATUSES

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000


def parse_time(value: str | None, name: str, now: float | None = None) -> float | None:
    if value is None or value == "":
        return None
    if value[-1] in _UNITS and value[:-1].isdigit():
        return (time.time() if now is None else now) - int(value[:-1]) * _UNITS[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PolicyFormatError(f"{name}: expected an ISO 8601 time (2026-11-27T12:00), epoch seconds "
                                f"or 15m/2h/3d, got {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def _address(value: str) -> str:
    """The trace stores addresses normalised (names.normalize_ip); the filter is compared the same
    way, so 2001:DB8::7 and ::ffff:203.0.113.9 find what 2001:db8::7 and 203.0.113.9 do."""
    from mxgate.names import normalize_ip

    try:
        return str(normalize_ip(value))
    except ValueError:
        raise PolicyFormatError(f"ip: expected an IPv4 or IPv6 address, got {value!r}") from None


def search_args(since: str | None, until: str | None, sender: str | None, recipient: str | None,
                status: str | None, ip: str | None, message_id: str | None, limit: int,
                offset: int = 0) -> dict[str, Any]:
    if status and status not in STATUSES:
        raise PolicyFormatError(f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise PolicyFormatError(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise PolicyFormatError(f"offset: must be between 0 and {MAX_OFFSET}, got {offset}")
    return {"offset": offset, "since": parse_time(since, "since"), "until": parse_time(until, "until"), "sender": sender or None,
            "recipient": recipient or None, "status": status or None, "ip": _address(ip) if ip else None,
            "message_id": message_id or None, "limit": limit}
