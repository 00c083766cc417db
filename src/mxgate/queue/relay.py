"""The gateway's SMTP client: hands one queued message to the downstream, per-recipient outcomes back.

Owns: the client session (queue/smtpclient.py, pipelined) — smart hosts tried in order (fail-over on
connection, TLS or 4xx-before-RCPT trouble), STARTTLS required with the certificate validated
against the configured CA and, when the context checks names, against `tls_name` (else the
host being connected to, RFC 6125 §6), an optional client certificate (certificate connectors), the egress
`source_address` the mailbox server's connector lists — and turning each reply into a
per-recipient outcome: 2xx delivered, 4xx deferred, 5xx failed (RFC 5321 §4.2.1).
Uses `HostHealth` (queue/scheduler.py), the per-destination backoff that skips a host which just refused
connections. Recipients refused with `452 4.5.3` (they need a separate transaction) are sent
at once in a new transaction, as Postfix does, not after the retry backoff.
Must not know: the spool, retry timing, DSNs (queue/runner.py does those).

Bytes: the message is sent exactly as evaluated: as one `BDAT <size> LAST` chunk where the server
offers CHUNKING (RFC 3030), else dot-stuffed (RFC 5321 §4.5.2, at most once per relay) and ended
with "."; a bare CR or LF is never turned into CRLF: the gateway's session never
accepts one (smtp/framing.py), and a message that has one anyway is refused here rather than
silently changed (adversarial.md §2). An address with a control character is never written
into a command (CR/LF injection): that recipient fails.

Sessions: MAIL, the RCPTs and DATA go in one write when the server offers PIPELINING (RFC 2920);
the body only after a 354 with a recipient accepted. With CHUNKING the message follows its
`BDAT <size> LAST` line in that same write, and the BDAT reply means what the reply after DATA's
dot means. A pooled session that breaks before a recipient was accepted (or before the body was
written) is retried on a fresh connection (nothing can have been delivered); after it, the
recipients are deferred (the message may have arrived: a duplicate beats a loss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import time
from dataclasses import dataclass

from mxgate.names import parse_hostport
from mxgate.queue.smtpclient import Outgoing, ReplyError, SmtpClient, SmtpError, Transaction, has_control
from mxgate.queue.scheduler import HostHealth


def has_bare_cr_or_lf(data: bytes) -> bool:
    """A CR not followed by LF, or an LF not preceded by CR (RFC 5321 §2.3.8). Counting is exact —
    every CRLF pair holds one CR and one LF, so no bare one exists iff the three counts agree — and
    runs at memchr speed: 5 µs for a 3 KB message where a look-around regex took 70 (2.4 ms at 100 KB)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


@dataclass(frozen=True)
class HostTls:
    """What one MX host's TLS must satisfy; queue/outbound.py decides it (MTA-STS, DANE)."""

    name: str  # the MX host name: SNI and the certificate name (RFC 8461 §4.2, RFC 7672 §3.2.3)
    require: bool  # STARTTLS required: a host without it, or failing the checks, gets no mail
    context: ssl.SSLContext | None = None  # None: the settings' context
    tlsa: tuple = ()  # DANE (queue/dane.Tlsa): the presented chain must match one (RFC 7672 §3)
    testing: bool = False  # MTA-STS testing: a failed check is noted, delivery goes on (RFC 8461 §5)
    policy: str = "no-policy-found"  # the RFC 8460 policy type reported for this host


@dataclass(frozen=True)
class RelaySettings:
    hosts: tuple[str, ...]  # "host:port", in order of preference
    tls_context: ssl.SSLContext
    source_address: str = ""
    helo: str = "localhost"
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    tls_name: str = ""  # the name the peer's certificate must carry; "" = the host connected to
    # False only for MX delivery without a policy requiring TLS: a server that offers no STARTTLS
    # gets the message in clear text (opportunistic TLS, RFC 7435 §3); STARTTLS offered is always used.
    require_tls: bool = True
    host_tls: tuple[tuple[str, HostTls], ...] = ()  # per "host:port": MX delivery under a TLS policy
    # Idle sessions kept per host for the next messages (SessionPool). The gateway's downstream
    # relay keeps as many as it relays at once: with fewer, every burst past the limit ended in
    # QUIT and the next opened a new TLS session (bench P3: 199 sessions for 600 messages).
    idle_sessions: int = 8

    def tls_for(self, host: str) -> HostTls | None:
        if not self.host_tls:  # the connector's relay: no MX policy (per message, in the pool's key)
            return None
        return next((t for h, t in self.host_tls if h == host), None)


