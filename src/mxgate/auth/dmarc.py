"""DMARC (RFC 7489): record discovery, identifier alignment, and the policy that applies.

Owns: parsing the `_dmarc` TXT record, the organisational domain, relaxed/strict alignment
of the SPF and DKIM identifiers with the RFC5322.From domain, `sp=` for subdomains, and the
`pct=` sampling — decided by a caller-given sample in [0, 100) so the decision stays pure
and testable. Must not know: SPF or DKIM mechanics (it takes their results), what the
disposition does to the message, or ARC (see `arc.arc_overrides_dmarc`).

Only `evaluate_dmarc` does I/O (the TXT lookups through the caller's `dnsfunc`);
`parse_dmarc_record` and `decide_dmarc` are pure.

Organisational domain: the public suffix list bundled with authheaders, read once through
publicsuffix2 in strict mode; a TLD the list does not know (``.test``, ``.internal``) falls
back to PSL's default rule "*" — the org domain is the last two labels.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from mxgate.auth.dkim import DkimResult
from mxgate.auth.dns import DnsTemporaryError
from mxgate.auth.spf import SpfResult
from mxgate.names import normalize_domain

A = TypeVar("A")  # whatever the caller calls an action

DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")  # RFC 8601 §2.7.1
POLICIES = ("none", "quarantine", "reject")  # RFC 7489 §6.3 p=
DMARC_PREFIX = "_dmarc."  # RFC 7489 §6.1
DEFAULT_PCT = 100  # RFC 7489 §6.3 pct= default
# RFC 7489 §6.6.4: a message not sampled gets the next less strict policy.
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")  # RFC 7489 §6.4: v= first, exactly


class DmarcRecordError(ValueError):
    """A record that starts v=DMARC1 but cannot be used (RFC 8601: dmarc=permerror)."""


@dataclass(frozen=True)
class DmarcRecord:
    policy: str
    subdomain_policy: str | None  # None when sp= is absent or invalid (p= applies)
    pct: int
    adkim: str  # "r" relaxed or "s" strict (RFC 7489 §3.1)
    aspf: str


@dataclass(frozen=True)
class DmarcResult:
    result: str  # one of DMARC_RESULTS
    policy: str | None  # p= as published
    subdomain_policy: str | None  # sp= as published
    pct: int | None
    disposition: str  # the policy applied after sp= and pct=: none|quarantine|reject
    domain: str | None  # the RFC5322.From domain evaluated
    aligned_by: str | None  # "dkim" or "spf" when the result is pass
    policy_domain: str | None = None  # where the record was found
    reason: str = ""


def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse one record (RFC 7489 §6.3); unknown tags are ignored, bad optional values defaulted."""
    if not _VERSION.match(text):
        raise DmarcRecordError("record does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip().lower() not in tags:
            tags[key.strip().lower()] = value.strip()
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # RFC 7489 §6.6.3 step 6: with a valid rua= treat as p=none, else no usable policy.
        if tags.get("rua", "").lower().startswith("mailto:"):
            policy = "none"
        else:
            raise DmarcRecordError(f"missing or invalid p= ({tags.get('p', '')!r})")
    sp = tags.get("sp", "").lower()
    pct_text = tags.get("pct", "")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else DEFAULT_PCT
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(policy, sp if sp in POLICIES else None, pct,
                       adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r")


@functools.lru_cache(maxsize=1)
def _public_suffix_list():
    try:
        from publicsuffix2 import PublicSuffixList
        ref = importlib.resources.files("authheaders") / "public_suffix_list.txt"
        with ref.open("r", encoding="utf-8") as handle:
            return PublicSuffixList(handle)
    except (ImportError, OSError):
        return None  # the last-two-labels rule still holds for most names


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label."""
    domain = normalize_domain(domain)
    labels = domain.split(".")
    psl = _public_suffix_list()
    suffix = psl.get_tld(domain, strict=True) if psl is not None else None
    suffix_len = len(suffix.split(".")) if suffix else 1  # PSL default rule "*"
    if len(labels) <= suffix_len:
        return domain
    return ".".join(labels[-(suffix_len + 1):])


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict = identical names; relaxed = same organisational domain."""
    a, b = normalize_domain(identifier), normalize_domain(from_domain)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def decide_dmarc(from_domain: str | None, record: DmarcRecord | None, policy_domain: str | None,
                 spf: SpfResult, spf_domain: str, dkim: Sequence[DkimResult],
                 sample: float = 0.0) -> DmarcResult:
    """Pure DMARC decision from the gathered facts. `sample` in [0, 100) drives pct=."""
    if not from_domain:
        return DmarcResult("permerror", None, None, None, "none", None, None,
                           reason="no single RFC5322.From domain")
    if record is None:
        return DmarcResult("none", None, None, None, "none", from_domain, None, policy_domain,
                           reason="no DMARC record")
    facts = dict(policy=record.policy, subdomain_policy=record.subdomain_policy, pct=record.pct,
                 domain=from_domain, policy_domain=policy_domain)
    if any(r.result == "pass" and aligned(r.domain, from_domain, record.adkim) for r in dkim):
        return DmarcResult("pass", disposition="none", aligned_by="dkim", **facts)
    if spf.result == "pass" and aligned(spf_domain, from_domain, record.aspf):
        return DmarcResult("pass", disposition="none", aligned_by="spf", **facts)
    # An aligned identifier we could not check now may still pass later: do not reject
    # on a DNS hiccup (RFC 7489 leaves this open; the gateway defers instead).
    if (spf.result == "temperror" and aligned(spf_domain, from_domain, record.aspf)) or any(
            r.result == "temperror" and aligned(r.domain, from_domain, record.adkim) for r in dkim):
        return DmarcResult("temperror", disposition="none", aligned_by=None,
                           reason="aligned identifier had a temporary error", **facts)
    is_subdomain = policy_domain is not None and normalize_domain(policy_domain) != from_domain
    applicable = record.subdomain_policy if is_subdomain and record.subdomain_policy else record.policy
    sampled = sample < record.pct  # RFC 7489 §6.6.4
    disposition = applicable if sampled else _DOWNGRADE[applicable]
    reason = "no aligned pass" + ("" if sampled else f"; not sampled (pct={record.pct})")
    return DmarcResult("fail", disposition=disposition, aligned_by=None, reason=reason, **facts)


def policy_action(result: DmarcResult, *, on_reject: A, on_quarantine: A) -> A | None:
    """The one DMARC-to-action decision both roles use (mailbox: auth/pipeline.py; gateway:
    filters/dmarc.py): the organisation's configured action for a failure, only as far as the
    sender's published disposition asks (after sp= and pct=). None when nothing is to be done:
    pass, none, temperror, permerror — a DNS hiccup must never lose mail (RFC 7489 §6.6.3) — or
    a failure under p=none (RFC 7489 §6.6.4 leaves it to the receiver)."""
    if result.result != "fail" or result.disposition not in ("reject", "quarantine"):
        return None
    return on_reject if result.disposition == "reject" else on_quarantine


def _txt_records(dnsfunc: Callable, name: str) -> tuple[bytes, ...]:
    """All TXT records at `name` (a `TxtLookup` gives them all; a plain dnsfunc gives one)."""
    many = getattr(dnsfunc, "txt_records", None)
    if many is not None:
        return tuple(many(name))
    one = dnsfunc(name.encode("ascii", "replace"))
    return (one,) if one else ()


def _discover(domain: str, dnsfunc: Callable) -> tuple[list[str], str]:
    """DMARC records published at _dmarc.<domain> (RFC 7489 §6.6.3 steps 1-3)."""
    records = [r.decode("utf-8", "replace") for r in _txt_records(dnsfunc, DMARC_PREFIX + domain)]
    return [r for r in records if _VERSION.match(r)], domain


def evaluate_dmarc(header_from_domain: str | None, spf: SpfResult, spf_domain: str,
                   dkim: Sequence[DkimResult], dnsfunc: Callable, *, sample: float = 0.0) -> DmarcResult:
    """Discover the policy for the From domain (then its organisational domain) and decide."""
    from_domain = normalize_domain(header_from_domain) if header_from_domain else None
    if not from_domain:
        return decide_dmarc(None, None, None, spf, spf_domain, dkim, sample)
    try:
        found, where = _discover(from_domain, dnsfunc)
        org = organizational_domain(from_domain)
        if not found and org != from_domain:
            found, where = _discover(org, dnsfunc)
    except DnsTemporaryError as exc:
        return DmarcResult("temperror", None, None, None, "none", from_domain, None,
                           reason=f"DMARC record lookup: {exc}")
    if len(found) != 1:  # none, or several: policy discovery ends (RFC 7489 §6.6.3)
        return DmarcResult("none", None, None, None, "none", from_domain, None,
                           reason="no DMARC record" if not found else "multiple DMARC records")
    try:
        record = parse_dmarc_record(found[0])
    except DmarcRecordError as exc:
        return DmarcResult("permerror", None, None, None, "none", from_domain, None, where,
                           reason=str(exc))
    return decide_dmarc(from_domain, record, where, spf, spf_domain, dkim, sample)
