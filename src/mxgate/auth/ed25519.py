"""Ed25519 (RFC 8463) for dkimpy through OpenSSL (the `cryptography` package), without PyNaCl.

Owns: the three PyNaCl names dkimpy calls for ed25519-sha256 — `nacl.signing.VerifyKey` /
`SigningKey`, `nacl.encoding.Base64Encoder`, `nacl.exceptions` — given to dkimpy's module as
its `nacl`. RFC 8463 §3: verifiers MUST implement ed25519-sha256; dkimpy verifies it only when
PyNaCl imports, and PyNaCl is not a dependency, so before this every Ed25519 signature was a
permerror ("pynacl module required"). `cryptography` is already a dependency (RSA, TLS).
Must not know: DKIM itself. dkimpy's flow stays whole (tag checks, body hash, header hash,
k=, minimum key size); it calls `VerifyKey(p, encoder).verify(sha256(headers), b)` — PureEdDSA
over the SHA-256 of the signed data, as RFC 8463 §3 specifies — and this answers it.

Where it differs from PyNaCl, on the safe side: a p= that is not base64 or not 32 bytes raises
`nacl.exceptions.ValueError` (dkimpy makes that KeyFormatError → permerror), where PyNaCl lets
binascii.Error through; a b= that is not 64 bytes is a bad signature (dkimpy: fail), where
PyNaCl raises a ValueError dkimpy does not catch. Installed always, PyNaCl or not, so a node
verifies the same way whatever else is installed. `install()` is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import types

import dkim as _dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

KEY_BYTES = 32  # RFC 8032 §5.1.5: an Ed25519 public key (and private seed) is 32 octets
SIGNATURE_BYTES = 64  # RFC 8032 §5.1.6


class BadSignatureError(Exception):
    """nacl.exceptions.BadSignatureError: the signature does not verify."""


class Base64Encoder:
    @staticmethod
    def decode(data) -> bytes:
        """PyNaCl's: base64 that skips characters outside the alphabet (the FWS RFC 6376 §3.6.1
        allows in p=, as dkimpy's RSA path does), a ValueError for anything else."""
        try:
            return base64.b64decode(data)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"not base64: {exc}") from exc


class VerifyKey:
    """nacl.signing.VerifyKey(key, encoder): raises ValueError for anything but 32 octets."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key, encoder=None) -> None:
        raw = encoder.decode(key) if encoder is not None else key
        if type(raw) is not bytes or len(raw) != KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {KEY_BYTES} octets")
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        self._raw = raw

    def __bytes__(self) -> bytes:  # PyNaCl's keys compare (and print) by their raw octets
        return self._raw

    def __eq__(self, other) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def verify(self, message: bytes, signature: bytes) -> bytes:
        if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
            raise BadSignatureError(f"an Ed25519 signature is {SIGNATURE_BYTES} octets")
        try:
            self._key.verify(signature, message)
        except InvalidSignature as exc:
            raise BadSignatureError("signature was forged or corrupt") from exc
        return message


class SigningKey:
    """nacl.signing.SigningKey(seed, encoder).sign(data).signature (dkimpy's Ed25519 signer)."""

    __slots__ = ("_key",)

    def __init__(self, seed, encoder=None) -> None:
        raw = encoder.decode(seed) if encoder is not None else seed
        if type(raw) is not bytes or len(raw) != KEY_BYTES:
            raise ValueError(f"an Ed25519 seed is {KEY_BYTES} octets")
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)

    def sign(self, message: bytes):
        return types.SimpleNamespace(signature=self._key.sign(message))


NACL_FOR_DKIMPY = types.SimpleNamespace(
    signing=types.SimpleNamespace(VerifyKey=VerifyKey, SigningKey=SigningKey),
    encoding=types.SimpleNamespace(Base64Encoder=Base64Encoder),
    exceptions=types.SimpleNamespace(ValueError=ValueError, BadSignatureError=BadSignatureError))


def install() -> None:
    _dkim.nacl = NACL_FOR_DKIMPY  # the module global dkimpy's evaluate_pk, verify and sign read


install()
