"""DANE for SMTP (RFC 7672): TLSA records of an MX host, used only when the resolver validated
them (DNSSEC), and matching a server certificate against them.

Owns: the TLSA lookup `_25._tcp.<mx>` (RFC 7672 §2.2), the rule that records count only when
the answer carries the AD bit *and* the caller trusts the resolver to validate (`trusted`: the
AD bit from an untrusted path means nothing, RFC 6698 §4.1), and the
matching of a certificate (RFC 6698 §2.1): usage DANE-EE(3) against the leaf, DANE-TA(2)
against any certificate of the chain presented; PKIX usages 0/1 are not used for SMTP
(RFC 7672 §3.1.3). Selector 0 (whole certificate) or 1 (SubjectPublicKeyInfo); matching 0
(exact), 1 (SHA-256), 2 (SHA-512).
Must not know: SMTP sessions or the queue.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes


def lookup(resolver, mx_host: str, *, trusted: bool, timeout: float = 5.0) -> tuple[Tlsa, ...] | None:
    """The MX host's usable TLSA records, or None when DANE does not apply (no records, an
    unvalidated answer, or a resolver not trusted to validate). Lookup trouble raises."""
    if not trusted:
        return None
    if not _secure_address(resolver, mx_host, timeout):
        # RFC 7672 §2.2.2: TLSA records are looked up only for a host whose address records are
        # secure; an insecure host is sent to without DANE, so its zone's servers mishandling
        # TLSA queries (timeouts, SERVFAIL: common outside DNSSEC) cannot hold its mail.
        return None
    try:
        answer = resolver.resolve(f"_25._tcp.{mx_host.rstrip('.')}", "TLSA", lifetime=timeout, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    if not answer.response.flags & dns.flags.AD:
        return None  # insecure: RFC 7672 §2.2 says deliver as if there were no TLSA records
    records = tuple(Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer)
    usable = tuple(t for t in records if t.usage in (2, 3) and t.selector in (0, 1) and t.mtype in (0, 1, 2))
    return usable or None


def _secure_address(resolver, mx_host: str, timeout: float) -> bool:
    """Were the MX host's address records validated (AD)? No address records: False. Lookup
    trouble raises, as for TLSA: the caller does not use the host."""
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(mx_host.rstrip("."), rdtype, lifetime=timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        return bool(answer.response.flags & dns.flags.AD)
    return False


def _digest(t: Tlsa, cert_der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(cert_der)
    blob = cert_der if t.selector == 0 else cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if t.mtype == 1:
        return hashlib.sha256(blob).digest()
    if t.mtype == 2:
        return hashlib.sha512(blob).digest()
    return blob


def matches(records: tuple[Tlsa, ...], chain_der: list[bytes]) -> bool:
    """Pure: does the presented chain (leaf first) satisfy any record? DANE-EE ignores names and
    dates (RFC 7672 §3.1.1); DANE-TA needs the trust anchor in the chain (§3.1.2 — the name check
    against the MX host is the caller's, with the anchor as CA)."""
    if not chain_der:
        return False
    for t in records:
        candidates = chain_der[:1] if t.usage == 3 else chain_der[1:] or chain_der[:1]
        if any(_digest(t, der) == t.data for der in candidates):
            return True
    return False


def record_for(cert_der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> Tlsa:
    """The TLSA record that pins `cert_der` (for `mxgate` output and tests)."""
    probe = Tlsa(usage, selector, mtype, b"")
    return Tlsa(usage, selector, mtype, _digest(probe, cert_der))


def _names(cert_der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(cert_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def name_ok(cert_der: bytes, mx_host: str) -> bool:
    """The leaf names the MX host (RFC 7672 §3.2.3: DANE-TA checks names; a wildcard covers one label)."""
    host = mx_host.lower().rstrip(".")
    for n in _names(cert_der):
        if n == host or (n.startswith("*.") and host.partition(".")[2] == n[2:] and host.partition(".")[0]):
            return True
    return False


def verify_chain(records: tuple[Tlsa, ...], chain_der: list[bytes], mx_host: str) -> bool:
    """Pure: DANE-EE(3) matches the leaf (no name or date check, §3.1.1); DANE-TA(2) matches a
    certificate above the leaf and the leaf names `mx_host` (§3.1.2)."""
    if not chain_der:
        return False
    if matches(tuple(t for t in records if t.usage == 3), chain_der[:1]):
        return True
    ta = tuple(t for t in records if t.usage == 2)
    return bool(ta) and len(chain_der) > 1 and matches(ta, chain_der) and name_ok(chain_der[0], mx_host)


def presentation(t: Tlsa) -> str:
    """The record as a TLS-RPT policy string (RFC 8460 §4.4: "3 1 1 <hex>")."""
    return f"{t.usage} {t.selector} {t.mtype} {t.data.hex()}"
