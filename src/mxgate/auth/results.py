"""Compose our one `Authentication-Results` value (RFC 8601) from gathered results.

Owns: the wording and order of the clauses (spf; dkim per signature; dmarc; arc), and the
escaping that keeps attacker-chosen text (HELO, MAIL FROM, d=, b=) from breaking the header
syntax: values are bare only when they are RFC 2045 tokens (plus "@" for addresses,
RFC 8601 §2.2 pvalue), otherwise quoted; comments keep a safe character set only.

Must not know: how the results were obtained, or where the header goes (folding is
`headers.prepend_headers`'s job). Pure, no I/O.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Sequence

from mxgate.auth.arc import ArcResult
from mxgate.auth.dkim import RSA_SHA1_REFUSED, DkimResult
from mxgate.auth.dmarc import DmarcResult
from mxgate.auth.spf import SpfResult, spf_identity

HEADER_NAME = "Authentication-Results"
# RFC 2045 §5.1 token characters, plus "@" which RFC 8601 §2.2 allows in a pvalue.
_BARE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+$")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 .:_@=/+\-]")
# DKIM reasons shown as a comment (RFC 8601 §2.2) after the result: why a signature that may
# well be valid is not accepted. dkimpy's texts never are (they may quote a sender's bytes).
_PUBLIC_DKIM_REASONS = frozenset((RSA_SHA1_REFUSED,))
MAX_VALUE = 255  # keep one hostile value from bloating the header (RFC 5321 path limit is 256)


def pvalue(text: str) -> str:
    """A property value: bare token when possible, else a quoted-string (RFC 5322 §3.2.4)."""
    if not (text.isascii() and text.isprintable()):  # printable ASCII is " " to "~": kept as is
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    text = text[:MAX_VALUE]
    if text and _BARE.match(text) and text.count("@") <= 1 and not text.startswith("@"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(text: str) -> str:
    """A comment holding only characters that cannot end or nest it."""
    return "(" + _COMMENT_SAFE.sub("", text)[:MAX_VALUE].strip() + ")"


def _spf_clause(spf: SpfResult, mail_from: str, helo: str, original_ip: str | None) -> str:
    parts = [f"spf={spf.result}"]
    if original_ip:
        try:
            parts.append(comment(f"sender IP is {ipaddress.ip_address(original_ip.strip('[]'))}"))
        except ValueError:
            pass  # never echo something that is not an address
    _, domain, identity = spf_identity(mail_from, helo)
    if identity == "mailfrom" and domain:
        parts.append("smtp.mailfrom=" + pvalue(domain))
    if helo.strip():
        parts.append("smtp.helo=" + pvalue(helo.strip()))
    return " ".join(parts)


def _dkim_clauses(dkim: Sequence[DkimResult]) -> list[str]:
    if not dkim:
        return ["dkim=none"]  # RFC 8601 §2.7.1: the message was not signed
    clauses = []
    for r in dkim:
        parts = [f"dkim={r.result}"]
        if r.reason in _PUBLIC_DKIM_REASONS:  # our own fixed words; other reasons stay in the trace
            parts.append(comment(r.reason))
        if r.domain:
            parts.append("header.d=" + pvalue(r.domain))
        if r.selector:
            parts.append("header.s=" + pvalue(r.selector))
        if r.header_b:
            parts.append("header.b=" + pvalue(r.header_b))  # RFC 6008
        clauses.append(" ".join(parts))
    return clauses


def _dmarc_clause(dmarc: DmarcResult, header_from_domain: str | None) -> str:
    parts = [f"dmarc={dmarc.result}"]
    if dmarc.policy:
        policy = f"p={dmarc.policy}"
        if dmarc.subdomain_policy:
            policy += f" sp={dmarc.subdomain_policy}"
        parts.append(comment(f"{policy} pct={dmarc.pct}"))
    parts.append(f"action={dmarc.disposition}")  # EXO's wording, familiar to its admins
    if header_from_domain:
        parts.append("header.from=" + pvalue(header_from_domain))
    return " ".join(parts)


def _noted(clause: str, text: str) -> str:
    """`method=result (text) props...`: RFC 8601 §2.2 allows a comment after the result."""
    head, _, rest = clause.partition(" ")
    return f"{head} {comment(text)}" + (f" {rest}" if rest else "")


def _arc_clause(arc: ArcResult) -> str:
    if arc.status == "pass" and arc.sealers:
        return f"arc=pass {comment('sealed by ' + arc.sealers[-1])}"
    return f"arc={arc.status}"


def authentication_results_clauses(authserv_id: str, spf: SpfResult, mail_from: str, helo: str,
                                   original_ip: str | None, dkim: Sequence[DkimResult],
                                   dmarc: DmarcResult | None, arc: ArcResult | None,
                                   header_from_domain: str | None, *, results_from: str = "") -> tuple[str, ...]:
    """The authserv-id, then one `method=result ...` clause per result, each one line. The ARC
    seal copies these clauses into ARC-Authentication-Results as they are (auth/arc.py).
    `results_from` names the trusted ARC set whose recorded spf/dkim/dmarc results these are
    (the mailbox did not verify them again): each of those clauses says so. Pure, and the same
    results come back for message after message from one sender: remembered (1,024 kept)."""
    return _clauses(authserv_id, spf, mail_from, helo, original_ip, tuple(dkim), dmarc, arc, header_from_domain,
                    results_from)


@functools.lru_cache(maxsize=1024)
def _clauses(authserv_id: str, spf: SpfResult, mail_from: str, helo: str, original_ip: str | None,
             dkim: tuple[DkimResult, ...], dmarc: DmarcResult | None, arc: ArcResult | None,
             header_from_domain: str | None, results_from: str) -> tuple[str, ...]:
    note = (lambda clause: _noted(clause, "from " + results_from)) if results_from else (lambda clause: clause)
    # A carried SPF result is the sealer's, for the address and HELO it saw: ours are not named.
    spf_clause = _spf_clause(spf, mail_from, "", None) if results_from else _spf_clause(spf, mail_from, helo, original_ip)
    clauses = [pvalue(authserv_id.strip()), note(spf_clause)]
    clauses.extend(note(c) if dkim else c for c in _dkim_clauses(dkim))
    if dmarc is not None:
        clauses.append(note(_dmarc_clause(dmarc, header_from_domain)))
    if arc is not None:
        clauses.append(_arc_clause(arc))
    return tuple(clauses)


def format_authentication_results(authserv_id: str, spf: SpfResult, mail_from: str, helo: str,
                                  original_ip: str | None, dkim: Sequence[DkimResult],
                                  dmarc: DmarcResult | None, arc: ArcResult | None,
                                  header_from_domain: str | None, *, results_from: str = "") -> str:
    """One Authentication-Results value, clauses joined by "; " (unfolded)."""
    return "; ".join(authentication_results_clauses(authserv_id, spf, mail_from, helo, original_ip, dkim, dmarc,
                                                    arc, header_from_domain, results_from=results_from))
