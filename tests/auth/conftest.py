"""Fixtures for the auth tests: a real DNS server on loopback and a resolver pointed at it.

The default dnspython resolver is process-wide (pyspf, dkimpy and authheaders read it), so
every test that installs one gets the previous one back afterwards — tests do not depend
on their order.
"""
from __future__ import annotations

import os
import sys

import pytest

# tests/ holds shared helpers (dnsserver.py); make it importable without a rootdir conftest.
_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from dnsserver import TestDNSServer  # noqa: E402

from mxgate.auth.dns import dnsfunc_for, install_default_resolver, make_resolver  # noqa: E402

LOOKUP_TIMEOUT = 1.0  # seconds; short so timeout tests stay fast


@pytest.fixture
def dns_server():
    with TestDNSServer() as server:
        yield server


@pytest.fixture
def resolver(dns_server):
    """A resolver for `dns_server`, installed as dnspython's default for this test only."""
    res = make_resolver([dns_server.address], timeout=LOOKUP_TIMEOUT)
    previous = install_default_resolver(res)
    try:
        yield res
    finally:
        install_default_resolver(previous)


@pytest.fixture
def dnsfunc(resolver):
    return dnsfunc_for(resolver, timeout=LOOKUP_TIMEOUT)


@pytest.fixture(scope="session")
def dkim_keys():
    """Two RSA-2048 key pairs, generated once per session (generation costs ~0.1 s each)."""
    from mxgate.auth.dkim import generate_dkim_key
    return generate_dkim_key(), generate_dkim_key()


def _make_message(from_addr: str = "alice@fabrikam.test", body: bytes = b"Hello.\r\n",
                 extra: bytes = b"") -> bytes:
    """A small CRLF message with the headers DKIM signs."""
    return (b"From: Alice <" + from_addr.encode() + b">\r\n"
            b"To: bob@contoso.test\r\n"
            b"Subject: quarterly numbers\r\n"
            b"Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n"
            b"Message-ID: <m1@fabrikam.test>\r\n" + extra +
            b"\r\n" + body)


@pytest.fixture
def make_message():
    """Factory for small CRLF test messages: make_message(from_addr, body, extra_headers)."""
    return _make_message
