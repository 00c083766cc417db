"""OpenSSL signs for dkimpy: byte-identical to dkimpy's own PKCS#1 v1.5 signer (speed: bench/)."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto

from mxgate.auth import rsa_signing


def test_openssl_signature_equals_dkimpy_pure_signature(dkim_keys):
    (pem, _txt), _ = dkim_keys
    pk = dkim.crypto.parse_pem_private_key(pem if isinstance(pem, bytes) else pem.encode())
    for algorithm in ("sha256", "sha1"):
        h1, h2 = hashlib.new(algorithm, b"message"), hashlib.new(algorithm, b"message")
        assert rsa_signing.openssl_sign(h1, pk) == rsa_signing._PURE_SIGN(h2, pk)


def test_dkimpy_uses_it_and_signatures_still_verify(dkim_keys, make_message, dnsfunc, dns_server):
    from mxgate.auth.dkim import sign_dkim, verify_dkim

    assert dkim.RSASSA_PKCS1_v1_5_sign is rsa_signing.openssl_sign
    (pem, txt), _ = dkim_keys
    dns_server.add("sel._domainkey.fabrikam.test", "TXT", txt)
    msg = make_message()
    signed = sign_dkim(msg, "fabrikam.test", "sel", pem) + msg
    assert [r.result for r in verify_dkim(signed, dnsfunc)] == ["pass"]
