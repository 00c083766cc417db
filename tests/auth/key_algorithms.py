"""Signatures whose a= names another algorithm than the one that made them (RFC 6376 §3.3, §3.5
a=), and dkimpy's Ed25519 (RFC 8463) without PyNaCl: what the key-type tests sign with.

dkimpy verifies with whatever key type the key record's k= names and hashes with a='s hash, so
an RSA signature labelled `a=ed25519-sha256` over a `k=rsa` key, or an Ed25519 one labelled
`a=rsa-sha256` over a `k=ed25519` key, verifies there (the a= text is signed like any tag).
"""

from __future__ import annotations

import base64
import contextlib
import types

import dkim as dkimpy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


class _Labelled:
    """gen_header with the a= tag replaced: the signature is still made with the object's own
    algorithm (dkimpy picks RSA or Ed25519 by `signature_algorithm`), over the labelled field;
    `key` (when set) replaces the private key dkimpy parsed (its ARC signer reads only PEM)."""

    label: bytes
    key = None

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, *args):
        fields = [(k, self.label if k == b"a" else v) for k, v in fields]
        return super().gen_header(fields, include_headers, canon_policy, header_name,
                                  pk if self.key is None else self.key, *args)


def dkim_signed(message: bytes, key, *, algorithm: bytes, label: bytes, selector=b"s1",
                domain=b"fabrikam.test") -> bytes:
    """`message` with a DKIM-Signature made with `algorithm` (PEM for rsa-sha256, base64 seed for
    ed25519-sha256) whose a= says `label`."""
    signer = type("LabelledDKIM", (_Labelled, dkimpy.DKIM), {"label": label})(message, signature_algorithm=algorithm)
    return signer.sign(selector, domain, key) + message


def arc_sealed_ed25519(message: bytes, seed: bytes, any_rsa_pem: bytes, *, srv_id: bytes, domain: bytes,
                       selector=b"arc") -> bytes:
    """`message` (carrying srv_id's Authentication-Results) with an ARC set sealed by dkimpy whose
    ARC-Message-Signature and ARC-Seal are Ed25519 signatures (base64 `seed`) saying a=rsa-sha256,
    the only algorithm dkimpy's ARC verifier takes (RFC 8617 §4.1.2 defines that one alone).
    dkimpy's ARC signer parses a PEM RSA key first (`any_rsa_pem`); it signs with the seed.
    Needs pynacl_for_dkimpy()."""
    cls = type("LabelledARC", (_Labelled, dkimpy.ARC), {"label": b"rsa-sha256"})
    sealer = cls(message, signature_algorithm=b"ed25519-sha256")
    sealer.key = dkimpy.nacl.signing.SigningKey(seed, encoder=dkimpy.nacl.encoding.Base64Encoder)
    return b"".join(sealer.sign(selector, domain, any_rsa_pem, srv_id)) + message


def ed25519_key() -> tuple[bytes, str]:
    """(base64 private seed as dkimpy signs with it, key record `v=DKIM1; k=ed25519; p=...`)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()


class _BadSignatureError(Exception):
    pass


class _SigningKey:
    def __init__(self, seed, encoder):
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(encoder.decode(seed))

    def sign(self, data: bytes):
        return types.SimpleNamespace(signature=self._key.sign(data))


class _VerifyKey:
    def __init__(self, public, encoder):
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(encoder.decode(public))
        except ValueError as exc:
            raise ValueError(str(exc)) from exc

    def verify(self, data: bytes, signature: bytes) -> bytes:
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise _BadSignatureError("signature was forged or corrupt") from exc
        return data


class _Base64Encoder:
    @staticmethod
    def decode(data) -> bytes:
        return base64.b64decode(data)


@contextlib.contextmanager
def pynacl_for_dkimpy():
    """dkimpy as it runs where PyNaCl is installed (it is not a dependency here): the names it
    calls — signing.SigningKey/VerifyKey, encoding.Base64Encoder, exceptions — over
    cryptography's Ed25519. mxgate itself now gives dkimpy such names (auth/ed25519.py); this
    test copy, written apart from it, stays for the tests written against it. Use a fresh key
    per test: mxgate's dkim_tags remembers evaluated key records by their text."""
    fake = types.SimpleNamespace(
        signing=types.SimpleNamespace(SigningKey=_SigningKey, VerifyKey=_VerifyKey),
        encoding=types.SimpleNamespace(Base64Encoder=_Base64Encoder),
        exceptions=types.SimpleNamespace(ValueError=ValueError, BadSignatureError=_BadSignatureError))
    had = hasattr(dkimpy, "nacl")
    saved = getattr(dkimpy, "nacl", None)
    dkimpy.nacl = fake
    try:
        yield
    finally:
        if had:
            dkimpy.nacl = saved
        else:
            del dkimpy.nacl
