"""DKIM signing of outbound mail for the organisation's own domains (RFC 6376).

Owns: the per-domain signing keys under `<home>/keys` (`dkim-<domain>.<selector>.pem`, with the
DNS TXT value beside it in `.txt`), generating a key the first time a domain needs one, the DNS
record text to publish (`mxgate dkim show-dns DOMAIN`), and choosing which domain signs a
message. Must not know SMTP, queues or the policy format; the RSA work itself is auth/dkim.py.

Which domain signs: the header From domain when it is ours (that is the one DMARC aligns,
RFC 7489 §3.1.1); else the envelope sender's domain when it is ours (forwarded mail after SRS,
mail from applications): a signature of the forwarding organisation still lets receivers and
ARC-aware filters tell who handled the message.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from mxgate.durable import write_atomically
from mxgate.auth.dkim import generate_dkim_key, sign_dkim
from mxgate.auth.headers import header_from_domain

DEFAULT_SELECTOR = "mxgate"
_lock = threading.Lock()  # two first messages for a new domain must not make two keys


def _paths(keys_dir: Path, domain: str, selector: str) -> tuple[Path, Path]:
    domain = domain.lower().rstrip(".")
    if not domain or "/" in domain or domain.startswith("."):
        raise ValueError(f"not a domain name: {domain!r}")
    return keys_dir / f"dkim-{domain}.{selector}.pem", keys_dir / f"dkim-{domain}.{selector}.txt"


def ensure_key(keys_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> tuple[bytes, str]:
    """(private key PEM, TXT value) for the domain, generated once and kept (0600)."""
    pem_path, txt_path = _paths(Path(keys_dir), domain, selector)
    with _lock:
        if not pem_path.exists():
            pem, txt = generate_dkim_key()
            write_atomically(txt_path, txt.encode("ascii"), 0o644)  # the TXT first: a key without it is useless
            write_atomically(pem_path, pem, 0o600)
    return pem_path.read_bytes(), txt_path.read_text(encoding="ascii").strip()


def dns_record(keys_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> tuple[str, str]:
    """(owner name, TXT value) to publish so receivers can verify this domain's signatures."""
    _pem, txt = ensure_key(keys_dir, domain, selector)
    return f"{selector}._domainkey.{domain.lower().rstrip('.')}", txt


def zone_line(keys_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> str:
    """A zone-file line; the value is split into 255-octet strings (RFC 1035 §3.3.14)."""
    name, txt = dns_record(keys_dir, domain, selector)
    chunks = " ".join(f'"{txt[i:i + 255]}"' for i in range(0, len(txt), 255))
    return f"{name}. IN TXT ( {chunks} )"


def signing_domain(message: bytes, envelope_sender: str, is_ours: Callable[[str], bool]) -> str | None:
    """The domain that signs this message, or None when neither identity is ours."""
    header = (header_from_domain(message) or "").lower()
    if header and is_ours(header):
        return header
    env = envelope_sender.rpartition("@")[2].lower() if "@" in envelope_sender else ""
    if env and is_ours(env):
        return env
    return None


class DkimSigner:
    """Signs outbound messages with the organisation's per-domain keys (call off the event loop)."""

    def __init__(self, keys_dir: Path, selector: str = DEFAULT_SELECTOR):
        self.keys_dir = Path(keys_dir)
        self.selector = selector

    def sign(self, message: bytes, envelope_sender: str, is_ours: Callable[[str], bool]) -> bytes:
        """The message with a DKIM-Signature on top, or unchanged when no domain of ours applies."""
        domain = signing_domain(message, envelope_sender, is_ours)
        if domain is None:
            return message
        pem, _txt = ensure_key(self.keys_dir, domain, self.selector)
        return sign_dkim(message, domain, self.selector, pem) + message
