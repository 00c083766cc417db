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


def _public(pem) -> dict:
    pk = dkim.crypto.parse_pem_private_key(pem if isinstance(pem, bytes) else pem.encode())
    return pk, {"modulus": pk["modulus"], "publicExponent": pk["publicExponent"]}


def _verdicts(hash_name: str, signature: bytes, pub: dict) -> tuple[bool, bool]:
    ours = rsa_signing.openssl_verify(hashlib.new(hash_name, b"message"), signature, pub)
    pure = rsa_signing._PURE_VERIFY(hashlib.new(hash_name, b"message"), signature, pub)
    return ours, pure


def test_openssl_verification_agrees_with_dkimpy_on_good_and_forged_signatures(dkim_keys):
    (pem, _txt), (other_pem, _other_txt) = dkim_keys
    pk, pub = _public(pem)
    other, _ = _public(other_pem)
    for algorithm in ("sha256", "sha1"):
        good = rsa_signing.openssl_sign(hashlib.new(algorithm, b"message"), pk)
        assert _verdicts(algorithm, good, pub) == (True, True)
        flipped = good[:-1] + bytes([good[-1] ^ 1])
        assert _verdicts(algorithm, flipped, pub) == (False, False)
        by_other_key = rsa_signing.openssl_sign(hashlib.new(algorithm, b"message"), other)
        assert _verdicts(algorithm, by_other_key, pub) == (False, False)
        # Another message's signature under the right key.
        wrong_text = rsa_signing.openssl_sign(hashlib.new(algorithm, b"other message"), pk)
        assert _verdicts(algorithm, wrong_text, pub) == (False, False)
    # sha1 signature presented as sha256 (algorithm confusion).
    sha1 = rsa_signing.openssl_sign(hashlib.new("sha1", b"message"), pk)
    assert _verdicts("sha256", sha1, pub) == (False, False)


def test_signature_not_below_the_modulus_is_invalid():
    # RFC 8017 §5.2.2 step 1: s >= n is "signature representative out of range". dkimpy's
    # pure code reduces it mod n and accepts s + n; OpenSSL (and so mxgate) refuses it.
    # A 1,025-bit modulus leaves room for s + n in the signature's 129 bytes, always.
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1025).private_numbers()
    pk = {"modulus": numbers.public_numbers.n, "publicExponent": 65537, "privateExponent": numbers.d,
          "prime1": numbers.p, "prime2": numbers.q, "exponent1": numbers.dmp1, "exponent2": numbers.dmq1,
          "coefficient": numbers.iqmp}
    pub = {"modulus": pk["modulus"], "publicExponent": 65537}
    good = rsa_signing.openssl_sign(hashlib.new("sha256", b"message"), pk)
    assert len(good) == 129
    forged = (int.from_bytes(good, "big") + pub["modulus"]).to_bytes(129, "big")
    assert rsa_signing._PURE_VERIFY(hashlib.new("sha256", b"message"), forged, pub) is True
    assert rsa_signing.openssl_verify(hashlib.new("sha256", b"message"), forged, pub) is False
    assert rsa_signing.openssl_verify(hashlib.new("sha256", b"message"), good, pub) is True


def test_wrong_length_and_empty_signatures_are_invalid_not_errors(dkim_keys):
    (pem, _txt), _ = dkim_keys
    pk, pub = _public(pem)
    good = rsa_signing.openssl_sign(hashlib.new("sha256", b"message"), pk)
    assert rsa_signing.openssl_verify(hashlib.new("sha256", b"message"), good[1:], pub) is False
    assert rsa_signing.openssl_verify(hashlib.new("sha256", b"message"), b"", pub) is False


def test_dkimpy_verifies_through_openssl_and_a_tampered_message_fails(dkim_keys, make_message, dnsfunc,
                                                                      dns_server, monkeypatch):
    from mxgate.auth.dkim import sign_dkim, verify_dkim

    assert dkim.RSASSA_PKCS1_v1_5_verify is rsa_signing.openssl_verify
    calls = []
    monkeypatch.setattr(rsa_signing, "_PURE_VERIFY", lambda *a: calls.append(a) or False)
    (pem, txt), _ = dkim_keys
    dns_server.add("sel._domainkey.fabrikam.test", "TXT", txt)
    msg = make_message()
    signature = sign_dkim(msg, "fabrikam.test", "sel", pem)
    assert [r.result for r in verify_dkim(signature + msg, dnsfunc)] == ["pass"]
    tampered = signature + msg.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert b"Re: " in tampered
    assert [r.result for r in verify_dkim(tampered, dnsfunc)] == ["fail"]
    assert calls == []  # OpenSSL decided both, not dkimpy's pure code


def test_parsed_public_keys_are_not_shared_between_callers(dkim_keys):
    import base64

    (_pem, txt), _ = dkim_keys
    der = base64.b64decode(txt.split("p=", 1)[1])
    first = dkim.parse_public_key(der)
    first["modulus"] = 3
    assert dkim.parse_public_key(der)["modulus"] != 3


def test_hostile_key_records_give_invalid_not_exceptions(dkim_keys):
    # A sender publishes the key: an exponent of 1 or an even one, or an even modulus, must
    # make the signature invalid (dkimpy's own code where OpenSSL will not load the key).
    (pem, _txt), _ = dkim_keys
    pk, pub = _public(pem)
    good = rsa_signing.openssl_sign(hashlib.new("sha256", b"message"), pk)
    for bad in ({**pub, "publicExponent": 1}, {**pub, "publicExponent": 2}, {**pub, "publicExponent": 4},
                {**pub, "modulus": pub["modulus"] + 1}):
        assert rsa_signing.openssl_verify(hashlib.new("sha256", b"message"), good, bad) is False


def test_a_private_key_is_loaded_once_under_the_lock_however_many_seal_threads_start_together(monkeypatch):
    """Issue 19: loading checks the key (~40 ms); the first burst after a start ran every seal
    thread into it at once. Each thread that finds no key takes the lock and looks again."""
    import threading

    from cryptography.hazmat.primitives.asymmetric import rsa

    from mxgate.auth import rsa_signing
    from mxgate.auth.dkim import generate_dkim_key

    pk = rsa_signing._parsed_pem_key(generate_dkim_key()[0])
    loads = []
    real = rsa.RSAPrivateNumbers.private_key

    def counted(self, *a, **k):
        loads.append(rsa_signing._lock.locked())
        return real(self, *a, **k)

    monkeypatch.setattr(rsa.RSAPrivateNumbers, "private_key", counted)
    monkeypatch.setattr(rsa_signing, "_KEYS", {})
    start = threading.Barrier(8)
    keys = []

    def seal():
        start.wait()
        keys.append(rsa_signing._openssl_key(pk))

    threads = [threading.Thread(target=seal) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [True] and len({id(k) for k in keys}) == 1
