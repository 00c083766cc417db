"""ARC (RFC 8617): validating a received chain, sealing a message, and the trust decision.

Owns: calling dkimpy's `arc_verify`/`arc_sign` safely — mapping its outcomes onto the
RFC 8617 §4.4 chain statuses (none/pass/fail), listing who sealed, bounding the work, and
working around dkimpy's silent `[]` from `arc_sign` when no `Authentication-Results` with
the sealer's authserv-id is on the message. Must not know: DMARC record mechanics or which
sealers an organisation trusts (the caller passes `arc_trusted_sealers` to the pure
`arc_override`).

ARC overrides DMARC only on evidence (RFC 8617 §7.2 leaves the trust decision to the
receiver): the chain validates, its latest sealer is trusted, and that sealer's own
ARC-Authentication-Results shows an aligned pass for the author domain that failed here —
dmarc=pass for it, or spf=pass / dkim=pass aligned with it — and records no DMARC result
other than pass. A sealer that recorded dmarc=fail, or could not finish its checks
(temperror), vouches for nothing.

Algorithms: a chain validates only when its ARC-Seals and latest ARC-Message-Signature say
a=rsa-sha256 (dkimpy's ARC verifier; the chain is `fail` otherwise). rsa-sha1 is refused as
for DKIM (RFC 8301 §3.1). ed25519-sha256, which RFC 8617 (a= as DKIM's) does not rule out, is
not accepted either, by decision: no sealer we know seals with it, dkimpy's ARC verifier and
the ARC test suites know rsa-sha256 only, and refusing fails safe — a failed chain overrides no
DMARC failure and carries no sealer's results, so the message is judged on its own SPF, DKIM
and DMARC (where Ed25519 DKIM does verify). To accept it: add it to dkimpy's
ARC_HASH_ALGORITHMS and turn tests/auth/test_dkim_algorithms.py's ARC case around.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Sequence

import authres
import dkim as dkimpy

from mxgate.auth import dkim_canon, dkim_fast, rsa_signing  # noqa: F401  (OpenSSL signs, remembered canonicalisation for dkimpy; see the modules)
from dkim.util import InvalidTagValueList
from mxgate.auth.dkim_tags import parse_tag_value

from mxgate.auth.dkim import DKIM_RESULTS, HEADER_B_PREFIX, DkimResult, unsuitable_key
from mxgate.auth.dmarc import DmarcResult, aligned, normalise_domain
from mxgate.auth.spf import SPF_RESULTS, SpfResult
from mxgate.auth.dns import DnsTemporaryError
from mxgate.auth.headers import HeaderField, authserv_id_of, header_length, line_ending, parse_fields, split_headers

ARC_STATUSES = ("none", "pass", "fail")  # RFC 8617 §4.4 chain validation status
MAX_ARC_INSTANCE = 50  # RFC 8617 §4.2.1: i= ranges from 1 to 50
_CV = {dkimpy.CV_Pass: "pass", dkimpy.CV_None: "none", dkimpy.CV_Fail: "fail"}


class ArcSealError(ValueError):
    """The message cannot be sealed as asked (the text says what to change)."""


@dataclass(frozen=True)
class ArcResult:
    status: str  # one of ARC_STATUSES
    sealers: tuple[str, ...]  # d= of each ARC-Seal, instance 1 first
    reason: str = ""
    # (instance, ARC-Authentication-Results value after `i=N;`), instance 1 first: what
    # each sealer recorded about the message when it received it (RFC 8617 §4.1.1).
    auth_results: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class ArcOverride:
    """Whether a DMARC failure may be overridden, and the evidence: which ARC set (instance
    and sealer) and which of its recorded results were used — for the message trace."""

    applies: bool
    instance: int | None = None
    sealer: str | None = None
    evidence: str = ""  # the recorded result relied on, e.g. "spf=pass smtp.mailfrom=a.test"
    explanation: str = ""


def arc_seals(message: bytes) -> list[tuple[int, str]]:
    """(instance, d=) of every ARC-Seal field, sorted by instance; unparsable ones skipped."""
    return _seals(parse_fields(split_headers(message)[0]))


def _seals(fields) -> list[tuple[int, str]]:
    seals: list[tuple[int, str]] = []
    for field in fields:
        if field.name != b"arc-seal":
            continue
        try:
            tags = parse_tag_value(field.value)
            instance = int(tags.get(b"i", b"0").strip())
        except (InvalidTagValueList, ValueError):
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").strip().rstrip(".").lower()
        seals.append((instance, domain))
    return sorted(seals)


def arc_fields(message: bytes) -> list[tuple[bytes, int | None]]:
    """(lower-case name, instance) of every ARC header field, in order; the instance is None
    when i= is missing or not a number from 1 to 50 (RFC 8617 §4.2.1)."""
    return _arc_fields(parse_fields(split_headers(message)[0]))


def _arc_fields(fields) -> list[tuple[bytes, int | None]]:
    return [(field.name, _instance(field)) for field in fields if field.name in _ARC_FIELDS]


def _arc_reading(fields) -> tuple[list[tuple[int, str]], list[tuple[bytes, int | None]], tuple[tuple[int, str], ...]]:
    """(`_seals`, `_arc_fields`, `_auth_results`) of the same fields in one pass that reads each
    ARC field once (issue 19: the three readings went over every field and read each ARC field
    twice)."""
    seals: list[tuple[int, str]] = []
    arc: list[tuple[bytes, int | None]] = []
    found: dict[int, str] = {}
    for field in fields:
        name = field.name
        if name not in _ARC_FIELDS:
            continue
        if name == b"arc-authentication-results":
            match = _AAR_INSTANCE.match(field.value.decode("utf-8", "replace"))
            text = match.group(1) if match else ""
            if match and int(text) not in found:
                found[int(text)] = match.group(2).strip()
        else:
            try:
                tags = parse_tag_value(field.value)
            except (InvalidTagValueList, ValueError):
                tags = None
            text = tags.get(b"i", b"").decode("ascii", "replace").strip() if tags is not None else ""
            if tags is not None and name == b"arc-seal":
                try:
                    instance = int(tags.get(b"i", b"0").strip())
                except ValueError:
                    pass
                else:
                    seals.append((instance, tags.get(b"d", b"").decode("ascii", "replace").strip().rstrip(".").lower()))
        arc.append((name, int(text) if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ARC_INSTANCE else None))
    return sorted(seals), arc, tuple(sorted(found.items()))


def validate_arc(message: bytes, dnsfunc: Callable) -> ArcResult:
    """Validate the whole chain (RFC 8617 §5.2). DNS trouble makes the chain `fail`:
    RFC 8617 has no temporary status, and an unvalidated chain must not be trusted."""
    if not _may_carry_arc(message):
        # No ARC field in the header section: the chain is `none` (RFC 8617 §4.4), what dkimpy
        # answers too after parsing the whole message (7% of the mailbox's CPU in bench P1).
        return ArcResult("none", (), _NOT_ARC_SIGNED)
    head, body = split_headers(message)
    head_fields = parse_fields(head)  # once, for the readings below and dkimpy's parse
    seals, fields, auth_results = _arc_reading(head_fields)
    sealers = tuple(domain for _, domain in seals)
    if seals and (seals[-1][0] > MAX_ARC_INSTANCE or len(seals) > MAX_ARC_INSTANCE):
        return ArcResult("fail", sealers, f"more than {MAX_ARC_INSTANCE} ARC sets")
    # RFC 8617 §5.2 step 2: every ARC field belongs to a set 1..N; one that names no valid
    # instance, or sets without their ARC-Seal, make the chain structurally invalid.
    if any(instance is None for _, instance in fields):
        return ArcResult("fail", sealers, "ARC header field without a valid i= (RFC 8617 4.2.1)")
    if fields and not seals:
        return ArcResult("fail", sealers, "ARC header fields without an ARC-Seal (RFC 8617 5.2)")
    dkim_canon.remember_parse(message, head_fields, body)  # the verifiers' parse, from ours
    lookups = dkim_fast.Lookups(dnsfunc)  # one question per key, shared with dkimpy below
    if dkim_fast.ENABLED and len(seals) == 1 and dkim_fast.arc_chain_passes(message, lookups):
        # One set, AMS and seal verified as dkimpy would: its (pass, "success") without its flow.
        return ArcResult("pass", sealers, "success", auth_results)
    try:
        cv, _results, reason = dkimpy.arc_verify(message, dnsfunc=lookups)
    except DnsTemporaryError as exc:
        return ArcResult("fail", sealers, f"temporary DNS error: {exc}")
    except (dkimpy.DKIMException, IndexError, ValueError) as exc:  # malformed sets
        return ArcResult("fail", sealers, f"malformed ARC set: {str(exc)[:200]}")
    # cv None: an earlier sealer reported cv=fail and the chain has ended (RFC 8617 §5.2 step 2).
    status = _CV.get(cv, "fail")
    if status == "pass":
        unsuitable = _unsuitable_arc_key(message, lookups)
        if unsuitable:
            return ArcResult("fail", sealers, unsuitable)
    if status == "none" and seals:  # ARC-Seals present but no usable instance numbers
        return ArcResult("fail", sealers, "ARC headers without a valid instance")
    return ArcResult(status, sealers if status != "none" else (), str(reason)[:200],
                     auth_results if status == "pass" else ())


def _unsuitable_arc_key(message: bytes, lookups: dkim_fast.Lookups) -> str:
    """Why a chain dkimpy passed rests on a key that cannot verify its signature's a=, or "".

    RFC 8617 §5.2 verifies each ARC-Seal, and the latest ARC-Message-Signature, as DKIM verifies
    a signature (RFC 6376 §6.1.2: dkim.unsuitable_key); dkimpy checks neither k= nor h=. Read
    as dkimpy read them (its sorted relaxed ARC fields), their keys replayed from `lookups`
    (no new DNS question). dkim_fast's one-set pass needs a=rsa-sha256 over a plain k=rsa key
    without h=, so it never gets here. Anything unexpected is a reason: the chain then fails."""
    try:
        latest, fields = dkimpy.ARC(message).sorted_arc_headers()
        for instance, (name, value) in fields:
            name = name.lower()
            if name == b"arc-seal" or (name == b"arc-message-signature" and instance == latest):
                tags = parse_tag_value(value)
                record = lookups(tags[b"s"] + b"._domainkey." + tags[b"d"] + b".", timeout=dkim_fast.ARC_TIMEOUT)
                why = unsuitable_key(tags.get(b"a"), record)
                if why:
                    label = "ARC-Seal" if name == b"arc-seal" else "ARC-Message-Signature"
                    return f"{label}[{instance}]: {why}"
    except Exception as exc:  # noqa: BLE001 - a check that errs is never a pass
        return f"ARC key check failed: {str(exc)[:200]}"
    return ""


def seal_arc(message: bytes, authserv_id: str, domain: str, selector: str,
             private_key_pem: bytes, auth_results_value: str, *, timestamp: int | None = None,
             sign_headers: Sequence[str] | None = None, clauses: Sequence[str] | None = None) -> bytes:
    """The three ARC header fields (ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results) to put on top of `message`, in its line ending.

    `auth_results_value` is our own Authentication-Results value (authserv-id first, and an
    `arc=` result when the message already carries a chain). The caller prepends it too.
    The message must not already carry an Authentication-Results with our authserv-id:
    sanitize it first (`headers.sanitize_inbound_headers`), or forged results get sealed.

    `timestamp` (t=, seconds since the epoch) defaults to now; fixing it makes the seal
    reproducible (test vectors). `sign_headers` is the AMS h= list (RFC 8617 §4.1.2), dkimpy's
    default set when None; it must name From (RFC 6376 §5.4).

    `clauses`: the value as our formatter built it (`results.authentication_results_clauses`:
    the authserv-id, then one `method=result ...` clause each, joined by "; " they are exactly
    `auth_results_value`). ARC-Authentication-Results then copies them as they are (RFC 8617
    §4.1.1) instead of authres's re-serialisation of its parse (~0.8 ms of pure Python per
    message); without them, or when they do not read as such clauses, authres parses the value.
    """
    ours = authserv_id.strip().rstrip(".").lower()
    head, body = split_headers(message)
    fields = parse_fields(head)
    if any(f.name == b"authentication-results" and authserv_id_of(f.value) == ours for f in fields):
        raise ArcSealError(f"message already has Authentication-Results for {authserv_id}; sanitize it first")
    if authserv_id_of(auth_results_value.encode("utf-8")) != ours:
        raise ArcSealError(f"Authentication-Results value must start with authserv-id {authserv_id}")
    parsed = _our_clauses(auth_results_value, clauses)
    if parsed is None:
        try:
            parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + auth_results_value)
        except authres.core.AuthResError as exc:
            raise ArcSealError(f"Authentication-Results value does not parse: {exc}") from exc
    arc_results = [r for r in parsed.results if r.method == "arc"]
    if _arc_fields(fields):  # a chain, even a broken one: we seal what we found (RFC 8617 §5.1.1)
        if len(arc_results) != 1 or arc_results[0].result not in ("pass", "fail"):
            raise ArcSealError(f"message has {len(_seals(fields))} ARC set(s): the results need arc=pass or arc=fail")
    elif arc_results and arc_results[0].result != "none":
        raise ArcSealError("message has no ARC chain: the results must say arc=none or omit arc")
    # dkimpy only seals when it finds our Authentication-Results on the message itself.
    our_field = b"Authentication-Results: " + auth_results_value.encode("utf-8") + b"\r\n"
    with_results = our_field + message
    include = None if sign_headers is None else [h.strip().encode("ascii") for h in sign_headers]
    headers = dkim_fast.seal_first_set(  # the first set, dkimpy's bytes without its generic flow
        with_results, selector.encode("ascii"), domain.encode("ascii"), private_key_pem,
        parsed.authserv_id.encode("utf-8"), parsed, auth_results_value, timestamp, include,
        _parse_with(with_results, our_field, fields, body)) if dkim_fast.ENABLED else None
    if headers is not None:
        eol = line_ending(message)
        return b"".join(h.replace(b"\r\n", b"\n").replace(b"\n", eol) for h in headers)
    _handoff.parsed = ("Authentication-Results: " + auth_results_value, parsed)
    try:
        headers = dkimpy.arc_sign(
            with_results, selector.encode("ascii"), domain.encode("ascii"), private_key_pem,
            parsed.authserv_id.encode("utf-8"), timestamp=timestamp,
            include_headers=include)
    except dkimpy.DKIMException as exc:
        raise ArcSealError(f"dkimpy refused to seal: {exc}") from exc
    finally:
        _handoff.parsed = None
    if not headers:
        raise ArcSealError("dkimpy produced no ARC set (chain state and arc= result disagree)")
    eol = line_ending(message)
    return b"".join(h.replace(b"\r\n", b"\n").replace(b"\n", eol) for h in headers)


def _parse_with(with_results: bytes, our_field: bytes, fields, body: bytes):
    """dkimpy's parse of `with_results` (`our_field` + a message) from the parse of the message
    already made (`fields`, `body`: parse_fields of its split_headers; issue 19:
    the seal parsed the whole stamped message again), or None (it is then parsed). Only where
    the two are one parse: our field one line, and the message's first line neither a
    continuation (it would join our field) nor empty (an empty header section); split_headers
    then cuts `our_field` + the same head and the same body."""
    first = with_results[len(our_field):len(our_field) + 1]
    if b"\r" in our_field[:-2] or b"\n" in our_field[:-1] or first in (b"", b" ", b"\t", b"\r", b"\n"):
        return None
    return dkim_canon.parse_from_fields(with_results, (HeaderField(b"authentication-results", our_field),) + fields, body)


@dataclass(frozen=True)
class _Clause:
    """One result clause as dkimpy's arc_sign reads a parsed one: method, result, str()."""

    text: str
    method: str
    result: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Clauses:
    authserv_id: str
    results: tuple[_Clause, ...]


