"""DKIM signing of outbound mail for the organisation's own domains (RFC 6376).

Owns: the per-domain signing keys under `<home>/keys` (`dkim-<domain>.<selector>.pem`, with the
DNS TXT value beside it in `.txt`), generating a key the first time a domain needs one, the DNS
record text to publish (`mxgate dkim show-dns DOMAIN`), and choosing which domain signs a
message. Must not know SMTP, queues or the policy format; the RSA work itself is auth/dkim.py.

Which domain signs: the header From domain when it is ours (that is the one DMARC aligns,
RFC 7489 §3.1.1); else the envelope sender's domain when it is ours (forwarded mail after SRS,
mail from applications): a signature of the forwarding organisation still lets receivers and
ARC-aware filters tell who handled the message. Mail that came from outside (forwarded, relayed
on, released from quarantine) is never signed by a domain aligned with one of its authors: its
From was the sender's to write, and our signature would make every receiver's DMARC pass it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mxgate.durable import write_atomically
from mxgate.auth.dkim import generate_dkim_key, sign_dkim
from mxgate.auth.dmarc import author_candidates, organizational_domain
from mxgate.auth.headers import author_domains, header_from_domain
from mxgate.errors import MxgateError, NotFoundError, PolicyFormatError

DEFAULT_SELECTOR = "mxgate"
# One DNS label: RFC 6376 §3.1 allows dotted selectors, but one label keeps `dkim-<domain>.<selector>`
# file names unambiguous.
_SELECTOR_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
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


# --- selector rotation (RFC 6376 §3.1: selectors exist so keys can change without a gap) ------
# Per domain, `dkim-<domain>.active` names the selector that signs; without it the signer's
# default selector does. Rotation: publish a new selector's key (generate it, put its TXT record
# in DNS), sign with it once DNS has it, then retire the old key after in-flight mail has been
# verified. `keys` is this node's home keys directory, or the cluster's KeyRing (store/keys.py):
# then the steps change the keys every node on the store signs with.


def _ring(keys):
    return keys if hasattr(keys, "dkim_publish") else None

@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    dns_name: str
    txt: str
    active: bool


def _active_path(keys_dir: Path, domain: str) -> Path:
    pem, _txt = _paths(Path(keys_dir), domain, "x")
    return pem.with_name(f"dkim-{domain.lower().rstrip('.')}.active")


def check_selector(selector: str) -> str:
    if not _SELECTOR_RE.fullmatch(selector or ""):
        raise PolicyFormatError(f"selector: {selector!r} is not one DNS label (letters, digits and inner hyphens)")
    return selector.lower()


def active_selector(keys_dir: Path, domain: str, default: str = DEFAULT_SELECTOR) -> str:
    try:
        return _active_path(keys_dir, domain).read_text(encoding="ascii").strip() or default
    except FileNotFoundError:
        return default


def list_keys(keys_dir, default: str = DEFAULT_SELECTOR) -> list[DkimKey]:
    """Every signing key in this home (or the cluster), by domain then selector."""
    if _ring(keys_dir):
        return [DkimKey(r.name, r.selector, f"{r.selector}._domainkey.{r.name}", r.public, r.state == "active")
                for r in keys_dir.dkim_rows()]
    out = []
    for pem in sorted(Path(keys_dir).glob("dkim-*.pem")):
        domain, _, selector = pem.name[len("dkim-"):-len(".pem")].rpartition(".")
        if not domain:
            continue
        txt_path = pem.with_suffix(".txt")
        if not txt_path.exists():
            continue
        out.append(DkimKey(domain, selector, f"{selector}._domainkey.{domain}", txt_path.read_text().strip(),
                           active_selector(keys_dir, domain, default) == selector))
    return out


def publish_new(keys_dir: Path, domain: str, selector: str) -> DkimKey:
    """Step 1: a new key under a new selector; signing does not change until `activate`."""
    selector = check_selector(selector)
    if _ring(keys_dir):
        try:
            _sel, txt = keys_dir.dkim_publish(domain, selector)
        except MxgateError as exc:
            raise PolicyFormatError(str(exc)) from None
        return DkimKey(domain.lower(), selector, f"{selector}._domainkey.{domain.lower()}", txt, False)
    pem_path, _txt = _paths(Path(keys_dir), domain, selector)
    if pem_path.exists():
        raise PolicyFormatError(f"selector {selector!r} already has a key for {domain}")
    _pem, txt = ensure_key(keys_dir, domain, selector)
    return DkimKey(domain.lower(), selector, f"{selector}._domainkey.{domain.lower()}", txt, False)


def activate(keys_dir: Path, domain: str, selector: str, published_txt: str | None) -> None:
    """Step 2: sign with `selector` from now on. `published_txt` is what DNS answers for its
    record; signing with a key receivers cannot find would fail every signature, so it must match."""
    selector = check_selector(selector)
    if _ring(keys_dir):
        want = next((r.public for r in keys_dir.dkim_rows() if r.name == domain.lower().rstrip(".")
                     and r.selector == selector), None)
        if want is None:
            raise NotFoundError(f"no DKIM key {selector!r} for {domain}: publish it first")
    else:
        pem_path, txt_path = _paths(Path(keys_dir), domain, selector)
        if not pem_path.exists():
            raise NotFoundError(f"no DKIM key {selector!r} for {domain}: publish it first")
        want = txt_path.read_text(encoding="ascii").strip()
    if published_txt is None or _squash(published_txt) != _squash(want):
        raise PolicyFormatError(f"{selector}._domainkey.{domain} does not publish this key in DNS yet; "
                                "add the TXT record shown, wait for it to propagate, then try again")
    if _ring(keys_dir):
        keys_dir.dkim_activate(domain, selector)
        return
    write_atomically(_active_path(keys_dir, domain), selector.encode("ascii") + b"\n", 0o600)


def retire(keys_dir: Path, domain: str, selector: str, default: str = DEFAULT_SELECTOR) -> None:
    """Step 3: delete a key that no longer signs (then remove its TXT record from DNS)."""
    selector = check_selector(selector)
    if _ring(keys_dir):
        if not any(r.name == domain.lower().rstrip(".") and r.selector == selector for r in keys_dir.dkim_rows()):
            raise NotFoundError(f"no DKIM key {selector!r} for {domain}")
        try:
            keys_dir.dkim_retire(domain, selector)
        except MxgateError as exc:
            raise PolicyFormatError(str(exc)) from None
        return
    pem_path, txt_path = _paths(Path(keys_dir), domain, selector)
    if not pem_path.exists():
        raise NotFoundError(f"no DKIM key {selector!r} for {domain}")
    if active_selector(keys_dir, domain, default) == selector:
        raise PolicyFormatError(f"{selector!r} signs {domain}'s mail now; sign with another selector before retiring it")
    pem_path.unlink()
    txt_path.unlink(missing_ok=True)


def _squash(txt: str) -> str:
    return "".join(txt.replace('"', "").split())


def signing_domain(message: bytes, envelope_sender: str, is_ours: Callable[[str], bool],
                   outside: bool = False) -> str | None:
    """The domain that signs this message, or None when neither identity is ours — or when the
    message came from `outside` and that domain aligns with an author domain (relaxed, RFC 7489
    §3.1.1): signing would vouch for a From we never proved (RFC 6376 §8.6)."""
    header = (header_from_domain(message) or "").lower()
    env = envelope_sender.rpartition("@")[2].lower() if "@" in envelope_sender else ""
    domain = header if header and is_ours(header) else env if env and is_ours(env) else None
    if domain is None or not outside:
        return domain
    ours = organizational_domain(domain)
    if any(organizational_domain(a) == ours for a in author_candidates(author_domains(message))):
        return None
    return domain


class DkimSigner:
    """Signs outbound messages with the organisation's per-domain keys (call off the event loop)."""

    def __init__(self, keys_dir: Path, selector: str = DEFAULT_SELECTOR, keyring=None):
        self.keys_dir = Path(keys_dir)
        self.selector = selector
        self.keyring = keyring  # store/keys.KeyRing: the cluster's keys, rotated on any node

    def sign(self, message: bytes, envelope_sender: str, is_ours: Callable[[str], bool],
             outside: bool = False) -> bytes:
        """The message with a DKIM-Signature on top, or unchanged when no domain of ours applies
        (`outside`: mail from outside the organisation, see signing_domain)."""
        domain = signing_domain(message, envelope_sender, is_ours, outside)
        if domain is None:
            return message
        if self.keyring is not None:  # the cluster's keys: a rotation on any node applies on all
            selector, pem = self.keyring.dkim(domain, self.selector)
        else:
            selector = active_selector(self.keys_dir, domain, self.selector)  # read per message: rotation applies at once
            pem, _txt = ensure_key(self.keys_dir, domain, selector)
        return sign_dkim(message, domain, selector, pem) + message
