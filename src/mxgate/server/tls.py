"""TLS for the listeners: contexts, the embedded default's generated CA, and peer-certificate facts.

Owns: building ssl.SSLContext objects, generating a private CA + server certificate into the home
directory on first run, and reading a client certificate into `PeerCertificate` (subject CN, DNS
SANs, SHA-256 of the SubjectPublicKeyInfo for pinning). Must not decide which certificate is
acceptable — policy/attribution.py does.

Client certificates are requested only when a client CA is configured (dependencies.md trap 8):
with CERT_OPTIONAL, a certificate from an unknown CA, or an expired one, fails the handshake,
which is how such a peer is refused; a peer without a certificate completes the handshake.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mxgate.durable import write_atomically

log = logging.getLogger("mxgate.tls")


@dataclass(frozen=True)
class PeerCertificate:
    subject_cn: str
    dns_names: tuple[str, ...]
    spki_sha256: str  # lower-case hex
    issuer: str
    not_after: str


@dataclass(frozen=True)
class TlsFacts:
    version: str
    cipher: str
    bits: int
    peer_cert: PeerCertificate | None


def server_context(cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.options |= ssl.OP_NO_COMPRESSION
    if client_ca:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def tls_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsFacts | None:
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher() or ("", "", 0)
    der = ssl_object.getpeercert(binary_form=True)
    return TlsFacts(
        version=ssl_object.version() or "",
        cipher=cipher[0],
        bits=cipher[2] or 0,
        peer_cert=peer_certificate(der) if der else None,
    )


def peer_certificate(der: bytes) -> PeerCertificate:
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return PeerCertificate(
        subject_cn=str(cns[0].value).lower() if cns else "",
        dns_names=dns_names,
        spki_sha256=spki_sha256(cert),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def spki_sha256(cert: x509.Certificate) -> str:
    """RFC 7469 §2.4 style pin: SHA-256 of the DER SubjectPublicKeyInfo (survives re-issue with the same key)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def spki_sha256_of_file(path: str | Path) -> str:
    return spki_sha256(x509.load_pem_x509_certificate(Path(path).read_bytes()))


# --- certificates that renew in place -----------------------------------------------------------

@dataclass(frozen=True)
class CertificateInfo:
    """What an operator checks about a listener's certificate: who, until when, which pin."""

    path: str
    subject: str
    dns_names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    spki_sha256: str

    def days_left(self, now: float | None = None) -> float:
        now_dt = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc)
        return (self.not_after - now_dt).total_seconds() / 86400