_KEYWORD = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")  # RFC 8601 §2.2 method and result keywords
_BARE_ID = re.compile(r"[A-Za-z0-9.-]+")


def _our_clauses(value: str, clauses: Sequence[str] | None) -> _Clauses | None:
    """`clauses` as dkimpy's view of a parsed Authentication-Results, or None (authres parses
    `value`) unless they are exactly `value`, a bare authserv-id and one-line clauses each
    starting `method=result`."""
    if not clauses or "; ".join(clauses) != value or not _BARE_ID.fullmatch(clauses[0]):
        return None
    results = []
    for text in clauses[1:]:
        method, eq, result = text.split(" ", 1)[0].partition("=")
        if not eq or not _KEYWORD.fullmatch(method) or not _KEYWORD.fullmatch(result) or not (text.isascii() and text.isprintable()):
            return None
        results.append(_Clause(text, method, result))
    return _Clauses(clauses[0], tuple(results))


def arc_auth_results(message: bytes) -> tuple[tuple[int, str], ...]:
    """(instance, value after `i=N;`) of every ARC-Authentication-Results field, sorted; the
    first field of an instance wins (a duplicate makes the chain fail anyway, §5.1.1)."""
    return _auth_results(parse_fields(split_headers(message)[0]))


def _auth_results(fields) -> tuple[tuple[int, str], ...]:
    found: dict[int, str] = {}
    for field in fields:
        if field.name != b"arc-authentication-results":
            continue
        match = _AAR_INSTANCE.match(field.value.decode("utf-8", "replace"))
        if match and int(match.group(1)) not in found:
            found[int(match.group(1))] = match.group(2).strip()
    return tuple(sorted(found.items()))


