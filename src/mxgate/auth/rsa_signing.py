"""RSA signing for dkimpy through OpenSSL (the `cryptography` package).

Owns: replacing dkimpy's pure-Python RSASSA-PKCS1-v1_5 signer, which costs ~6 ms per signature
on this machine (the gateway's ARC seal makes two per message), with OpenSSL's (~0.3 ms).
PKCS#1 v1.5 signatures are deterministic (RFC 8017 §8.2), so the bytes are identical — a test
checks that against dkimpy's own implementation. Verification stays dkimpy's: with e = 65537
it is cheap in Python.

dkimpy offers no hook for its signer, so the functions it imported (the signer, and the PEM
parser, memoised) are swapped in its module;
`install()` is idempotent and keeps the original for anything OpenSSL does not handle.
"""

from __future__ import annotations

import functools
import threading

import dkim as dkimpy
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_PURE_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_PURE_PARSE = dkim.crypto.parse_pem_private_key
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # by modulus: a node signs with a handful of keys
_MAX_KEYS = 64
_lock = threading.Lock()


def _openssl_key(pk: dict) -> rsa.RSAPrivateKey:
    key = _KEYS.get(pk["modulus"])
    if key is None:
        numbers = rsa.RSAPrivateNumbers(
            p=pk["prime1"], q=pk["prime2"], d=pk["privateExponent"], dmp1=pk["exponent1"], dmq1=pk["exponent2"],
            iqmp=pk["coefficient"], public_numbers=rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"]))
        key = numbers.private_key()
        with _lock:
            if len(_KEYS) >= _MAX_KEYS:
                _KEYS.clear()
            _KEYS[pk["modulus"]] = key
    return key


def openssl_sign(hash_obj, private_key: dict) -> bytes:
    """Drop-in for dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key)."""
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    if algorithm is None:
        return _PURE_SIGN(hash_obj, private_key)
    key = _openssl_key(private_key)
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))


@functools.lru_cache(maxsize=64)
def _parsed_pem_key(data: bytes) -> dict:
    # dkimpy parses the PEM key (ASN.1 in pure Python) on every signature; the node's keys
    # are few and fixed, so parse each once.
    return _PURE_PARSE(data)


def install() -> None:
    dkimpy.RSASSA_PKCS1_v1_5_sign = openssl_sign
    dkimpy.parse_pem_private_key = _parsed_pem_key


install()
