"""Issue 18: DANE for SMTP (RFC 7672) — TLSA records from the loopback DNS server count only when
the answer is authenticated (AD bit) and the node trusts its resolver to validate; matching of a
real certificate (trustme) for DANE-EE(3) and DANE-TA(2), SPKI and full-certificate selectors."""

from __future__ import annotations

import ssl

import pytest
import trustme

from mxgate.auth.dns import make_resolver
from mxgate.queue.dane import Tlsa, lookup, matches, record_for


def _der(cert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_dane_ee_and_ta_matching():
    ca = trustme.CA()
    leaf = _der(ca.issue_cert("mx.fabrikam.test"))
    other = _der(trustme.CA().issue_cert("mx.fabrikam.test"))
    ca_der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
    for selector in (0, 1):
        for mtype in (0, 1, 2):
            pin = record_for(leaf, 3, selector, mtype)
            assert matches((pin,), [leaf]) and not matches((pin,), [other])
    anchor = record_for(ca_der, 2, 1, 1)
    assert matches((anchor,), [leaf, ca_der]) and not matches((anchor,), [other])
    assert not matches((Tlsa(3, 1, 1, b"\0" * 32),), [leaf]) and not matches((anchor,), [])


def test_tlsa_records_count_only_when_validated_by_a_trusted_resolver(dns):
    leaf = _der(trustme.CA().issue_cert("mx.fabrikam.test"))
    pin = record_for(leaf)
    dns.add("_25._tcp.mx.fabrikam.test", "TLSA", f"3 1 1 {pin.data.hex()}")
    dns.add("mx.fabrikam.test", "A", "127.0.0.88")
    resolver = make_resolver([dns.address], 2.0)
    assert lookup(resolver, "mx.fabrikam.test", trusted=True) is None  # no AD bit: insecure, no DANE
    dns.authentic = True  # now the resolver says it validated the answer (AD)
    assert lookup(resolver, "mx.fabrikam.test", trusted=False) is None  # but the node does not trust it
    records = lookup(make_resolver([dns.address], 2.0), "mx.fabrikam.test", trusted=True)
    assert records == (pin,) and matches(records, [leaf])
    assert lookup(make_resolver([dns.address], 2.0), "mx2.fabrikam.test", trusted=True) is None  # no records


def test_tlsa_is_looked_up_only_for_a_host_with_secure_addresses(dns):
    """RFC 7672 §2.2.2. An unsigned zone whose servers never answer TLSA queries (common outside
    DNSSEC) still gets mail: its host's address records are insecure, so no TLSA lookup is made.
    A host with secure addresses whose TLSA lookup fails is not used (the lookup raises)."""
    from dns.exception import Timeout

    dns.authentic = True
    for host in ("mx.unsigned.test", "mx.signed.test"):
        dns.add(host, "A", "127.0.0.88")
        dns.silence(f"_25._tcp.{host}", "TLSA")
    dns.insecure = frozenset({"mx.unsigned.test"})
    resolver = make_resolver([dns.address], 0.5)
    assert lookup(resolver, "mx.unsigned.test", trusted=True, timeout=0.5) is None
    assert not any(name == "_25._tcp.mx.unsigned.test" for name, _, _ in dns.queries)  # never asked
    with pytest.raises(Timeout):
        lookup(resolver, "mx.signed.test", trusted=True, timeout=0.5)
    assert lookup(resolver, "mx.nowhere.test", trusted=True, timeout=0.5) is None  # no address at all