def arc_override(arc: ArcResult, trusted_sealers: Iterable[str], from_domain: str | None,
                 adkim: str = "r", aspf: str = "r") -> ArcOverride:
    """Pure: may a DMARC failure of `from_domain` be overridden by this chain? Only when it
    passed, its latest sealer is trusted, and that sealer's ARC-Authentication-Results shows
    an aligned pass (see the module docstring). `adkim`/`aspf` are the failing record's modes."""
    if arc.status != "pass" or not arc.sealers:
        return ArcOverride(False, explanation=f"ARC chain is {arc.status}")
    trusted = {d.strip().rstrip(".").lower() for d in trusted_sealers}
    instance, sealer = len(arc.sealers), arc.sealers[-1]
    where = f"ARC set i={instance} sealed by {sealer}"
    if sealer not in trusted:
        return ArcOverride(False, instance, sealer, explanation=f"{where}: sealer not trusted")
    recorded = dict(arc.auth_results).get(instance)
    if recorded is None or not from_domain:
        return ArcOverride(False, instance, sealer, explanation=f"{where}: no ARC-Authentication-Results to rely on")
    results = recorded_results(recorded)
    if results is None:
        return ArcOverride(False, instance, sealer, explanation=f"{where}: its results do not parse")
    domain = normalise_domain(from_domain)
    dmarc = [r for r in results if r.method == "dmarc"]
    for r in dmarc:
        if r.result != "pass":
            return ArcOverride(False, instance, sealer, _clause(r), f"{where} recorded {_clause(r)}: no evidence")
    for r in dmarc:
        header_from = _prop(r, "header", "from")
        if header_from is None or normalise_domain(header_from) == domain:
            return _used(instance, sealer, r, where, domain)
    for r in results:
        if r.result != "pass":
            continue
        if r.method == "spf":
            identity = _prop(r, "smtp", "mailfrom") or _prop(r, "smtp", "helo") or ""
            if aligned(identity.rpartition("@")[2], domain, aspf):
                return _used(instance, sealer, r, where, domain)
        if r.method == "dkim" and aligned(_prop(r, "header", "d") or "", domain, adkim):
            return _used(instance, sealer, r, where, domain)
    return ArcOverride(False, instance, sealer, explanation=f"{where} recorded no pass aligned with {domain}")


