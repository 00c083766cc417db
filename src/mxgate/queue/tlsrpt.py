"""SMTP TLS Reporting (RFC 8460): what happened to TLS on outbound MX sessions, per recipient
domain and day, as the JSON report a domain asks for in its `_smtp._tls` TXT record.

Owns: recording one line per MX session attempt (`<home>/spool/tls-rpt/<day>.jsonl`, appended,
one writer per process), the failure vocabulary of RFC 8460 §4.3 (starttls-not-supported,
certificate-host-mismatch, certificate-expired, validation-failure, ...), and `build_report`, the
pure assembly of §4.4's JSON (organization-name, date-range, contact-info, report-id, policies
with their summary and failure-details).
Must not know: SMTP sessions (the outbound runner calls `record`) or how reports are sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

POLICY_TYPES = ("sts", "tlsa", "no-policy-found")


@dataclass(frozen=True)
class TlsResult:
    domain: str
    policy_type: str  # POLICY_TYPES
    success: bool
    result_type: str = ""  # RFC 8460 §4.3, for failures
    mx_host: str = ""
    receiving_ip: str = ""
    sending_ip: str = ""
    policy_strings: tuple[str, ...] = ()
    at: float = 0.0


def classify(error: str) -> str:
    """The §4.3 result type of a session's trouble text (queue/relay.py's host errors)."""
    e = error.lower()
    if "starttls not offered" in e:
        return "starttls-not-supported"
    if "tlsa" in e:  # §4.3.2: the certificate matched none of the host's TLSA records
        return "tlsa-invalid"
    if "hostname mismatch" in e or "doesn't match" in e or "not valid for" in e:
        return "certificate-host-mismatch"
    if "expired" in e:
        return "certificate-expired"
    if "certificate" in e or "ssl" in e or "tls" in e:
        return "validation-failure"
    return ""


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


class TlsReports:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def record(self, r: TlsResult) -> None:
        at = r.at or time.time()
        line = json.dumps({"at": at, "domain": r.domain.lower(), "policy_type": r.policy_type, "success": r.success,
                           "result_type": r.result_type, "mx_host": r.mx_host, "receiving_ip": r.receiving_ip,
                           "sending_ip": r.sending_ip, "policy_strings": list(r.policy_strings)})
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / f"{_day(at)}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def results(self, domain: str, day: str) -> list[TlsResult]:
        path = self.directory / f"{day}.jsonl"
        out = []
        if not path.exists():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: the rest of the day still counts
            if d.get("domain") == domain.lower():
                out.append(TlsResult(d["domain"], d["policy_type"], d["success"], d.get("result_type", ""),
                                     d.get("mx_host", ""), d.get("receiving_ip", ""), d.get("sending_ip", ""),
                                     tuple(d.get("policy_strings", ())), d.get("at", 0.0)))
        return out


def build_report(results: list[TlsResult], *, domain: str, day: str, organization: str, contact: str,
                 report_id: str) -> dict:
    """Pure: the RFC 8460 §4.4 report for `domain` over the UTC day `day` (YYYY-MM-DD)."""
    policies: dict[tuple, list[TlsResult]] = {}
    for r in results:
        policies.setdefault((r.policy_type, r.policy_strings), []).append(r)
    out = []
    for (ptype, strings), rs in sorted(policies.items()):
        details = Counter((r.result_type, r.sending_ip, r.receiving_ip, r.mx_host) for r in rs if not r.success)
        policy = {"policy-type": ptype, "policy-domain": domain.lower()}
        if strings:
            policy["policy-string"] = list(strings)
        out.append({
            "policy": policy,
            "summary": {"total-successful-session-count": sum(1 for r in rs if r.success),
                        "total-failure-session-count": sum(1 for r in rs if not r.success)},
            "failure-details": [{"result-type": rt or "validation-failure", "sending-mta-ip": sip,
                                 "receiving-ip": rip, "receiving-mx-hostname": mx, "failed-session-count": n}
                                for (rt, sip, rip, mx), n in sorted(details.items())],
        })
    return {"organization-name": organization,
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": contact, "report-id": report_id, "policies": out}
