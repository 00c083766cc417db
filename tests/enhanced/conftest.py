"""Fixtures of the enhanced-filtering tests: DKIM/ARC keys and the senders' zone on the real
loopback DNS server (`dns` from tests/conftest.py)."""

from __future__ import annotations

import pytest

from efkit import ORIGINAL_IP
from mxgate.auth.dkim import generate_dkim_key


@pytest.fixture(scope="session")
def keys():
    """(fabrikam DKIM key, lists.test ARC key, an unpublished key), each (pem, txt)."""
    return generate_dkim_key(), generate_dkim_key(), generate_dkim_key()


@pytest.fixture
def zone(dns, keys):
    (dkim_pem, dkim_txt), (arc_pem, arc_txt), _ = keys
    dns.add("fabrikam.test", "TXT", f"v=spf1 ip4:{ORIGINAL_IP} -all")
    dns.add("sel._domainkey.fabrikam.test", "TXT", dkim_txt)
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    dns.add("woodgrove.test", "TXT", f"v=spf1 ip4:{ORIGINAL_IP} -all")
    dns.add("_dmarc.woodgrove.test", "TXT", "v=DMARC1; p=quarantine")
    dns.add("arc._domainkey.lists.test", "TXT", arc_txt)
    return dns
