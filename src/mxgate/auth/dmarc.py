"""DMARC (RFC 7489): record discovery, identifier alignment, and the policy that applies.

Owns: parsing the `_dmarc` TXT record, the organisational domain, relaxed/strict alignment
of the SPF and DKIM identifiers with the RFC5322.From domain, `sp=` for subdomains, and the
`pct=` sampling — decided by a caller-given sample in [0, 100) so the decision stays pure
and testable. Must not know: SPF or DKIM mechanics (it takes their results), what the
disposition does to the message, or ARC (see `arc.arc_override`).

Only `evaluate_dmarc` / `evaluate_authors` do I/O (the TXT lookups through the caller's
`dnsfunc`); `parse_dmarc_record`, `decide_dmarc` and `strictest` are pure.

Several authors (RFC 7489 §6.6.1): a From field with several addresses, several From fields,
or a From field whose syntax hides where the address is — every author domain found is
evaluated and the strictest result applies, so no sender escapes p=reject by adding a second
address or breaking the syntax (adversarial.md §9).

Domains are compared as IDNA2008 A-labels (the `idna` package, UTS #46 mapping) before the
public-suffix lookup and alignment. Organisational domain: the `publicsuffixlist` package's
bundled Public Suffix List (no fetch at run time); a TLD the list does not know (``.test``)
gets the PSL algorithm's own default rule "*".
"""
from __future__ import annotations

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass, replace
from typing import Callable, Sequence, TypeVar

from publicsuffixlist import PublicSuffixList

from mxgate.auth.dkim import DkimResult
from mxgate.auth.dns import DnsTemporaryError, remember_bounded
from mxgate.auth.spf import SpfResult
from mxgate.names import is_valid_domain, normalize_domain

A = TypeVar("A")  # whatever the caller calls an action

DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")  # RFC 8601 §2.7.1
POLICIES = ("none", "quarantine", "reject")  # RFC 7489 §6.3 p=
DMARC_PREFIX = "_dmarc."  # RFC 7489 §6.1
DEFAULT_PCT = 100  # RFC 7489 §6.3 pct= default
# RFC 7489 §6.6.4: a message not sampled gets the next less strict policy.
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")  # RFC 7489 §6.4: v= first, exactly
# RFC 1035 §2.3.1 labels (underscore tolerated), 1-63 octets each.
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # RFC 6376 §3.2 tag-name (RFC 7489 §6.4)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s!]+(![0-9]+[kmgtKMGT]?)?$")  # RFC 7489 §6.4 dmarc-uri
# How strict a result is, for several authors (RFC 7489 §6.6.1 "the most strict policy").
_RESULT_RANK = {"pass": 0, "none": 1, "permerror": 2, "temperror": 3, "fail": 4}
_DISPOSITION_RANK = {"none": 0, "quarantine": 1, "reject": 2}


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
    authors: tuple[str, ...] = ()  # every author domain evaluated, when there were several
    adkim: str = "r"  # the record's alignment modes (RFC 7489 §3.1), for ARC evidence
    aspf: str = "r"


