"""RSA signing and verification for dkimpy through OpenSSL (the `cryptography` package).

Owns: replacing dkimpy's pure-Python RSASSA-PKCS1-v1_5 signer, which costs ~6 ms per signature
on this machine (the gateway's ARC seal makes two per message), with OpenSSL's (~0.3 ms).
PKCS#1 v1.5 signatures are deterministic (RFC 8017 §8.2), so the bytes are identical — a test
checks that against dkimpy's own implementation. Verification too: dkimpy's pure-Python one
(ASN.1 key parsing, a byte-at-a-time integer conversion) is most of the cost of checking a
DKIM or ARC signature, and every message carries three (DKIM, ARC-Seal, ARC-Message-Signature).
OpenSSL's verification is stricter in one way only: a signature whose integer is not below the
modulus is invalid (RFC 8017 §5.2.2 step 1), where dkimpy's reduces it modulo n.
Ed25519 goes through OpenSSL too (auth/ed25519.py).

dkimpy offers no hook for its signer or verifier, so the functions it imported (the signer,
the verifier, and the PEM and public-key parsers, memoised) are swapped in its module;
`install()` is idempotent and keeps the original for anything OpenSSL does not handle.
"""

from __future__ import annotations

import functools
import threading

import dkim as dkimpy
import dkim.crypto
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_PURE_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_PURE_PARSE = dkim.crypto.parse_pem_private_key
_PURE_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_PURE_PARSE_PUBLIC = dkim.crypto.parse_public_key
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # by modulus: a node signs with a handful of keys
_PUBLIC: dict[tuple[int, int], rsa.RSAPublicKey] = {}  # by (n, e): the senders' keys seen lately
_MAX_PUBLIC = 1024
_MAX_KEYS = 64
_lock = threading.Lock()


def _openssl_key(pk: dict) -> rsa.RSAPrivateKey:
    key = _KEYS.get(pk["modulus"])
    if key is None:
        # Built under the lock: loading checks the key (tens of ms), and the first burst after a
        # start ran every seal thread into it at once (issue 19: 2.8% of a P3 gateway profile).
        with _lock:
            key = _KEYS.get(pk["modulus"])
            if key is None:
                numbers = rsa.RSAPrivateNumbers(
                    p=pk["prime1"], q=pk["prime2"], d=pk["privateExponent"], dmp1=pk["exponent1"],
                    dmq1=pk["exponent2"], iqmp=pk["coefficient"],
                    public_numbers=rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"]))
                key = numbers.private_key()
                if len(_KEYS) >= _MAX_KEYS:
                    _KEYS.clear()
                _KEYS[pk["modulus"]] = key
    return key


def signing_key_loaded(pem: bytes) -> bool:
    """True when signing with this PEM key needs no parse and no load (both done once per
    process): what the gateway asks before sealing on its event loop."""
    try:
        pk = _parsed_pem_key(bytes(pem))
    except Exception:  # not a key dkimpy can read: the seal reports it, in a thread
        return False
    return pk["modulus"] in _KEYS


def openssl_sign(hash_obj, private_key: dict) -> bytes:
    """Drop-in for dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key)."""
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    if algorithm is None:
        return _PURE_SIGN(hash_obj, private_key)
    key = _openssl_key(private_key)
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))


def _openssl_public(pk: dict) -> rsa.RSAPublicKey:
    ident = (pk["modulus"], pk["publicExponent"])
    key = _PUBLIC.get(ident)
    if key is None:
        key = rsa.RSAPublicNumbers(ident[1], ident[0]).public_key()  # ValueError: OpenSSL refuses it
        with _lock:
            if len(_PUBLIC) >= _MAX_PUBLIC:
                _PUBLIC.clear()
            _PUBLIC[ident] = key
    return key


def openssl_verify(hash_obj, signature: bytes, public_key: dict) -> bool:
    """Drop-in for dkim.crypto.RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)."""
    algorithm = _HASHES.get(getattr(hash_obj, "name", ""))
    modlen = (public_key["modulus"].bit_length() + 7) // 8
    if algorithm is None or len(signature) != modlen:
        # Unusual hash or a signature of the wrong length (RFC 8017 §8.2.2 step 1 makes it
        # invalid): dkimpy's own code decides, with its own errors (e.g. digest too large).
        return _PURE_VERIFY(hash_obj, signature, public_key)
    try:
        key = _openssl_public(public_key)
    except ValueError:  # e.g. an even exponent: OpenSSL will not load it; dkimpy's code decides
        return _PURE_VERIFY(hash_obj, signature, public_key)
    try:
        key.verify(signature, hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _parsed_public_key(data: bytes) -> dict:
    # The key record's DER, parsed by dkimpy in pure Python per signature; a handful of
    # sender keys carry most mail. A fresh dict each time: dkimpy's callers own theirs.
    return dict(_PURE_PARSE_PUBLIC(data))


def _public_key_parser(data: bytes) -> dict:
    return dict(_parsed_public_key(bytes(data)))


@functools.lru_cache(maxsize=64)
def _parsed_pem_key(data: bytes) -> dict:
    # dkimpy parses the PEM key (ASN.1 in pure Python) on every signature; the node's keys
    # are few and fixed, so parse each once.
    return _PURE_PARSE(data)


def install() -> None:
    dkimpy.RSASSA_PKCS1_v1_5_sign = openssl_sign
    dkimpy.parse_pem_private_key = _parsed_pem_key
    dkimpy.RSASSA_PKCS1_v1_5_verify = openssl_verify
    dkimpy.parse_public_key = _public_key_parser


install()