@dataclass(frozen=True)
class SealerResults:
    """SPF, DKIM and DMARC as a trusted sealer recorded them in its ARC-Authentication-Results,
    taken instead of verifying the same signatures again (`where` names the set, for the
    trace and our Authentication-Results)."""

    where: str
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult


def trusted_sealer_results(arc: ArcResult, trusted_sealers: Iterable[str], authors: Sequence[str],
                           mail_from_domain: str) -> SealerResults | None:
    """Pure: the latest sealer's recorded results when they may stand for ours, else None (the
    caller then verifies everything itself). The caller asks only for a session attributed to
    a partner connector. They stand only when the chain passed — so the latest ARC-Seal and
    ARC-Message-Signature verified with the sealer's published key, and the sealed set's AAR is
    the one the sealer wrote (RFC 8617 §4.1.1, §5.2) — its sealer is trusted, and that AAR
    records dmarc=pass for our one author domain with an aligned SPF or DKIM pass for our
    envelope sender. Anything else — dmarc=fail, temperror, no DMARC, another author or
    sender, a result that does not parse — verifies again: a sealer's word is never a pass
    by default. The same evidence already overrides a DMARC failure (`arc_override`), so the
    action taken is the one a full verification would reach."""
    if arc.status != "pass" or not arc.sealers or not mail_from_domain:
        return None
    trusted = {d.strip().rstrip(".").lower() for d in trusted_sealers}
    instance, sealer = len(arc.sealers), arc.sealers[-1]
    recorded = dict(arc.auth_results).get(instance)
    domains = {normalise_domain(a) for a in authors}
    if sealer not in trusted or recorded is None or len(domains) != 1:
        return None
    domain, sender_domain = domains.pop(), normalise_domain(mail_from_domain)
    results = recorded_results(recorded)
    if results is None:
        return None
    by_method: dict[str, list] = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r)
    dmarc, spf = by_method.get("dmarc", []), by_method.get("spf", [])
    if len(dmarc) != 1 or dmarc[0].result != "pass" or len(spf) != 1 or spf[0].result not in SPF_RESULTS:
        return None
    if normalise_domain(_prop(dmarc[0], "header", "from") or "") != domain:
        return None
    if normalise_domain((_prop(spf[0], "smtp", "mailfrom") or "").rpartition("@")[2]) != sender_domain:
        return None
    where = f"ARC set i={instance} sealed by {sealer}"
    note = f"recorded by the trusted sealer in {where}, not verified again here"
    dkim = []
    for r in by_method.get("dkim", []):
        if r.result == "none":
            continue  # the sealer saw no signature: we report dkim=none as well
        if r.result not in DKIM_RESULTS:
            return None
        dkim.append(DkimResult(r.result, normalise_domain(_prop(r, "header", "d") or ""),
                               (_prop(r, "header", "s") or "")[:63], (_prop(r, "header", "b") or "")[:HEADER_B_PREFIX],
                               note))
    if any(r.result == "pass" and aligned(r.domain, domain, "r") for r in dkim):
        aligned_by = "dkim"
    elif spf[0].result == "pass" and aligned(sender_domain, domain, "r"):
        aligned_by = "spf"
    else:
        return None  # a dmarc=pass without the aligned pass behind it is no evidence
    return SealerResults(
        where, SpfResult(spf[0].result, note, sender_domain, "mailfrom"), tuple(dkim),
        DmarcResult("pass", None, None, None, "none", domain, aligned_by, reason=note))


