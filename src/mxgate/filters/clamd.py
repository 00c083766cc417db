"""Malware scanning through a clamd socket (ClamAV's INSTREAM protocol).

Owns: the client side of `zINSTREAM` (4-byte big-endian length-prefixed chunks, a zero-length
chunk to end, a NUL-terminated reply) over a UNIX socket or TCP "host:port", and reading the
reply: "stream: OK", "stream: <name> FOUND", or an error. Must not know: SMTP, or what the
action does. Blocking; the pipeline runs it in a worker thread with its own timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from mxgate.filters.result import SKIP, BudgetExceeded, CheckEnv, current_budget, CheckResult, MessageFacts, errored, fired, passed
from mxgate.names import parse_hostport
from mxgate.policy.gateway_checks import CheckSettings

NAME = "clamd"
CHUNK = 64 * 1024  # clamd's StreamMaxLength applies to the total, not the chunk size
MAX_REPLY = 4096
POLL = 0.25  # seconds between looks at the check's budget while clamd scans


@dataclass(frozen=True)
class ScanResult:
    status: str  # "clean" | "infected" | "error" | "unconfigured"
    signature: str = ""
    detail: str = ""


def _connect(target: str, timeout: float) -> socket.socket:
    if target.startswith("/") or ":" not in target:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(target)
        return sock
    return socket.create_connection(parse_hostport(target), timeout=timeout)


def parse_reply(reply: bytes) -> ScanResult:
    text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
    _, _, verdict = text.partition(": ")
    if verdict == "OK":
        return ScanResult("clean", detail=text)
    if verdict.endswith(" FOUND"):
        return ScanResult("infected", verdict[: -len(" FOUND")], text)
    return ScanResult("error", detail=text or "empty reply")


def scan(target: str, data, timeout: float) -> ScanResult:
    """`data`: bytes or a MessageSource (streamed from the spool file, CHUNK at a time)."""
    chunks = data.chunks(CHUNK) if hasattr(data, "chunks") else (data[i:i + CHUNK] for i in range(0, len(data), CHUNK))
    try:
        with _connect(target, timeout) as sock:
            sock.sendall(b"zINSTREAM\0")
            for chunk in chunks:
                if not chunk:
                    continue
                sock.sendall(struct.pack("!I", len(chunk)) + chunk)
            sock.sendall(struct.pack("!I", 0))
            reply = b""
            budget = current_budget()
            end = time.monotonic() + timeout
            # Wait in short slices, looking at the budget: a stopped check returns within POLL seconds.
            sock.settimeout(POLL)
            while not reply.endswith(b"\0") and len(reply) < MAX_REPLY:
                if budget is not None:
                    budget.check()
                try:
                    part = sock.recv(MAX_REPLY)
                except socket.timeout:
                    if time.monotonic() > end:
                        raise
                    continue
                if not part:
                    break
                reply += part
    except BudgetExceeded:  # stopped (timeout or shutdown): not the scanner's error
        raise
    except OSError as exc:
        return ScanResult("error", detail=f"clamd {target}: {exc.__class__.__name__}: {exc}")
    return parse_reply(reply)


def on_loop(cfg: CheckSettings) -> bool:
    """No socket configured (the default): gather asks nothing, so no worker hop (issue 19)."""
    return not cfg["socket"]


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> ScanResult:
    if not cfg["socket"]:
        return ScanResult("unconfigured")
    return scan(cfg["socket"], facts.source, cfg.timeout)


def decide(raw: ScanResult, cfg: CheckSettings) -> CheckResult:
    if raw.status == "unconfigured":
        return CheckResult(NAME, SKIP, detail="no clamd socket configured")
    if raw.status == "infected":
        return fired(NAME, cfg.action, "malware", f"found {raw.signature}", signature=raw.signature)
    if raw.status == "error":
        return errored(NAME, raw.detail)
    return passed(NAME, "clean")