@functools.lru_cache(maxsize=4096)  # pure, on the record text: a sender's record is parsed once
def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse one record (RFC 7489 §6.3, §6.6.3). Unknown tags are ignored; a duplicated tag
    invalidates the record (RFC 6376 §3.2); a missing or invalid p=, or an invalid sp=,
    means p=none when rua= holds a valid URI, else no usable policy (§6.6.3 step 6)."""
    if not _VERSION.match(text):
        raise DmarcRecordError("record does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not _TAG_NAME.match(key):
            continue  # empty or malformed tag-spec: nothing a receiver can use
        if key in tags:
            raise DmarcRecordError(f"tag {key}= appears twice")
        tags[key] = value.strip()
    policy = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower()
    if policy not in POLICIES or ("sp" in tags and sp not in POLICIES):
        if not _has_valid_uri(tags.get("rua", "")):
            raise DmarcRecordError(f"missing or invalid p= ({tags.get('p', '')!r}) or sp= ({tags.get('sp', '')!r})"
                                   " and no valid rua=")
        return DmarcRecord("none", None, DEFAULT_PCT, "r", "r")  # "as if ... p=none was retrieved"
    pct_text = tags.get("pct", "")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else DEFAULT_PCT
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(policy, sp or None, pct,
                       adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r")


def _has_valid_uri(rua: str) -> bool:
    return any(_URI.match(uri.strip()) for uri in rua.split(","))


_PSL: PublicSuffixList | None = None
_PSL_LOCK = threading.Lock()


def public_suffix_list_loaded() -> bool:
    """Whether the list is parsed already (the gateway's DMARC check runs on the loop only then)."""
    return _PSL is not None


def _public_suffix_list() -> PublicSuffixList:
    """The snapshot bundled with the package (never fetched), parsed once per process. Under a
    lock: a cold `lru_cache` let every check thread of the first burst of mail parse it too
    (~40 ms each, 20 at once in P3 — about a second of CPU after each start)."""
    global _PSL
    psl = _PSL
    if psl is None:
        with _PSL_LOCK:
            if _PSL is None:
                _PSL = PublicSuffixList()
            psl = _PSL
    return psl


def a_label(domain: str) -> str | None:
    """The IDNA2008 A-label form of a domain (names.normalize_domain), or None when it is not a
    valid domain name (names.is_valid_domain)."""
    if len(domain) > _A_LABEL_MEMO_CHARS:  # longer than any valid name: nothing worth keeping
        return _a_label(domain)
    return _a_label_memo(domain)


def _a_label(domain: str) -> str | None:
    name = normalize_domain(domain)
    return name if name and is_valid_domain(name) else None


# Pure on its text. A P3 message asks it ~7 times for the same few names (the author, the
# envelope, the sealer's recorded d= and mailfrom, alignment): each a normalisation plus a
# regex per label twice (issue 19, ~1/3 of `trusted_sealer_results`).
_A_LABEL_MEMO_CHARS = 300
_a_label_memo = functools.lru_cache(maxsize=4096)(_a_label)


def ascii_skeleton(domain: str) -> str:
    """What an invalid name looks like to a reader: NFKC, lower case, only LDH and dots.
    `fabrikam.test` with an invisible or bidi character inside becomes `fabrikam.test`."""
    text = unicodedata.normalize("NFKC", domain).lower()
    return re.sub(r"[^a-z0-9.-]", "", text).strip(".")


def normalise_domain(domain: str) -> str:
    """A-label form when valid, else the lowercased text (compares unequal to valid names)."""
    return a_label(domain) or domain.strip().rstrip(".").lower()


@functools.lru_cache(maxsize=4096)  # a few sender domains carry most mail; several calls per message
def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (on the A-label form)."""
    domain = normalise_domain(domain)
    return _public_suffix_list().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict = identical names; relaxed = same organisational domain."""
    a, b = a_label(identifier or ""), a_label(from_domain or "")
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
                           reason="no RFC5322.From domain")
    if record is None:
        return DmarcResult("none", None, None, None, "none", from_domain, None, policy_domain,
                           reason="no DMARC record")
    facts = dict(policy=record.policy, subdomain_policy=record.subdomain_policy, pct=record.pct,
                 domain=from_domain, policy_domain=policy_domain, adkim=record.adkim, aspf=record.aspf)
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
    is_subdomain = policy_domain is not None and normalise_domain(policy_domain) != from_domain
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
    from_domain = a_label(header_from_domain) if header_from_domain else None
    if not from_domain:
        if header_from_domain:
            return DmarcResult("permerror", None, None, None, "none", header_from_domain[:255], None,
                               reason="RFC5322.From domain is not a valid IDNA2008 name")
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


def author_candidates(domains: Sequence[str]) -> tuple[str, ...]:
    """The domains to evaluate for the author domains as written: each one's A-label, and
    for a name that is not valid IDNA2008 also what it looks like (`ascii_skeleton`), so an
    invisible character cannot hide fabrikam.test's p=reject. Order kept, duplicates dropped."""
    out: list[str] = []
    for domain in domains:
        label = a_label(domain)
        for candidate in ((label,) if label else (domain.strip().rstrip(".")[:255], ascii_skeleton(domain))):
            if candidate and candidate not in out:
                out.append(candidate)
    return tuple(out)


def strictest(results: Sequence[DmarcResult]) -> DmarcResult:
    """RFC 7489 §6.6.1: of several authors' results, the one that asks the most (fail with
    reject > quarantine > none, then temperror, permerror, none, pass)."""
    return max(results, key=lambda r: (_RESULT_RANK.get(r.result, 2), _DISPOSITION_RANK.get(r.disposition, 0)))


