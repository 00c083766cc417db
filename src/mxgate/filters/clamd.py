"""Malware scanning through a clamd socket (ClamAV's INSTREAM protocol).

Owns: the client side of `zINSTREAM` (4-byte big-endian length-prefixed chunks, a zero-length
chunk to end, a NUL-terminated reply) over a UNIX socket or TCP "host:port", and reading the
reply: "stream: OK", "stream: <name> FOUND", or an error. Must not know: SMTP, or what the
action does. Blocking; the pipeline runs it in a worker thread with its own timeout.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from mxgate.filters.result import SKIP, CheckEnv, CheckResult, MessageFacts, errored, fired, passed
from mxgate.names import parse_hostport
from mxgate.policy.gateway_checks import CheckSettings

NAME = "clamd"
CHUNK = 64 * 1024  # clamd's StreamMaxLength applies to the total, not the chunk size
MAX_REPLY = 4096


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


def scan(target: str, data: bytes, timeout: float) -> ScanResult:
    try:
        with _connect(target, timeout) as sock:
            sock.sendall(b"zINSTREAM\0")
            for i in range(0, len(data), CHUNK):
                chunk = data[i : i + CHUNK]
                sock.sendall(struct.pack("!I", len(chunk)) + chunk)
            sock.sendall(struct.pack("!I", 0))
            reply = b""
            while not reply.endswith(b"\0") and len(reply) < MAX_REPLY:
                part = sock.recv(MAX_REPLY)
                if not part:
                    break
                reply += part
    except OSError as exc:
        return ScanResult("error", detail=f"clamd {target}: {exc.__class__.__name__}: {exc}")
    return parse_reply(reply)


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> ScanResult:
    if not cfg["socket"]:
        return ScanResult("unconfigured")
    return scan(cfg["socket"], facts.data, cfg.timeout)


def decide(raw: ScanResult, cfg: CheckSettings) -> CheckResult:
    if raw.status == "unconfigured":
        return CheckResult(NAME, SKIP, detail="no clamd socket configured")
    if raw.status == "infected":
        return fired(NAME, cfg.action, "malware", f"found {raw.signature}", signature=raw.signature)
    if raw.status == "error":
        return errored(NAME, raw.detail)
    return passed(NAME, "clean")