class RecordedProperty(NamedTuple):
    type: str
    name: str
    value: str


class RecordedResult(NamedTuple):
    method: str
    result: str
    properties: tuple[RecordedProperty, ...]


def recorded_results(value: str) -> tuple[RecordedResult, ...] | None:
    """The results of an Authentication-Results value (after its `i=N;` for an AAR), each
    method=result with its ptype.property=value pairs; None when it does not parse. The plain
    form every mxgate sealer writes is read here (authres, pure Python, cost ~0.6 ms per value);
    anything else — quoted-pairs, nested comments, reason=, versions — goes to authres."""
    fast = _plain_results(value)
    if fast is not None:
        return fast
    try:
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value).results
    except (authres.core.AuthResError, ValueError):
        return None
    return tuple(RecordedResult(r.method, r.result, tuple(RecordedProperty(p.type, p.name, p.value)
                                                          for p in r.properties)) for r in parsed)


_QUOTED = re.compile(r'"[^"]*"')
_FLAT_COMMENT = re.compile(r"\([^()\"]*\)")
# A value is a quoted-string or RFC 8601 ptext ("=" and "/" included, as authres reads it).
_RESINFO_TOKEN = re.compile(r'\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)=("[^"]*"|[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.@\-]+)')
_METHOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_RESULT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_PTYPES = ("smtp", "header", "body", "policy")  # RFC 8601 §2.2 ptype