@dataclass(frozen=True)
class RcptOutcome:
    address: str
    state: str  # "delivered" | "deferred" | "failed"
    status: str  # RFC 3463 code
    diagnostic: str  # "smtp; 550 5.1.1 ..." (RFC 3464 §2.3.6 form)
    remote_mta: str = ""


@dataclass(frozen=True)
class RelayResult:
    outcomes: tuple[RcptOutcome, ...]
    host: str = ""  # the host that answered, "" when none could be reached
    errors: tuple[str, ...] = ()  # per-host trouble before recipients were tried
    tls: bool = False  # the delivering session was encrypted
    notes: tuple[str, ...] = ()  # "host: why": TLS checks that failed but did not stop delivery (testing)


class _Log:
    """What the sessions of one relay() call learned about TLS (for TLS-RPT, RFC 8460)."""

    def __init__(self) -> None:
        self.tls_hosts: set[str] = set()
        self.notes: list[str] = []


def client_context(ca_file: str | None, cert: str | None = None, key: str | None = None,
                   verify: bool = True, check_hostname: bool = False) -> ssl.SSLContext:
    """The client side of a relay session: TLS 1.2 or later, the chain checked against `ca_file`
    (or the system store) unless `verify` is off, an optional client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname and verify
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca_file:
            ctx.load_verify_locations(cafile=str(ca_file))
        else:
            ctx.load_default_certs()
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")  # RFC 3463 §2, at the start of the text


def _status_of(code: int, message: str) -> str:
    """The enhanced status code of a reply (RFC 3463), or one implied by the basic code."""
    m = _ENHANCED.match(message.strip())
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")


def _outcome(address: str, code: int, message: str, host: str) -> RcptOutcome:
    state = "delivered" if 200 <= code < 300 else "failed" if 500 <= code < 600 else "deferred"
    text = " ".join(message.split())[:400]
    return RcptOutcome(address, state, _status_of(code, text), f"smtp; {code} {text}", host)


def _all(recipients, state: str, status: str, diagnostic: str, host: str = "") -> tuple[RcptOutcome, ...]:
    return tuple(RcptOutcome(r, state, status, diagnostic, host) for r in recipients)


class _HostTrouble(Exception):
    """This host cannot take the message now; try the next one."""


class _TlsPolicyTrouble(_HostTrouble):
    """The host does not meet the TLS its domain's policy requires (MTA-STS, DANE, a required domain)."""


_UNVERIFIED: list[ssl.SSLContext] = []


def _unverified() -> ssl.SSLContext:
    if not _UNVERIFIED:
        _UNVERIFIED.append(client_context(None, verify=False))
    return _UNVERIFIED[0]