def certificate_info(path: str | Path) -> CertificateInfo:
    """The first certificate of a PEM file (the leaf of a fullchain.pem)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(str(path), cert.subject.rfc4514_string(), names, cert.not_valid_before_utc,
                           cert.not_valid_after_utc, spki_sha256(cert))


class ReloadingContext:
    """A listener's server SSL context that follows its certificate and key files.

    An ACME client (certbot, lego) replaces the files in place; `check()` (polled by the node,
    at once on SIGHUP) notices a changed inode, mtime or size and builds a new context. New
    handshakes get it; sessions already in TLS keep the one they negotiated. A new pair that does
    not load (key not matching, half-written file, not yet valid or expired) is refused with a log
    line and the old context stays; it is retried when the files change again.
    Calling the object returns the current context (Listener's `ssl_context` provider)."""

    def __init__(self, name: str, cert: str | Path, key: str | Path, client_ca: str | Path | None = None,
                 clock=time.time, build: Callable[[], ssl.SSLContext] | None = None, also: tuple[str, ...] = ()):
        """`build` makes the context from the files (default: a server context; the gateway's
        relay passes its client context, so its client certificate renews the same way);
        `also` names further files whose change means a rebuild (a CA bundle)."""
        self.name = name
        self.cert, self.key = str(cert), str(key)
        self.client_ca = str(client_ca) if client_ca else None
        self.clock = clock
        self._build = build or (lambda: server_context(self.cert, self.key, self.client_ca))
        self._files = tuple(p for p in (self.cert, self.key, self.client_ca, *also) if p)
        self._signature = self._files_signature()
        self.context, self.info = self._load(renewal=False)
        if self.info.not_after <= dt.datetime.fromtimestamp(clock(), dt.timezone.utc):
            # Serving an expired certificate beats refusing all mail (most MTAs do not verify); say so.
            log.warning("%s: certificate %s expired on %s", name, self.cert, self.info.not_after.isoformat(),
                        extra={"reason": "tls-certificate-expired"})
        self.loaded_at = clock()
        self._refused: tuple | None = None

    def __call__(self) -> ssl.SSLContext:
        return self.context

    def _files_signature(self) -> tuple:
        sig = []
        for path in self._files:
            st = os.stat(path)  # follows certbot's live/ symbolic links to archive/
            sig.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def _load(self, renewal: bool = True) -> tuple[ssl.SSLContext, CertificateInfo]:
        ctx = self._build()  # SSLError when the key does not match the certificate
        info = certificate_info(self.cert)
        if not renewal:
            return ctx, info
        now = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        if info.not_after <= now:
            raise ValueError(f"certificate expired on {info.not_after.isoformat()}")
        if info.not_before > now:
            raise ValueError(f"certificate not valid before {info.not_before.isoformat()}")
        return ctx, info

    def check(self) -> str:
        """"unchanged", "reloaded" or "refused" (the old pair stays in use)."""
        try:
            signature = self._files_signature()
        except OSError as exc:  # a file is being replaced (or was removed): keep serving the old pair
            return self._refuse(("missing", str(exc)), f"cannot read the files: {exc.strerror or exc}")
        if signature == self._signature:
            return "unchanged"
        if signature == self._refused:
            return "refused"  # already logged; waiting for the files to change again
        try:
            context, info = self._load()
        except (ssl.SSLError, ValueError, OSError) as exc:
            return self._refuse(signature, str(exc))
        self.context, self.info, self._signature, self._refused = context, info, signature, None
        self.loaded_at = self.clock()
        log.info("%s: loaded the renewed certificate %s (expires %s, SPKI sha256 %s)", self.name, info.subject,
                 info.not_after.isoformat(), info.spki_sha256, extra={"reason": "tls-certificate-reloaded"})
        return "reloaded"

    def _refuse(self, signature: tuple, why: str) -> str:
        if signature != self._refused:  # one log line per bad state of the files, not one per poll
            log.error("%s: refused the new certificate/key in %s and %s: %s; still serving %s (expires %s)",
                      self.name, self.cert, self.key, why, self.info.subject, self.info.not_after.isoformat(),
                      extra={"reason": "tls-certificate-refused"})
        self._refused = signature
        return "refused"


# --- the embedded default: a private CA and a server certificate --------------------------------

@dataclass(frozen=True)
class GeneratedCertificates:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def ensure_default_certificates(directory: Path, hostname: str) -> GeneratedCertificates:
    """Create (once) a CA and a server certificate for `hostname`, 127.0.0.1 and ::1."""
    directory.mkdir(parents=True, exist_ok=True)
    out = GeneratedCertificates(directory / "ca.pem", directory / "ca.key", directory / "server.pem", directory / "server.key")
    if out.server_cert.exists() and out.server_key.exists() and out.ca_cert.exists():
        return out
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mxgate local CA ({hostname})")])
    now = dt.datetime.now(dt.timezone.utc)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert, key = issue_certificate(ca, ca_key, hostname, server=True)
    _write(out.ca_key, ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), private=True)
    _write(out.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write(out.server_key, key, private=True)
    _write(out.server_cert, cert)
    return out


def issue_certificate(ca: x509.Certificate, ca_key, common_name: str, *, server: bool, days: int = 825) -> tuple[bytes, bytes]:
    """Issue a leaf certificate (server: serverAuth, SANs for the name and loopback; else clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(common_name)]
    if server:
        sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: bytes, private: bool = False) -> None:
    write_atomically(path, data, 0o600 if private else 0o644)
