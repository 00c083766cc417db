"""JSON log lines (one object per line) with a session id where there is one; secrets never logged.

Owns: log setup for `mxgate serve`. Anything that looks like a credential (AUTH payloads,
passwords, tokens) is replaced before formatting, whatever the caller passed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET_WORDS = ("password", "passwd", "secret", "token", "auth plain", "auth login")
_SECRET = re.compile(r"(?i)(" + "|".join(_SECRET_WORDS) + r")([=: ]+)(\S+)")


def redact(message: str) -> str:
    """``message`` with the value after each secret word replaced. The regex scan costs ~7 µs
    a line (issue 19): an ASCII line without any of the words (any case) cannot match, so it
    is skipped. Not a non-ASCII line: IGNORECASE matches some letters to ASCII ones
    that lower() leaves apart (U+017F LONG S ~ s)."""
    if message.isascii():
        lowered = message.lower()
        if not any(word in lowered for word in _SECRET_WORDS):
            return message
    return _SECRET.sub(r"\1\2[redacted]", message)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key in ("session", "peer", "trace_id", "reason"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "info", file: str = "") -> None:
    root = logging.getLogger()
    root.handlers.clear()
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    if file:
        # Reopened when logrotate moves the file away (no copytruncate needed; docs/operations.md).
        from logging.handlers import WatchedFileHandler

        fh = WatchedFileHandler(file)
        fh.setFormatter(JsonFormatter())
        root.addHandler(fh)
    root.setLevel(level.upper())
    # JsonFormatter writes no pid, thread or process name: a record need not look them up (a
    # getpid syscall and two lookups per record, a few records per message; issue 19).
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    # Libraries' chatter (Alembic lists its plugins on every start) is not the operator's news.
    for noisy in ("asyncio", "alembic", "uvicorn", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