def _names_match(client: SmtpClient, pattern: str) -> bool:
    """A verified peer certificate with a DNS name under `pattern` ("*.example": any host below
    example, as Exchange Online reads a wildcard TlsDomain). SAN only (RFC 6125 §6.4.4)."""
    from mxgate.policy.attribution import certificate_name_matches

    obj = client.ssl_object
    cert = obj.getpeercert() if obj is not None else None  # {} when the chain was not verified
    names = [v for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS"]
    return any(certificate_name_matches(pattern, n) for n in names)


def _peer_chain(client: SmtpClient) -> list[bytes]:
    """The certificates the server presented, leaf first (DER)."""
    obj = client.ssl_object
    if obj is None:
        return []
    try:  # Python < 3.13: the chain is only on the private object
        raw = getattr(obj, "get_unverified_chain", None) or obj._sslobj.get_unverified_chain
        return [c.public_bytes(2) for c in (raw() or [])]  # 2 = _ssl.ENCODING_DER
    except AttributeError:
        leaf = obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []


class SessionPool:
    """Idle relay sessions (connected, STARTTLS done, EHLO answered), reused for the next message
    to the same host, as Postfix's connection cache does: the TLS handshake was most of the cost
    of relaying one message. Sessions are bound to their event loop and to the settings they were
    opened with, so those are part of the key; an idle one is closed after IDLE_SECONDS."""

    IDLE_SECONDS = 30.0  # well below the 5 minutes a server waits for a command (RFC 5321 §4.5.3.2.7)

    def __init__(self) -> None:
        self._idle: dict[tuple, list[tuple[float, SmtpClient]]] = {}

    @staticmethod
    def key(settings: RelaySettings, host: str) -> tuple:
        return (id(asyncio.get_running_loop()), host, id(settings.tls_context), settings.tls_name, settings.source_address,
                settings.helo, settings.require_tls, settings.tls_for(host))

    def take(self, key: tuple) -> SmtpClient | None:
        now = time.monotonic()
        idle = self._idle.get(key, [])
        while idle:
            since, client = idle.pop()
            if now - since < self.IDLE_SECONDS and client.is_connected:
                return client
            client.close()
        return None

    def give(self, key: tuple, client: SmtpClient, limit: int) -> bool:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= limit or not client.is_connected:
            return False
        idle.append((time.monotonic(), client))
        return True

    def close_for_this_loop(self) -> None:
        """A stopping runner closes the idle sessions of its own event loop."""
        loop_id = id(asyncio.get_running_loop())
        for key in [k for k in self._idle if k[0] == loop_id]:
            for _, client in self._idle.pop(key):
                client.close()


POOL = SessionPool()


async def _open(settings: RelaySettings, hostname: str, port: int, host: str = "", log: _Log | None = None,
                ht: HostTls | None = None) -> SmtpClient:
    ht = ht or settings.tls_for(host)
    require = ht.require if ht else settings.require_tls
    client = await SmtpClient.connect(hostname, port, source_address=settings.source_address,
                                      connect_timeout=settings.connect_timeout, timeout=settings.command_timeout)
    try:
        await client.ehlo(settings.helo)
    except BaseException:
        client.close()
        raise
    if not client.supports("starttls"):
        if not require:
            if ht and ht.testing and log is not None:
                log.notes.append(f"{host}: STARTTLS not offered (testing policy)")
            return client  # opportunistic: no STARTTLS offered and no policy requires it
        client.close()
        raise (_TlsPolicyTrouble if ht else _HostTrouble)("STARTTLS not offered (required)")
    # The name checked: an MX host under MTA-STS/DANE carries its own context and name; otherwise
    # the connector's TlsDomain (settings.tls_name), else the host connected to.
    own = ht is not None and ht.context is not None
    name = ht.name if own else (settings.tls_name or (ht.name if ht else hostname))
    wildcard = name.startswith("*.")
    try:
        await client.starttls(ht.context if own else settings.tls_context, name[2:] if wildcard else name)
    except (SmtpError, ssl.SSLError, OSError) as exc:
        client.close()
        if ht and ht.testing and log is not None:  # RFC 8461 §5: testing — report, deliver unchecked
            log.notes.append(f"{host}: certificate {exc.__class__.__name__}: {exc} (testing policy)"[:300])
            return await _open(settings, hostname, port, host, log,
                               HostTls(ht.name, False, _unverified(), policy=ht.policy))
        if ht and ht.require:
            raise _TlsPolicyTrouble(f"TLS certificate check failed: {exc.__class__.__name__}: {exc}"[:300]) from None
        raise
    if wildcard and not own and not _names_match(client, name):
        client.close()
        raise _HostTrouble(f"TLS certificate names no host in {name} (TlsDomain)")
    if ht and ht.tlsa:
        from mxgate.queue.dane import verify_chain

        if not verify_chain(ht.tlsa, _peer_chain(client), ht.name):
            client.close()
            raise _TlsPolicyTrouble("TLS certificate matches no TLSA record (DANE, RFC 7672 §3)")
    try:
        await client.ehlo(settings.helo)
    except BaseException:
        client.close()
        raise
    return client


def needs_smtputf8(sender: str, recipients) -> bool:
    """RFC 6531 §3.4: a non-ASCII address in the envelope needs the SMTPUTF8 extension."""
    return not sender.isascii() or not all(r.isascii() for r in recipients)


def _reply_text(reply) -> str:
    return " ".join(reply.message.split())[:400]


async def _session(settings: RelaySettings, host: str, sender: str, recipients, body: Outgoing,
                   log: _Log | None = None) -> tuple[RcptOutcome, ...]:
    """One transaction for `recipients` on `host` (BDAT or DATA, as the server offers); per-recipient outcomes.
    Raises _HostTrouble when this host cannot take the message now (the next host is tried)."""
    key = SessionPool.key(settings, host)
    utf8 = needs_smtputf8(sender, recipients)
    while True:
        client = POOL.take(key)
        pooled = client is not None
        if client is None:
            try:
                client = await _open(settings, *parse_hostport(host), host, log)
            except _HostTrouble:
                raise
            except ReplyError as exc:
                if exc.code >= 500:  # refused for good (greeting, EHLO, STARTTLS): every recipient fails
                    return _all(recipients, "failed", _status_of(exc.code, exc.message),
                                f"smtp; {exc.code} {_reply_text(exc)}", host)
                raise _HostTrouble(f"{exc.code} {exc.message}") from None
            except (SmtpError, OSError) as exc:
                raise _HostTrouble(f"{exc.__class__.__name__}: {exc}") from None
        if log is not None and client.ssl_object is not None:
            log.tls_hosts.add(host)
        if utf8 and not client.supports("smtputf8"):  # RFC 6531 §3.2: never downgrade an address; the sender gets a DSN
            if not POOL.give(key, client, settings.idle_sessions):  # the session itself is fine for other mail
                await client.quit()
            return _all(recipients, "failed", "5.6.7",
                        "smtp; 553 5.6.7 the receiving server does not support SMTPUTF8 (RFC 6531)", host)
        t = await client.transaction(sender, "SMTPUTF8" if utf8 else "", list(recipients), body,
                                     "utf-8" if utf8 else "ascii")
        if t.error is not None and not t.body_sent:
            client.close()
            if pooled:  # an idle session the server dropped: nothing was delivered, open a fresh one
                continue
            raise _HostTrouble(f"{t.error.__class__.__name__}: {t.error}")
        if t.mail.code // 100 != 2:
            await client.quit()
            if pooled and t.mail.code < 500:  # the server tired of the idle session: open a fresh one
                continue
            if t.mail.code >= 500:  # MAIL refused for good: every recipient fails
                return _all(recipients, "failed", _status_of(t.mail.code, t.mail.message),
                            f"smtp; {t.mail.code} {_reply_text(t.mail)}", host)
            raise _HostTrouble(f"{t.mail.code} {t.mail.message}")
        return await _outcomes(settings, key, client, t, recipients, host)


async def _outcomes(settings: RelaySettings, key: tuple, client: SmtpClient, t: Transaction, recipients,
                    host: str) -> tuple[RcptOutcome, ...]:
    """Each recipient's outcome from its RCPT reply, and for the accepted ones the message's; the
    session goes back to the pool when it is ready for the next transaction."""
    outcomes = [_outcome(r, reply.code, reply.message, host) for r, reply in zip(recipients, t.rcpts)]
    accepted = [i for i, o in enumerate(outcomes) if o.state == "delivered"]
    reusable = True
    if accepted:
        if t.error is not None:  # lost after the body was written: it may have arrived; retry (duplicates beat loss)
            done = RcptOutcome("", "deferred", "4.4.2", f"smtp; connection lost during DATA: {t.error}", host)
            reusable = False
        elif t.done is None:  # DATA refused: the transaction stays open until RSET (RFC 5321 §4.1.1.5)
            done = _outcome("", t.data.code, t.data.message, host)
            reusable = await client.rset()
        else:  # the reply to the end of DATA, or to BDAT LAST: the same meaning (RFC 3030 §2)
            done = _outcome("", t.done.code, t.done.message, host)
            if t.chunked and t.done.code // 100 != 2:  # a refused chunk leaves the transaction to RSET (RFC 3030 §2)
                reusable = await client.rset()
        for i in accepted:
            outcomes[i] = RcptOutcome(recipients[i], done.state, done.status, done.diagnostic, host)
    else:  # RFC 5321 §4.1.1.5: end the transaction before the session is reused
        reusable = t.error is None and await client.rset()
    if not (reusable and POOL.give(key, client, settings.idle_sessions)):
        await client.quit()
    return tuple(outcomes)


async def relay(settings: RelaySettings, sender: str, recipients: list[str], data: bytes,
                health: HostHealth | None = None) -> RelayResult:
    """Try the hosts in order until one answers for the recipients; never raises for network trouble."""
    if has_bare_cr_or_lf(data):
        return RelayResult(_all(recipients, "failed", "5.6.0", "smtp; 550 5.6.0 bare CR or LF in message (not relayed)"))
    if has_control(sender):
        return RelayResult(_all(recipients, "failed", "5.1.7", "smtp; 553 5.1.7 control character in the sender (not relayed)"))
    refused = {r: RcptOutcome(r, "failed", "5.1.3", "smtp; 553 5.1.3 control character in the address (not relayed)")
               for r in recipients if has_control(r)}
    if refused:
        rest = [r for r in recipients if r not in refused]
        result = await relay(settings, sender, rest, data, health) if rest else RelayResult(())
        got = {o.address: o for o in result.outcomes} | refused
        return dataclasses.replace(result, outcomes=tuple(got[r] for r in recipients))
    body = Outgoing(data)  # stuffed only if a host wants DATA (smtpclient.Outgoing)
    health = health or HostHealth()
    errors: list[str] = []
    log = _Log()
    policy_failures = 0
    now = time.monotonic()
    candidates = [h for h in settings.hosts if health.usable(h, now)]
    for host in candidates:
        started = time.monotonic()
        try:
            outcomes = await _split_transactions(settings, host, sender, recipients, body, log)
        except _HostTrouble as exc:
            errors.append(f"{host}: {exc}")
            policy_failures += isinstance(exc, _TlsPolicyTrouble)
            health.failed(host, time.monotonic(), started)
            continue
        health.succeeded(host)
        return RelayResult(outcomes, host, tuple(errors), host in log.tls_hosts, tuple(log.notes))
    if not candidates:
        errors.append("every downstream host is backing off after recent failures")
    reason = "; ".join(errors)[:400] or "no downstream configured"
    # RFC 3463 4.7.5: every host failed the TLS its domain's policy requires (RFC 8461 §5, RFC 7672 §2.2)
    status = "4.7.5" if errors and policy_failures == len(errors) else "4.4.1"
    return RelayResult(_all(recipients, "deferred", status, f"smtp; could not deliver: {reason}"), "", tuple(errors),
                       notes=tuple(log.notes))


def needs_new_transaction(outcome: RcptOutcome) -> bool:
    """RFC 5321 §4.5.3.1.10 / RFC 3463 4.5.3: "too many recipients" for *this* transaction."""
    return outcome.state == "deferred" and outcome.status == "4.5.3"


async def _split_transactions(settings: RelaySettings, host: str, sender: str, recipients,
                              body: Outgoing, log: _Log | None = None) -> tuple[RcptOutcome, ...]:
    """One transaction, then a new one at once for the recipients the server asked to send
    separately (452 4.5.3), for as long as each transaction delivers someone."""
    outcomes: dict[str, RcptOutcome] = {}
    todo = list(recipients)
    while todo:
        for o in await _session(settings, host, sender, todo, body, log):
            outcomes[o.address] = o
        rest = [r for r in todo if needs_new_transaction(outcomes[r])]
        if len(rest) == len(todo):  # nobody got through: a real limit, left to the retry schedule
            break
        todo = rest
    return tuple(outcomes[r] for r in recipients)


async def callahead(settings: RelaySettings, address: str) -> tuple[int, str]:
    """Ask the first reachable downstream whether it takes `address` (MAIL FROM:<>, RCPT, RSET).

    Returns the RCPT reply (code, text); (451, why) when no host could be asked. The null
    sender is what RFC 5321 §3.3 bounces use, so a callahead never looks like a real message.
    """
    errors = []
    if has_control(address):
        return 501, "5.1.3 control character in the address"
    for host in settings.hosts:
        hostname, port = parse_hostport(host)
        client = None
        try:
            client = await SmtpClient.connect(hostname, port, source_address=settings.source_address,
                                              connect_timeout=settings.connect_timeout, timeout=settings.connect_timeout)
            await client.ehlo(settings.helo)
            if client.supports("starttls"):
                await client.starttls(settings.tls_context, settings.tls_name or hostname)
                await client.ehlo(settings.helo)
            reply = await client.rcpt_probe("", address)
            return reply.code, reply.message
        except (SmtpError, OSError) as exc:
            errors.append(f"{host}: {exc.__class__.__name__}")
        finally:
            if client is not None:
                await client.quit()
    return 451, "; ".join(errors) or "no downstream configured"
