"""Signatures whose a= names another algorithm than the one that made them (RFC 6376 §3.3, §3.5
a=): what the key-type tests sign with. dkimpy's Ed25519 (RFC 8463) runs on the names mxgate
gives it (auth/ed25519.py, installed when mxgate.auth.dkim is imported), not on PyNaCl.

dkimpy verifies with whatever key type the key record's k= names and hashes with a='s hash, so
an RSA signature labelled `a=ed25519-sha256` over a `k=rsa` key, or an Ed25519 one labelled
`a=rsa-sha256` over a `k=ed25519` key, verifies there (the a= text is signed like any tag).
"""

from __future__ import annotations

import base64

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import mxgate.auth.ed25519  # noqa: F401  dkimpy's Ed25519, as the product runs it


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
    dkimpy's ARC signer parses a PEM RSA key first (`any_rsa_pem`); it signs with the seed, through
    the Ed25519 names mxgate gives dkimpy (auth/ed25519.py)."""
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