def evaluate_authors(domains: Sequence[str], spf: SpfResult, spf_domain: str, dkim: Sequence[DkimResult],
                     dnsfunc: Callable, *, sample: float = 0.0) -> DmarcResult:
    """DMARC for a message with any number of author domains (headers.author_domains):
    every one evaluated, the strictest result returned with `authors` naming them all.
    The same evaluation again is answered from the memo below while its DNS answers stay the same."""
    key = _memo_key(domains, spf, spf_domain, dkim) if MEMO else None
    if key is not None:
        known = _evaluated.get(key)
        if known is not None and _answers_unchanged(known[0], dnsfunc):
            return known[1]
        dnsfunc = _Recording(dnsfunc)
    result = _evaluate_authors(domains, spf, spf_domain, dkim, dnsfunc, sample=sample)
    if key is not None and not dnsfunc.failed and result.result in _REMEMBERED and \
            sum(len(name) + sum(map(len, answer)) for name, answer in dnsfunc.calls) <= MEMO_ANSWER_BYTES:
        _remember(key, (tuple(dnsfunc.calls), result))
    return result


def _evaluate_authors(domains: Sequence[str], spf: SpfResult, spf_domain: str, dkim: Sequence[DkimResult],
                      dnsfunc: Callable, *, sample: float = 0.0) -> DmarcResult:
    candidates = author_candidates(domains)
    if len(candidates) <= 1:
        return evaluate_dmarc(candidates[0] if candidates else None, spf, spf_domain, dkim, dnsfunc, sample=sample)
    results = [evaluate_dmarc(d, spf, spf_domain, dkim, dnsfunc, sample=sample) for d in candidates]
    worst = strictest(results)
    summary = ", ".join(f"{r.domain}={r.result}" + (f"/{r.disposition}" if r.result == "fail" else "")
                        for r in results)
    return replace(worst, authors=candidates,
                   reason=f"{len(candidates)} author domains ({summary}); strictest applies (RFC 7489 §6.6.1)"
                          + (f": {worst.reason}" if worst.reason else ""))


# --- the same evaluation again: the result remembered while its DNS answers stay the same -------
#
# evaluate_authors' result is a function of the author domains as written, the SPF result and
# domain, each DKIM result's word and d= (all decide_dmarc reads of them), the TXT answers at
# _dmarc.<domain> it reads (in an order those answers decide), the bundled public suffix list
# (fixed for the process) and, for a `fail` only, the pct= sample. A stream of mail from one
# sender evaluates the same inputs again (issue 19: ~15 µs of the gateway's loop per message).
# So each TXT lookup is recorded; for the same key the lookups are made again, in order, and only
# when every answer is the one recorded — the evaluation would take the same path to the same
# result — is that result returned. Remembered: pass, none and permerror only (no `fail`, which
# reads the sample; no `temperror`), and nothing from an evaluation in which a lookup failed.
# A lookup error while checking falls back to evaluating, which meets the error itself.

MEMO = True  # False: every message evaluated (the differential tests' reference)
MEMO_MAX = 4096
# What one entry may hold (the sender chooses its domains and records): past these, evaluated
# and not remembered, so the memo stays within ~MEMO_MAX * 5 KB.
MEMO_AUTHORS = 4  # author domains; as many DKIM results
MEMO_KEY_CHARS = 1024  # the domains' characters together
MEMO_ANSWER_BYTES = 4096  # the recorded names and TXT answers together
_REMEMBERED = frozenset(("pass", "none", "permerror"))
_evaluated: dict[tuple, tuple[tuple, DmarcResult]] = {}


def _memo_key(domains: Sequence[str], spf: SpfResult, spf_domain: str, dkim: Sequence[DkimResult]) -> tuple | None:
    """What the result depends on besides DNS and the sample; None when too big to keep."""
    if len(domains) > MEMO_AUTHORS or len(dkim) > MEMO_AUTHORS or \
            sum(map(len, domains)) + len(spf_domain) + sum(len(r.domain) for r in dkim) > MEMO_KEY_CHARS:
        return None
    return tuple(domains), spf.result, spf_domain, tuple([(r.result, r.domain) for r in dkim])


class _Recording:
    """The caller's dnsfunc, recording each TXT lookup's answer (and whether any lookup failed)."""

    __slots__ = ("dnsfunc", "calls", "failed")

    def __init__(self, dnsfunc: Callable) -> None:
        self.dnsfunc = dnsfunc
        self.calls: list[tuple[str, tuple[bytes, ...]]] = []
        self.failed = False

    def txt_records(self, name: str) -> tuple[bytes, ...]:
        try:
            answer = _txt_records(self.dnsfunc, name)
        except BaseException:
            self.failed = True
            raise
        self.calls.append((name, answer))
        return answer


def _answers_unchanged(calls: tuple, dnsfunc: Callable) -> bool:
    try:
        return all(_txt_records(dnsfunc, name) == answer for name, answer in calls)
    except Exception:  # noqa: BLE001 - evaluated again: the evaluation meets it as it would
        return False


def _remember(key: tuple, value: tuple) -> None:
    remember_bounded(_evaluated, key, value, MEMO_MAX)
