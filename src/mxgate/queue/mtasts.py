"""MTA-STS (RFC 8461): a recipient domain's policy that its MX hosts offer STARTTLS with a
certificate valid for their names.

Owns: reading the `_mta-sts.<domain>` TXT record (§3.1), fetching the policy from
`https://mta-sts.<domain>/.well-known/mta-sts.txt` (§3.3: HTTPS with a valid certificate for that
name, no redirects, 200 only, at most 64 KiB, the host resolved through the node's resolver),
parsing it (§3.2), matching MX host names against its `mx` patterns (§4.1), and a cache keyed by
domain that is refetched only when the TXT record's `id` changes or `max_age` runs out (§3.3,
§5.1). `applies` is the pure decision for one MX host.
Must not know: SMTP sessions or the queue.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.resolver

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # §3.3: senders may refuse larger policies
MAX_AGE_LIMIT = 31_557_600  # §3.2: at most one year


class StsError(ValueError):
    """No valid policy (the text says why); callers treat the domain as having none (§5)."""


@dataclass(frozen=True)
class StsPolicy:
    mode: str  # "enforce" | "testing" | "none"
    mx: tuple[str, ...]
    max_age: int
    id: str = ""


def parse_record(txt: str) -> str:
    """The `id` of an `_mta-sts` TXT record (§3.1), or StsError."""
    fields = {}
    for part in txt.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise StsError(f"malformed field {part!r}")
        fields.setdefault(key.strip(), value.strip())
    if not txt.strip().startswith("v=STSv1") or fields.get("v") != "STSv1":
        raise StsError("not an STSv1 record")
    sid = fields.get("id", "")
    if not sid or len(sid) > 32 or not sid.isalnum():
        raise StsError("id must be 1-32 letters and digits")
    return sid


def parse_policy(text: str) -> StsPolicy:
    """§3.2: `key: value` lines; version STSv1, mode, max_age, one or more mx (not with mode none)."""
    values: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise StsError(f"malformed line {line[:60]!r}")
        values.setdefault(key.strip(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise StsError("version must be STSv1")
    mode = (values.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise StsError(f"mode {mode!r} is not enforce, testing or none")
    try:
        max_age = int((values.get("max_age") or [""])[0])
    except ValueError:
        raise StsError("max_age is not a number") from None
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise StsError("max_age out of range")
    mx = tuple(m.lower().rstrip(".") for m in values.get("mx", []))
    if mode != "none" and not mx:
        raise StsError("no mx pattern")
    return StsPolicy(mode, mx, max_age)


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: exact, or "*.example.com" matching exactly one more leftmost label."""
    host = host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


def applies(policy: StsPolicy | None, mx_host: str) -> str:
    """Pure: for one MX host, "none" (no policy or mode none), "skip" (enforce: host not listed —
    never deliver there, §5.1), "require" (STARTTLS with a certificate for `mx_host`), or "report"
    (testing: deliver anyway, a failure is only reported)."""
    if policy is None or policy.mode == "none":
        return "none"
    if policy.mode == "testing":
        return "report"
    return "require" if any(mx_matches(p, mx_host) for p in policy.mx) else "skip"


def _address(resolver, name: str, timeout: float) -> str:
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(name, rdtype, lifetime=timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        for r in answer:
            return r.address
    raise StsError(f"{name} has no address")


def fetch_policy(domain: str, resolver, *, context: ssl.SSLContext | None = None, port: int = 443,
                 timeout: float = 10.0) -> StsPolicy:
    """GET the policy over HTTPS (§3.3) from mta-sts.<domain>, resolved through `resolver`."""
    host = f"mta-sts.{domain.lower().rstrip('.')}"
    try:
        address = _address(resolver, host, timeout)
    except dns.exception.DNSException as exc:
        raise StsError(f"{host}: {exc.__class__.__name__}") from None
    ctx = context or ssl.create_default_context()
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
        raise StsError("the policy must be fetched with certificate and name checks (RFC 8461 §3.3)")
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect((address, port))
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                            "User-Agent: mxgate\r\n\r\n".encode("ascii"))
                data = b""
                while len(data) <= MAX_POLICY_BYTES + 4096:
                    chunk = tls.recv(16384)
                    if not chunk:
                        break
                    data += chunk
    except (OSError, ssl.SSLError) as exc:
        raise StsError(f"https://{host}{POLICY_PATH}: {exc.__class__.__name__}: {exc}"[:300]) from None
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise StsError("no HTTP response")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":  # §3.3: redirects are not followed
        raise StsError(f"HTTP status {status[1].decode('ascii', 'replace') if len(status) > 1 else '?'}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    if not headers.get(b"content-type", b"").lower().startswith(b"text/plain"):
        raise StsError("the policy is not text/plain")
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        raise StsError("chunked responses are not read")
    if len(body) > MAX_POLICY_BYTES:
        raise StsError("policy larger than 64 KiB")
    return parse_policy(body.decode("utf-8", "replace"))


class StsCache:
    """Per domain: the policy and its id, until max_age (§5.1). A domain whose record disappears
    keeps its unexpired policy (§3.3: a record removal is not a policy removal)."""

    def __init__(self, resolver, *, context: ssl.SSLContext | None = None, port: int = 443, timeout: float = 10.0,
                 clock=time.time):
        self.resolver, self.context, self.port, self.timeout, self.clock = resolver, context, port, timeout, clock
        self._items: dict[str, tuple[float, StsPolicy]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _record_id(self, domain: str) -> str | None:
        try:
            answer = self.resolver.resolve(f"_mta-sts.{domain}", "TXT", lifetime=self.timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException:
            return None
        ids = []
        for r in answer:
            txt = b"".join(r.strings).decode("ascii", "replace")
            if txt.startswith("v=STSv1"):
                try:
                    ids.append(parse_record(txt))
                except StsError:
                    continue
        return ids[0] if len(ids) == 1 else None  # §3.1: more than one record = no record

    def policy(self, domain: str) -> StsPolicy | None:
        """The domain's policy (blocking: DNS and maybe HTTPS; run in a worker thread)."""
        domain = domain.lower().rstrip(".")
        now = self.clock()
        with self._lock:
            cached = self._items.get(domain)
        sid = self._record_id(domain)
        if cached and cached[0] > now and (sid is None or sid == cached[1].id):
            return cached[1]
        if sid is None:
            return cached[1] if cached and cached[0] > now else None
        try:
            fetched = fetch_policy(domain, self.resolver, context=self.context, port=self.port, timeout=self.timeout)
        except StsError:
            return cached[1] if cached and cached[0] > now else None  # §5.1: keep a valid cached policy
        self.fetches += 1
        policy = StsPolicy(fetched.mode, fetched.mx, fetched.max_age, sid)
        with self._lock:
            self._items[domain] = (now + policy.max_age, policy)
        return policy
