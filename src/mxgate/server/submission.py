"""Authenticated submission (port 587 style): SMTP AUTH over TLS only, then internal mail.

Owns: the submission role's hooks — AUTH PLAIN (RFC 4616) and LOGIN offered and accepted only
after STARTTLS (RFC 4954 §4, RFC 8314), credentials checked off the event loop (argon2 is slow
on purpose), attempts counted per client address or IPv6 /64 before each check starts (`535
5.7.8`, then `421 4.7.0` with a doubling back-off, refused at connect and at every AUTH of every
open session while it lasts), send-as enforcement, and handing
the accepted message to the internal delivery service (delivery/internal.py). Submitted mail is
internal whatever its header `From:` says: it never meets the anonymous listener's connector
checks (mail-flow.md §5). Also `start_submission(node)`.
Must not know: how credentials are stored (auth/credentials.py), routing, reply text.

Secrets: AUTH lines are never logged or traced; only the outcome and the client address are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import time
from typing import Any

from mxgate import metrics
from mxgate.auth.credentials import Identity, decide_send_as, verify_credentials
from mxgate.auth.headers import parse_fields, split_headers
from mxgate.delivery.internal import Provenance
from mxgate.policy.validate import accepted_domain_for
from mxgate.server.listener import Listener, Role
from mxgate.smtp import message as msg
from mxgate.smtp.limits import MAX_RECEIVED_HEADERS
from mxgate.smtp.replies import Reply, reply_text
from mxgate.trace.records import message_records, new_trace_id, refusal_records
from mxgate.verdict import Action, Verdict, accept, reject, tempfail
from mxgate.wording import count

log = logging.getLogger("mxgate.submission")

MAX_AUTH_FAILURES = 5  # per client address within FAILURE_WINDOW; then 421 (adversarial.md §7)
FAILURE_WINDOW = 600.0
FIRST_BACKOFF = 60.0  # seconds a throttled address is refused; doubles each time, up to MAX_BACKOFF
MAX_BACKOFF = 3600.0
MAX_TRACKED = 100_000  # addresses remembered; the oldest are forgotten first
MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USER, LOGIN_PASS = "VXNlcm5hbWU6", "UGFzc3dvcmQ6"  # base64 "Username:", "Password:" (draft-murchison-sasl-login)


def throttle_key(ip: str) -> str:
    """What failed attempts are counted against: the IPv4 address, or the IPv6 /64 (one host
    usually owns a whole /64, so counting single addresses would let it rotate through 2^64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class AuthThrottle:
    """Authentication attempts per client address (/64 for IPv6), and the back-off after too many.

    An attempt is counted when its password check *starts* and refunded only if it succeeds, so
    twenty sessions opened beforehand and checking in parallel share one budget. Every AUTH
    command asks `admit` (not only the connection), and the table is pruned. Pure state; the
    caller passes the clock (wall-clock seconds when `shared`).

    With `shared` (store/cluster.ClusterState) the attempts are counted across every node on the
    store, so spreading guesses over N nodes buys nothing: an address at the limit is refused by
    all of them (within one sync interval). The back-off that follows is this node's own."""

    PRUNE_EVERY = 1024  # admissions between sweeps of stale entries
    SCOPE = "smtp-auth"

    def __init__(self, max_tracked: int = MAX_TRACKED, shared=None):
        self.shared = shared
        self.max_tracked = max_tracked
        self._attempts: dict[str, list[float]] = {}
        self._blocked: dict[str, tuple[float, float]] = {}  # key → (until, last back-off)
        self._since_prune = 0

    def blocked(self, key: str, now: float) -> bool:
        if self.shared is not None and self.shared.estimate(self.SCOPE, key, FAILURE_WINDOW, now, strict=True) >= MAX_AUTH_FAILURES:
            return True
        return self._blocked.get(key, (0.0, 0.0))[0] > now

    def _count(self, key: str, now: float) -> float:
        if self.shared is not None:
            return self.shared.estimate(self.SCOPE, key, FAILURE_WINDOW, now, strict=True)
        return len(self._recent(key, now))

    def _recent(self, key: str, now: float) -> list[float]:
        recent = [t for t in self._attempts.get(key, ()) if now - t < FAILURE_WINDOW]
        if recent:
            self._attempts[key] = recent
        else:
            self._attempts.pop(key, None)
        return recent

    def _block(self, key: str, now: float) -> None:
        last = self._blocked.get(key, (0.0, 0.0))[1]
        delay = min(last * 2 if last else FIRST_BACKOFF, MAX_BACKOFF)
        self._blocked[key] = (now + delay, delay)
        self._attempts.pop(key, None)

    def admit(self, key: str, now: float) -> bool:
        """Count one password check about to start; False (and nothing counted) when throttled."""
        self._since_prune += 1
        if self._since_prune >= self.PRUNE_EVERY or len(self._attempts) + len(self._blocked) >= self.max_tracked:
            self.prune(now)
        if self.blocked(key, now) or self._count(key, now) >= MAX_AUTH_FAILURES:
            return False
        if self.shared is not None:
            self.shared.add(self.SCOPE, key, FAILURE_WINDOW, now)
            self.shared.kick()  # the other nodes should see an attempt at once, not in 0.1 s
        self._attempts.setdefault(key, []).append(now)
        return True

    def succeeded(self, key: str, started: float) -> None:
        """The check started at `started` passed: it does not count against the address."""
        attempts = self._attempts.get(key)
        if attempts and started in attempts:
            attempts.remove(started)
            if self.shared is not None:
                self.shared.add(self.SCOPE, key, FAILURE_WINDOW, started, -1)

    def failed(self, key: str, now: float) -> bool:
        """The check failed (it stays counted); True when the address is now throttled."""
        if self._count(key, now) < MAX_AUTH_FAILURES:
            return False
        self._block(key, now)
        return True

    def prune(self, now: float) -> None:
        """Forget addresses with no attempt in the window, and back-offs long over (a back-off is
        remembered for MAX_BACKOFF after it ends so a returning guesser gets the doubled one)."""
        self._since_prune = 0
        for key in list(self._attempts):
            self._recent(key, now)
        for key, (until, _delay) in list(self._blocked.items()):
            if until + MAX_BACKOFF < now:
                del self._blocked[key]
        excess = len(self._attempts) + len(self._blocked) - (self.max_tracked - 1)  # room for the next one
        for key in list(self._attempts)[: max(0, excess)]:  # oldest first (insertion order)
            del self._attempts[key]

    def __len__(self) -> int:
        return len(self._attempts) + len(self._blocked)


def decode_plain(payload: str) -> tuple[str, str] | None:
    """RFC 4616 §2: [authzid] NUL authcid NUL passwd; an authzid other than authcid is refused."""
    try:
        parts = base64.b64decode(payload, validate=True).decode("utf-8").split("\x00")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if len(parts) != 3 or not parts[1] or (parts[0] and parts[0] != parts[1]):
        return None
    return parts[1], parts[2]


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def header_from_addresses(data: bytes) -> list[str]:
    from email.utils import getaddresses

    head, _ = split_headers(data)
    values = [f.value.decode("utf-8", "replace") for f in parse_fields(head) if f.name == b"from"]
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


class SubmissionRole(Role):
    name = "submission"
    # RFC 4954 §5: a server offering AUTH accepts AUTH= on MAIL (believed no further than AUTH=<>).
    mail_parameters = Role.mail_parameters + ("AUTH",)

    def __init__(self, node, internal):
        self.node = node
        self.settings = node.settings.submission
        self.hostname = self.settings.hostname
        self.watcher = node.watcher
        self.trace = node.trace
        self.internal = internal
        self.throttle = AuthThrottle(shared=getattr(node, "cluster", None))  # counted across the nodes (store/cluster.py)
        self.stats = {"accepted": 0, "refused": 0, "auth_ok": 0, "auth_failed": 0}

    def on_connect(self, s) -> Verdict:
        metrics.session_opened(self.name)
        if self.throttle.blocked(throttle_key(str(s.peer_ip)), time.time()):
            return tempfail("auth-throttled", "back-off after failed authentications")
        return accept("connect-ok")

    def ehlo_keywords(self, s) -> list[str]:
        words = super().ehlo_keywords(s)
        if s.tls is not None and s.auth_user is None:  # RFC 4954 §4: never offer AUTH in clear text
            words.append("AUTH " + " ".join(MECHANISMS))
        return words

    # --- AUTH -------------------------------------------------------------------------------
    def auth_start(self, s, arg: str) -> None:
        mech, _, initial = arg.partition(" ")
        mech, initial = mech.upper(), initial.strip()
        if self.throttle.blocked(throttle_key(str(s.peer_ip)), time.time()):
            self._hang_up(s)  # a session opened before the back-off began gets no more tries
        elif s.tls is None:
            s.reply("auth-needs-tls")
        elif s.auth_user is not None:
            s.reply("auth-already")
        elif s.txn is not None or s.helo is None:
            s.reply("bad-sequence")
        elif mech not in MECHANISMS:
            s.reply("auth-mechanism")
        elif mech == "PLAIN" and initial and initial != "=":
            self._check_plain(s, initial)
        elif mech == "PLAIN":
            s.role_state["sasl"] = ("PLAIN", None)
            s.set_mode("auth")
            s.reply(Reply(334, "", ""))
        else:  # LOGIN, optionally with the user name as initial response
            user = _b64(initial) if initial else None
            if initial and user is None:
                s.reply("auth-cancelled")
                return
            s.role_state["sasl"] = ("LOGIN", user)
            s.set_mode("auth")
            s.reply(Reply(334, "", LOGIN_PASS if user is not None else LOGIN_USER))

    def auth_continue(self, s, raw: bytes) -> None:
        mech, user = s.role_state.pop("sasl", (None, None))
        text = raw.decode("ascii", "replace").strip()
        s.set_mode("command")
        if text == "*" or mech is None:  # RFC 4954 §4: the client cancelled
            s.reply("auth-cancelled")
        elif mech == "PLAIN":
            self._check_plain(s, text)
        elif user is None:
            user = _b64(text)
            if user is None:
                s.reply("auth-cancelled")
                return
            s.role_state["sasl"] = ("LOGIN", user)
            s.set_mode("auth")
            s.reply(Reply(334, "", LOGIN_PASS))
        else:
            password = _b64(text)
            if password is None:
                s.reply("auth-cancelled")
                return
            self._begin_verify(s, user, password)

    def _check_plain(self, s, payload: str) -> None:
        creds = decode_plain(payload)
        if creds is None:
            s.reply("auth-cancelled")
            return
        self._begin_verify(s, *creds)

    def _auth_answered(self, s, reason: str | Reply, close: bool) -> None:
        s.reply(reason)
        if close:
            s.close()

    def _hang_up(self, s) -> None:
        verdict = tempfail("auth-throttled")
        self.on_refused(s, "auth", verdict)
        metrics.auth_failed(self.name, "throttled")
        s.reply("auth-throttled")
        s.close()

    def _begin_verify(self, s, username: str, secret: str) -> None:
        # Counted before the slow check starts: parallel sessions cannot outrun the limit.
        key, started = throttle_key(str(s.peer_ip)), time.time()
        if not self.throttle.admit(key, started):
            self._hang_up(s)
            return
        # The check runs off the loop; the session waits, later commands queued in order.
        s.wait(self._verify(s, username, secret, key, started), lambda answer: self._auth_answered(s, *answer),
               failed=("internal-error", False))

    async def _verify(self, s, username: str, secret: str, key: str, started: float) -> tuple[str | Reply, bool]:
        identity = await asyncio.to_thread(verify_credentials, self.node.engine, username, secret)
        if identity is not None:
            self.throttle.succeeded(key, started)
            s.auth_user = identity.username
            s.role_state["identity"] = identity
            self.stats["auth_ok"] += 1
            log.info("submission auth ok from %s as %s (%s)", s.peer_ip, identity.username, identity.kind)
            return "auth-ok", False
        self.stats["auth_failed"] += 1
        throttled = self.throttle.failed(key, time.time())
        verdict = tempfail("auth-throttled") if throttled else reject("auth-failed")
        metrics.auth_failed(self.name, "throttled" if throttled else "bad-credentials")
        self.on_refused(s, "auth", verdict)
        return verdict.reason, throttled

    # --- MAIL, RCPT, DATA --------------------------------------------------------------------
    def on_mail(self, s, sender, params) -> Verdict:
        identity: Identity | None = s.role_state.get("identity")
        if identity is None:
            return reject("auth-required")
        s.role_state["policy"] = self.watcher.current
        return decide_send_as(s.role_state["policy"].policy, identity, str(sender))

    def on_rcpt(self, s, rcpt):
        if rcpt.literal:
            return reject("address-literal", str(rcpt)), None
        key = str(rcpt).lower()
        domain = key.rpartition("@")[2]
        if self.internal.is_ours(domain) and not self.internal.is_local(key):
            if accepted_domain_for(self.internal.compiled.policy, domain).type != "internal_relay":
                return reject("unknown-recipient", key), None
        return accept("recipient-ok"), "local" if self.internal.is_local(key) else "external"

    async def on_message(self, s, txn, body) -> Verdict:
        data = body.getvalue()
        headers = msg.header_block(data)
        if msg.count_received(headers) > MAX_RECEIVED_HEADERS:
            return reject("hop-count-exceeded")
        identity: Identity = s.role_state["identity"]
        policy = s.role_state["policy"].policy
        # Header From in one of our domains must be the user's own; other domains (notices an
        # application sends for an external organiser) are internal mail all the same (§5).
        for addr in header_from_addresses(data):
            if self.internal.is_ours(addr.rpartition("@")[2]) and decide_send_as(policy, identity, addr).refused:
                return reject("send-as-denied", f"header From {addr}")
        trace_id = new_trace_id()
        received = s.received_header(by=self.hostname, trace_id=trace_id, recipients=txn.recipients)
        final = received + data
        rcpts = [str(r.address).lower() for r in txn.recipients]
        outcome = await self.internal.deliver(str(txn.sender), rcpts, final, trace_id=trace_id, origin=self.name,
                                              compiled=s.role_state["policy"], provenance=Provenance(str(s.peer_ip)))
        if outcome.failed:
            return tempfail("storage-failed", f"{count(len(outcome.failed), 'copy')} not stored")
        self._trace(s, txn, identity, trace_id, final)
        self.stats["accepted"] += 1
        metrics.accepted(self.name)
        return accept("queued")

    # --- trace --------------------------------------------------------------------------------
    def _trace(self, s, txn, identity: Identity, trace_id: str, final: bytes) -> None:
        self.trace.record_all(message_records(
            trace_id, sender=str(txn.sender), data=final,
            rows=[(str(r.address), "Delivered" if r.decision == "local" else "Pending",
                   [("Receive", f"submission from {s.peer_ip} as {identity.username}"),
                    ("Deliver", "maildir") if r.decision == "local" else ("Send", "queued for outbound")])
                  for r in txn.recipients],
            detail={"session": s.id, "user": identity.username, "kind": identity.kind},
            from_ip=str(s.peer_ip), policy_version=s.role_state["policy"].version, role=self.name,
            direction="internal"))

    def on_refused(self, s, stage: str, verdict: Verdict, **facts: Any) -> None:
        self.stats["refused"] += 1
        temporary = verdict.action is Action.TEMPFAIL
        metrics.refused(verdict.reason, role=self.name, stage=stage, deferred=temporary)
        log.info("%s at %s: %s", "deferred" if temporary else "rejected", stage, verdict.reason,
                 extra={"session": s.id, "peer": str(s.peer_ip), "reason": verdict.reason, "stage": stage})
        sender, rcpts = self.refused_envelope(s, facts)
        self.trace.record_refusals(s.id, refusal_records(
            verdict, stage=stage, reply=reply_text(verdict), sender=sender, recipients=rcpts,
            detail={"session": s.id, "user": s.auth_user}, from_ip=str(s.peer_ip), role=self.name,
            direction="internal"))


async def start_submission(node) -> None:
    """Node hook (`[roles] submission = true`)."""
    from mxgate.delivery.internal import start_internal

    internal = await start_internal(node)
    role = SubmissionRole(node, internal)
    sec = node.settings.submission
    listener = Listener(role, sec.limits, ssl_context=node.tls_provider(sec), spill_dir=str(node.home.spool),
                        trusted_proxies=sec.trusted_proxies)
    await listener.start(sec.listen)
    node.roles["submission"] = role
    node.listeners["submission"] = listener