def _plain_results(value: str) -> tuple[RecordedResult, ...] | None:
    """RFC 8601 §2.2 for the plain form only: `authserv-id; method=result (comment)
    ptype.property=value ...; ...`. None (not a parse failure) for anything outside it.
    (Issue 19: ~16 -> ~11 µs for the gateway's AAR: no regex pass where its character is absent,
    one set for repeated properties, the tuples built without NamedTuple's Python __new__.)"""
    if "\\" in value:
        return None
    if '"' in value:
        for quoted in _QUOTED.findall(value):
            if ";" in quoted or "(" in quoted or ")" in quoted:
                return None
    text = _FLAT_COMMENT.sub(" ", value) if "(" in value else value
    if "(" in text or ")" in text or text.count('"') % 2:
        return None
    parts = text.split(";")
    if len(parts) == 1:
        return None
    out = []
    for part in parts[1:]:
        part = part.strip()
        if part.lower() == "none":  # RFC 8601 §2.2: no-result
            continue
        tokens = _RESINFO_TOKEN.findall(part)
        if not tokens or "".join([k + "=" + v for k, v in tokens]) != "".join(part.split()):
            return None
        method, result = tokens[0]
        if not _METHOD.fullmatch(method) or not _RESULT.fullmatch(result):
            return None
        method = method.lower()
        for _, val in tokens[1:-1]:
            if val[0] == '"':
                return None  # authres takes a quoted value only where the resinfo ends
        props = []
        seen = set()
        for key, val in tokens[1:]:
            ptype, dot, name = key.partition(".")
            if not dot:
                if method == "dmarc" and key.lower() == "action":
                    continue  # EXO's dmarc action= (we write it too); authres drops it as well
                return None  # reason= and other method-level keys: authres knows them
            ptype, lowered = ptype.lower(), name.lower()
            if ptype not in _PTYPES or not name or "." in name or (ptype, lowered) in seen:
                return None  # (a repeated property: authres keeps one of them)
            seen.add((ptype, lowered))
            props.append(_TUPLE(RecordedProperty, (ptype, lowered, val[1:-1] if val[0] == '"' else val)))
        out.append(_TUPLE(RecordedResult, (method, result.lower(), tuple(props))))
    return tuple(out)


