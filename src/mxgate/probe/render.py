"""Presenting probe and MX results: a readable transcript with timings, and a stable JSON shape.

Owns: the text layout (`  0.012 S: 220 ...`), the one-line verdict, and the JSON keys, which
scripts depend on — add keys, never rename them.

Must not know: how the results were obtained (no sockets, no DNS) or process exit codes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mxgate.probe.client import ProbeResult
from mxgate.probe.expect import Expectation, describe, judge
from mxgate.probe.mx import MxResult
from mxgate.probe.raw import RawResult

JSON_SCHEMA_VERSION = 1
_ARROW = {"C": "C:", "S": "S:", "*": "**"}


def verdict_line(result: ProbeResult, expectation: Expectation | None = None) -> str:
    """One line a human or a log grep can act on."""
    what = describe(result)
    line = f"VERDICT: {what}"
    if result.outcome in ("reject", "tempfail") and result.reply:
        line += f" — {result.reply}"
    if expectation is not None:
        ok, why = judge(expectation, result)
        line += f" | expect {expectation}: {'PASS' if ok else 'FAIL'}"
        if not ok:
            line += f" ({why})"
    return line


def render_text(result: ProbeResult, expectation: Expectation | None = None) -> str:
    out = []
    for line in result.transcript:
        out.append(f"{line.t:8.3f} {_ARROW[line.direction]} {line.text}")
    if result.tls is not None:
        t = result.tls
        out += [
            "",
            f"TLS:         {t.version} {t.cipher} ({'verified' if t.verified else 'not verified'})",
            f"subject:     {t.subject}",
            f"issuer:      {t.issuer}",
            f"names:       {', '.join(t.sans) or '-'}",
            f"not after:   {t.not_after}",
            f"sha256:      {t.sha256}",
        ]
    else:
        out += ["", "TLS:         none (clear text)"]
    if result.accepted_rcpts or result.refused_rcpts:
        out.append(f"accepted:    {', '.join(result.accepted_rcpts) or '-'}")
        for r in result.refused_rcpts:
            out.append(f"refused:     {r.address}: {r.code} {r.reply}")
    out.append(f"duration:    {result.duration:.3f}s")
    out.append(verdict_line(result, expectation))
    return "\n".join(out) + "\n"


def render_json(result: ProbeResult, expectation: Expectation | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": JSON_SCHEMA_VERSION,
        "outcome": result.outcome,
        "stage": result.stage,
        "code": result.code,
        "enhanced": result.enhanced,
        "reply": result.reply,
        "duration": result.duration,
        "tls": asdict(result.tls) if result.tls is not None else None,
        "accepted_rcpts": list(result.accepted_rcpts),
        "refused_rcpts": [asdict(r) for r in result.refused_rcpts],
        "transcript": [{"t": ln.t, "dir": ln.direction, "text": ln.text} for ln in result.transcript],
        "verdict": describe(result),
    }
    if result.tls is not None:
        doc["tls"]["sans"] = list(result.tls.sans)
    if expectation is not None:
        ok, why = judge(expectation, result)
        doc["expect"] = {"expression": str(expectation), "matched": ok, "explanation": why}
    return doc


def render_mx_text(result: MxResult) -> str:
    out = [f"MX for {result.domain}:"]
    if result.error:
        out.append(f"  error: {result.error}")
    if result.null_mx:
        out.append("  null MX (RFC 7505): this domain accepts no mail")
    if result.implicit:
        out.append("  no MX records: implicit MX is the domain itself (RFC 5321 §5.1)")
    for h in result.hosts:
        addrs = ", ".join(h.addresses) or "no addresses"
        err = f"  [{h.error}]" if h.error else ""
        out.append(f"  {h.preference:5d} {h.name}  {addrs}{err}")
    return "\n".join(out) + "\n"


def render_mx_json(result: MxResult) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA_VERSION,
        "domain": result.domain,
        "implicit": result.implicit,
        "null_mx": result.null_mx,
        "error": result.error,
        "hosts": [{"preference": h.preference, "name": h.name, "addresses": list(h.addresses),
                   "error": h.error} for h in result.hosts],
    }


def render_raw_text(result: RawResult) -> str:
    out = [f"{ln.t:8.3f} {_ARROW[ln.direction]} {ln.text}" for ln in result.transcript]
    codes = " | ".join(",".join(map(str, c)) or "-" for c in result.replies)
    end = "error: " + result.error if result.error else (
        "server closed the connection" if result.closed_by_server else "client closed the connection")
    out.append(f"RAW: replies per step: {codes or '-'}; {end}; {result.duration:.3f}s")
    return "\n".join(out) + "\n"


def render_raw_json(result: RawResult) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA_VERSION,
        "mode": "raw",
        "replies": [list(c) for c in result.replies],
        "closed_by_server": result.closed_by_server,
        "error": result.error,
        "duration": result.duration,
        "transcript": [{"t": ln.t, "dir": ln.direction, "text": ln.text} for ln in result.transcript],
    }
