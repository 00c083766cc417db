"""SPF (RFC 7208) evaluation for any IP, through pyspf.

Owns: choosing the identity to check (MAIL FROM, or HELO for the null sender), bounding the
whole evaluation in time, and mapping every outcome — including exceptions — onto the seven
RFC 7208 §2.6 results. Must not know: where the IP came from (connecting peer or the original
sender found by enhanced filtering) or what the verdict does with the result.

pyspf has no resolver argument: it resolves through `dns.resolver.default_resolver`, so the
caller installs one first (`mxgate.auth.dns.install_default_resolver`). `check_spf` blocks;
call it from a worker thread, never on the event loop.
"""
from __future__ import annotations

import functools
import ipaddress
import threading
import time
from dataclasses import dataclass

import spf as pyspf

from mxgate.auth.dns import remember_bounded

# RFC 7208 §2.6 result names, in the words Authentication-Results uses (RFC 8601 §2.7.2).
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# RFC 7208 §4.6.4 suggests at least 20 s for the whole check; a gateway wants less.
DEFAULT_TIMEOUT = 20.0
# Older pyspf spellings of the RFC 4408 results.
_LEGACY = {"error": "temperror", "unknown": "permerror", "ambiguous": "permerror"}


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of SPF_RESULTS
    explanation: str  # pyspf's text; safe for logs, never sent verbatim to a client
    domain: str  # the domain whose policy was checked (MAIL FROM domain, or HELO)
    identity: str = "mailfrom"  # "mailfrom" or "helo" (RFC 7208 §2.3, §2.4)


class _Query(pyspf.query):
    """pyspf's query with RFC 7208 §5.5 applied to DNS errors in `ptr` and `%{p}`: the reverse
    zone belongs to whoever holds the client's address, so its errors must never turn a
    domain's `fail` into `temperror` (which DMARC does not act on). A PTR lookup error means no
    match; an error looking up one PTR name's addresses skips that name (§5.5 step 7)."""

    def validated_ptrs(self):
        try:
            names = self.dns_ptr(self.i)
        except pyspf.TempError:
            return []
        limit = pyspf.MAX_PTR if self.strict else pyspf.MAX_PTR * 4  # §4.6.4: at most 10 names
        validated = []
        for name in names[:limit]:
            try:
                if self.cidrmatch(self.dns_a(name, self.A), self.cidrmax):
                    validated.append(name)
            except pyspf.TempError:
                continue
        return validated


def spf_identity(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(sender to check, its domain, identity name) for a MAIL FROM and HELO.

    RFC 7208 §2.4: with a null reverse-path the check uses "postmaster@" + HELO.
    """
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1].strip()
    helo = helo.strip().rstrip(".")
    if not sender:
        return (f"postmaster@{helo}" if helo else ""), helo.lower(), "helo"
    domain = sender.rpartition("@")[2] if "@" in sender else helo
    return sender, domain.rstrip(".").lower(), "mailfrom"


@functools.lru_cache(maxsize=4096)  # pure; a client sends message after message (raises: not kept)
def _address_text(ip: str) -> str:
    return str(ipaddress.ip_address(ip.strip("[]")))


def check_spf(ip: str, mail_from: str, helo: str, *, timeout: float = DEFAULT_TIMEOUT) -> SpfResult:
    """Evaluate SPF for `ip` sending as `mail_from` after `helo`.

    Never raises for DNS trouble: timeouts and server failures are `temperror`.
    Raises ValueError only for an `ip` that is not an IP address (a caller bug).
    """
    address = _address_text(ip)
    sender, domain, identity = spf_identity(mail_from, helo)
    if not domain:
        return SpfResult("none", "no domain to check (no sender domain and no HELO)", "", identity)
    key = (address, mail_from, helo, timeout)
    memo = MEMO and pyspf.DNSLookup is _recorded_lookup  # (a test's own DNSLookup records nothing)
    known = _evaluated.get(key) if memo else None
    if known is not None and _answers_unchanged(known[0], timeout):
        return known[1]
    calls: list | None = [] if memo else None
    _recording.calls = calls
    try:
        # querytime bounds the whole evaluation, and each lookup gets what remains of it.
        result, _code, explanation = _Query(i=address, s=sender, h=helo.strip(),
                                            timeout=timeout, querytime=timeout).check()
    except pyspf.TempError as exc:
        return SpfResult("temperror", f"DNS: {exc}", domain, identity)
    except pyspf.PermError as exc:
        return SpfResult("permerror", str(exc), domain, identity)
    except (UnicodeError, ValueError, IndexError) as exc:  # pyspf on odd input (8-bit, bad labels)
        return SpfResult("permerror", f"SPF evaluation failed: {exc.__class__.__name__}", domain, identity)
    finally:
        _recording.calls = None
    result = _LEGACY.get(result.lower(), result.lower())
    if result not in SPF_RESULTS:
        return SpfResult("permerror", f"unexpected SPF result {result!r}", domain, identity)
    answer = SpfResult(result, explanation, domain, identity)
    if calls is not None and _rememberable(calls):
        _remember(key, (tuple(calls), answer))
    return answer


# --- the same evaluation again: pyspf's answer remembered while its DNS answers stay the same ----
#
# pyspf's result is a function of the client address, MAIL FROM, HELO, the DNS answers it reads
# (in an order those answers decide), its time budget and the clock, which only the %{t} macro
# reads (RFC 7208 §7.3). A stream of mail from one sender re-reads the same cached answers
# (issue 19: ~50 µs of pyspf per gateway message). So each lookup pyspf makes is recorded; for
# the same (address, MAIL FROM, HELO, budget) the lookups are made again, in order, and only when
# every answer is the one recorded — the evaluation would take the same path to the same result —
# is that result returned. Not remembered: an evaluation whose lookups failed (pyspf's own
# temperror, an exception), or any answer holding a %{t} macro (the time changes the name looked
# up or the explanation). A lookup error while checking, or a check that outlasts the budget,
# falls back to evaluating.

MEMO = True  # False: every message evaluated (the differential tests' reference)
MEMO_MAX = 4096
_evaluated: dict[tuple, tuple[tuple, SpfResult]] = {}
_recording = threading.local()
_LOOKUP = pyspf.DNSLookup  # pyspf's resolver call (dnspython), looked up as a module global
_FAILED = object()


def _recorded_lookup(name, qtype, *args):
    """pyspf.DNSLookup, recording (name, qtype, args, answer) for the evaluation of this thread."""
    calls = getattr(_recording, "calls", None)
    if calls is None:
        return _LOOKUP(name, qtype, *args)
    try:
        answer = _LOOKUP(name, qtype, *args)
    except BaseException:
        calls.append(_FAILED)
        raise
    calls.append((name, qtype, args, tuple(answer)))
    return answer


def _rememberable(calls: list) -> bool:
    if _FAILED in calls:
        return False
    for name, qtype, _args, answer in calls:
        if qtype in ("TXT", "SPF") and "%{t" in repr(answer).lower():
            return False
    return True


def _answers_unchanged(calls: tuple, timeout: float) -> bool:
    start = time.monotonic()
    try:
        for name, qtype, args, answer in calls:
            if tuple(_LOOKUP(name, qtype, *args)) != answer:
                return False
    except Exception:  # noqa: BLE001 - evaluated again: pyspf meets it as it would
        return False
    return time.monotonic() - start < timeout  # pyspf's querytime not exceeded by the lookups


def _remember(key: tuple, value: tuple) -> None:
    remember_bounded(_evaluated, key, value, MEMO_MAX)


pyspf.DNSLookup = _recorded_lookup