_TUPLE = tuple.__new__  # what a NamedTuple's __new__ does, without its Python frame


# dkimpy's arc_sign parses every Authentication-Results on the message with authres, ours
# included, right after seal_arc parsed that same text (~0.6 ms each, pure Python: 9% of the
# gateway's GIL time in bench P3). seal_arc hands its parse over, in this thread, for exactly
# that text; any other text (other authserv-ids' fields) is parsed by authres as before.
_handoff = threading.local()


class _HeaderParser:
    """Stands in for authres.AuthenticationResultsHeader inside dkimpy (it only calls parse)."""

    @staticmethod
    def parse(text: str):
        ready = getattr(_handoff, "parsed", None)
        if ready is not None and ready[0] == text:
            return ready[1]
        return authres.AuthenticationResultsHeader.parse(text)


class _AuthresForDkimpy:
    """dkimpy's view of the authres module: the parser above, everything else authres's own."""

    AuthenticationResultsHeader = _HeaderParser

    def __getattr__(self, name: str):
        return getattr(authres, name)


dkimpy.authres = _AuthresForDkimpy()

_NOT_ARC_SIGNED = "Message is not ARC signed"  # dkimpy's reason for the same case
# Any "arc-" in the header section, whatever the line endings or spacing: only a message
# without one skips the full validation, so a field our parser would miss is still seen by dkimpy.
_ARC_ANYWHERE = re.compile(rb"arc-", re.IGNORECASE)


def _may_carry_arc(message: bytes) -> bool:
    return _ARC_ANYWHERE.search(message, 0, header_length(message)) is not None


_AAR_INSTANCE = re.compile(r"^\s*i\s*=\s*(\d{1,2})\s*;(.*)$", re.DOTALL)  # RFC 8617 §4.1.1
_ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")


def _instance(field) -> int | None:
    if field.name == b"arc-authentication-results":
        match = _AAR_INSTANCE.match(field.value.decode("utf-8", "replace"))
        text = match.group(1) if match else ""
    else:
        try:
            text = parse_tag_value(field.value).get(b"i", b"").decode("ascii", "replace").strip()
        except (InvalidTagValueList, ValueError):
            text = ""
    return int(text) if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ARC_INSTANCE else None


def _prop(result, ptype: str, name: str) -> str | None:
    return next((p.value for p in result.properties if p.type == ptype and p.name == name), None)


def _clause(result) -> str:
    props = " ".join(f"{p.type}.{p.name}={p.value}" for p in result.properties)
    return f"{result.method}={result.result}" + (f" {props}" if props else "")


def _used(instance: int, sealer: str, result, where: str, domain: str) -> ArcOverride:
    return ArcOverride(True, instance, sealer, _clause(result),
                       f"{where} recorded {_clause(result)}, aligned with {domain}")
