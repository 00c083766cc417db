"""Outbound mail: which connector a recipient leaves through, and the durable queues that send it.

Owns: the route of each queued recipient — a local mailbox (DSNs and notices for internal
senders take the internal route), the outbound connector chosen by `policy.validate.outbound_for`
(its `smart_hosts` in order, or the recipient domain's MX hosts with `use_mx_record`, with the
connector's TLS settings), or, on the gateway, the downstream mailbox servers for our own
domains and the Internet by MX lookup for everything else — and `RoutingRunner`, the gateway's
queue Runner (queue/runner.py: retries, expiry, DSNs) with that per-recipient route instead of
one fixed host list. Also the two services that run it: `start_mailbox_outbound` (the mailbox
node's own outbound queue) and `start_gateway_outbound` (the gateway accepting outbound mail
from the organisation's mailbox servers, `[gateway] outbound_from`).
Must not know: SMTP client details (queue/relay.py), the spool format, DSN contents, reply text.

TLS: to a smart host, `encryption_only` encrypts without checking the certificate,
`certificate_validation` checks the chain against the node's CA and the system store,
`domain_validation` also checks the name. To MX hosts on the Internet, STARTTLS is required
is used whenever offered but the certificate is not checked, and a host that offers no STARTTLS
gets the message in clear text: opportunistic TLS (RFC 7435), Exchange Online's default. A
domain listed in `[outbound] tls_required_domains` is only delivered over STARTTLS (else deferred,
4.4.1, and retried).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import logging
import secrets
import ssl
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Awaitable, Callable, Mapping, Sequence

from mxgate.auth.dns import node_resolver
from mxgate.durable import private_dir
from mxgate.names import format_hostport, normalize_ip, parse_hostport
from mxgate.policy.ipset import PrefixTable, parse_network
from mxgate.policy.model import Policy
from mxgate.policy.validate import accepted_domain_for, outbound_for
from mxgate.probe.mx import lookup_mx
from mxgate.queue.relay import RcptOutcome, RelayResult, RelaySettings, client_context, relay
from mxgate.queue.runner import Runner
from mxgate.queue.scheduler import HostHealth, RetryPolicy
from mxgate.queue.spool import CorruptEntryError, DiskSpool, PartialEntryError, QueueEntry, Spool, StaleEntryError
from mxgate.trace.records import message_records
from mxgate.verdict import accept
from mxgate.wording import count

log = logging.getLogger("mxgate.outbound")

SMTP_PORT = 25  # RFC 5321 §4.5.4.2 / IANA: MX hosts listen on 25


class RouteKind(StrEnum):
    LOCAL = "local"  # a mailbox of this organisation: the internal route
    RELAY = "relay"  # known hosts (smart hosts, the downstream, resolved MX hosts)
    MX = "mx"  # the recipient domain's MX hosts, still to be looked up
    FAIL = "fail"  # no route: `status` says whether for good (5.x.x) or for now (4.x.x)


@dataclass(frozen=True)
class Route:
    """Where a group of recipients goes: "local", "relay" (hosts) or "fail" (status, why)."""

    kind: RouteKind
    key: str  # recipients with the same key are sent in one session
    hosts: tuple[str, ...] = ()
    tls: str = "encryption_only"
    status: str = ""
    why: str = ""
    tls_name: str = ""  # the certificate name to check; "" = each host's own name
    require_tls: bool = True  # False: opportunistic (MX delivery without a policy requiring TLS)


def _hostport(host: str) -> str:
    """"gw.example" → "gw.example:25"; "[::1]:2526" and "1.2.3.4:2526" keep their port."""
    return format_hostport(*parse_hostport(host, SMTP_PORT))


def connector_route(policy: Policy, domain: str) -> Route:
    """Pure: the outbound connector for a recipient domain; no connector means direct MX delivery."""
    conn = outbound_for(policy, domain)
    if conn is None or conn.use_mx_record or not conn.smart_hosts:
        name = conn.name if conn else ""
        tls = conn.tls_settings if conn else "encryption_only"
        # no connector: opportunistic TLS (RFC 7435); a connector's TLS setting requires STARTTLS
        return Route(RouteKind.MX, f"mx:{domain}", tls=tls, why=f"connector {name!r} by MX" if name else "no connector: MX",
                     require_tls=conn is not None)
    return Route(RouteKind.RELAY, f"connector:{conn.name.lower()}", tuple(_hostport(h) for h in conn.smart_hosts),
                 conn.tls_settings, why=f"connector {conn.name!r}")


def tls_required(domain: str, required: Sequence[str]) -> bool:
    """Pure: does a per-domain policy require TLS to this domain ("example.com" or "*.example.com")?"""
    d = domain.lower().rstrip(".")
    for pattern in required:
        p = pattern.lower().rstrip(".")
        if d == p or (p.startswith("*.") and d.endswith(p[1:])):
            return True
    return False


async def resolve_mx(route: Route, domain: str, resolver, required: Sequence[str] = ()) -> Route:
    """An "mx" route with the domain's exchanges as hosts (RFC 5321 §5.1), or a failure. Without a
    connector, TLS is opportunistic unless `required` (the per-domain policy) names the domain."""
    if tls_required(domain, required):
        route = replace(route, require_tls=True)
    result = await lookup_mx(domain, resolver)
    if result.null_mx:  # RFC 7505 §4.2: the domain takes no mail
        return replace(route, kind=RouteKind.FAIL, status="5.1.10", why=f"{domain} publishes a null MX (RFC 7505)")
    if result.error and "NXDOMAIN" in result.error:
        return replace(route, kind=RouteKind.FAIL, status="5.1.2", why=f"{domain}: {result.error}")
    if result.error:
        return replace(route, kind=RouteKind.FAIL, status="4.4.3", why=f"{domain}: {result.error}")
    hosts = tuple(format_hostport(a, SMTP_PORT) for h in result.hosts for a in h.addresses)
    if not hosts:
        return replace(route, kind=RouteKind.FAIL, status="4.4.3", why=f"{domain}: MX hosts have no addresses")
    return replace(route, kind=RouteKind.RELAY, hosts=hosts)


def tls_context_for(mode: str, ca_file: str | None) -> ssl.SSLContext:
    if mode == "encryption_only":
        return client_context(None, verify=False)
    ctx = client_context(ca_file, check_hostname=(mode == "domain_validation"))
    if ca_file:
        ctx.load_default_certs()  # the organisation's CA and public CAs alike
    return ctx


class RoutingRunner(Runner):
    """queue/runner.py's Runner, sending each recipient by its own route (`route(address)`)."""

    def __init__(self, spool: Spool, route: Callable[[str], Awaitable[Route]], base: RelaySettings,
                 contexts: Callable[[str], ssl.SSLContext], retry: RetryPolicy, *,
                 local: Callable[[QueueEntry, list[str], bytes], Awaitable[tuple[RcptOutcome, ...]]] | None = None,
                 name: str = "outbound", **kwargs):
        super().__init__(spool, lambda: base, retry, **kwargs)
        self.route = route
        self.base = base
        self.contexts = contexts
        self.local = local
        self.name = name
        self.tls_reports = None  # queue/tlsrpt.TlsReports: TLS outcomes of MX sessions (RFC 8460)

    def _report_tls(self, r: Route, rcpts: list[str], result: RelayResult) -> None:
        """One TLS-RPT line per MX session attempt: each host's TLS failure, and the delivery when
        STARTTLS was required (so it was used). No MTA-STS/TLSA policy is applied to delivery yet:
        the policy type is "no-policy-found" (RFC 8460 §4.4)."""
        if self.tls_reports is None or not r.key.startswith("mx:"):
            return
        from mxgate.queue.tlsrpt import TlsResult, classify

        domain = r.key[3:]
        for err in result.errors:
            kind = classify(err)
            if kind:
                host = err.split(": ", 1)[0]
                self.tls_reports.record(TlsResult(domain, "no-policy-found", False, kind, receiving_ip=host.rsplit(":", 1)[0],
                                                  sending_ip=self.base.source_address))
        if result.host and r.require_tls and any(o.state == "delivered" for o in result.outcomes):
            self.tls_reports.record(TlsResult(domain, "no-policy-found", True, receiving_ip=result.host.rsplit(":", 1)[0],
                                              sending_ip=self.base.source_address))

    def describe(self) -> str:
        return f"{self.name} queue: {count(self.spool.count(), 'entry')}"

    async def _attempt(self, entry: QueueEntry) -> None:
        # Same claim → read → settle protocol as Runner._attempt; only the delivery differs.
        try:
            entry = await self.spool.claim(entry)
        except StaleEntryError:
            return
        try:
            data = await self.spool.open_message(entry)
        except (CorruptEntryError, PartialEntryError, OSError) as exc:
            log.error("queue entry %s unreadable, moved to corrupt/: %s", entry.queue_id, exc)
            await self.spool.mark_corrupt(entry)
            return
        await self._settle(entry, await self.deliver(entry, data), data)

    async def deliver(self, entry: QueueEntry, data: bytes) -> RelayResult:
        groups: dict[str, tuple[Route, list[str]]] = {}
        for rcpt in entry.pending:
            r = await self.route(rcpt)
            groups.setdefault(r.key, (r, []))[1].append(rcpt)
        outcomes: dict[str, RcptOutcome] = {}
        hosts, errors = [], []
        for r, rcpts in groups.values():
            if r.kind == RouteKind.LOCAL and self.local is not None:
                for o in await self.local(entry, rcpts, data):
                    outcomes[o.address] = o
                continue
            if r.kind == RouteKind.FAIL:
                state = "failed" if r.status.startswith("5") else "deferred"
                for a in rcpts:
                    outcomes[a] = RcptOutcome(a, state, r.status, f"smtp; {r.why}")
                continue
            settings = replace(self.base, hosts=r.hosts, tls_context=self.contexts(r.tls), tls_name=r.tls_name,
                               require_tls=r.require_tls)
            result = await relay(settings, entry.sender, rcpts, data, self.health)
            try:
                self._report_tls(r, rcpts, result)
            except OSError as exc:  # reporting never holds up delivery
                log.warning("TLS-RPT record failed: %s", exc)
            hosts.append(result.host)
            errors += result.errors
            for o in result.outcomes:
                outcomes[o.address] = o
        return RelayResult(tuple(outcomes[a] for a in entry.pending), next((h for h in hosts if h), ""), tuple(errors))


# --- services ------------------------------------------------------------------------------

RUNNER_LOCK = "gateway.lock"  # the name the queue CLI checks (same protocol as the gateway's spool)


def lock_spool(root) -> int:
    """One runner per spool directory (two would deliver the same entries): refuse, never wait."""
    from mxgate.errors import ConfigError

    fd = os.open(root / RUNNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{root}: another running mxgate process owns this queue (same --home)") from None
    return fd

@dataclass
class OutboundQueue:
    """A spool and its RoutingRunner on one node (in node.extras)."""

    spool: Spool
    runner: RoutingRunner
    lock_fd: int = -1  # held while this queue runs: `mxgate queue --spool ...` then asks, not edits

    async def enqueue(self, sender: str, recipients: Sequence[str], data: bytes, meta: dict) -> QueueEntry:
        """Durable before it returns: the caller may say 250 (RFC 5321 §6.1)."""
        entry = await self.spool.enqueue(sender, list(recipients), data, meta)
        self.runner.kick()
        return entry

    async def stop(self) -> None:
        await self.runner.stop()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = -1

    def describe(self) -> str:
        return self.runner.describe()


def _resolver(node):
    return node_resolver(node).aio  # the node's cache: MX answers shared with the checks


async def _open_queue(node, directory: str, route, local=None, name: str = "outbound",
                      downstream_tls: Callable[[], ssl.SSLContext] | None = None) -> OutboundQueue:
    g = node.settings.gateway  # the node's queue timings (retries, timeouts) live in [gateway]
    worker = node.settings.node.worker
    root = node.home.spool / (f"{directory}-w{worker}" if worker else directory)  # one spool per process
    private_dir(root)
    lock_fd = lock_spool(root)
    spool = await asyncio.to_thread(DiskSpool.open, root, node.committer)
    ca = str(node.certs.ca_cert)
    contexts = {m: tls_context_for(m, ca) for m in ("encryption_only", "certificate_validation", "domain_validation")}
    base = RelaySettings((), contexts["encryption_only"], g.source_address if directory == "gateway-outbound" else "",
                         node.settings.mailbox.hostname if directory == "outbound" else g.hostname,
                         g.relay_connect_timeout, g.relay_timeout)

    def on_event(entry, event, detail, rcpt=None, status=None) -> None:
        if entry.meta.get("trace_id"):
            node.trace.add_event(entry.meta["trace_id"], event, detail, recipient=rcpt and rcpt.lower(), status=status)

    retry = RetryPolicy(first_retry=g.retry_first, max_backoff=max(g.retry_max_backoff, g.retry_first), max_age=g.retry_max_age)
    def context_for(mode: str) -> ssl.SSLContext:
        if mode == "downstream" and downstream_tls is not None:  # the gateway's own verified context
            return downstream_tls()
        return contexts.get(mode, contexts["certificate_validation"])

    runner = RoutingRunner(spool, route, base, context_for, retry,
                           local=local, name=name, hostname=base.helo, concurrency=g.relay_concurrency,
                           scan_interval=g.queue_scan_interval, health=HostHealth.for_queue(g.host_backoff, retry), on_event=on_event)
    from mxgate.queue.tlsrpt import TlsReports

    runner.tls_reports = TlsReports(node.home.spool / "tls-rpt")
    runner.start()
    queue = OutboundQueue(spool, runner, lock_fd)
    node.extras.append(queue)
    return queue


async def start_mailbox_outbound(node, is_local: Callable[[str], bool], local) -> OutboundQueue:
    """The mailbox node's outbound queue: local recipients (DSNs) inside, others by connector."""
    resolver = _resolver(node)

    async def route(address: str) -> Route:
        if is_local(address):
            return Route(RouteKind.LOCAL, "local")
        domain = address.rpartition("@")[2].lower()
        r = connector_route(node.watcher.current.policy, domain)
        return await resolve_mx(r, domain, resolver, node.settings.outbound.tls_required_domains) if r.kind == RouteKind.MX else r

    return await _open_queue(node, "outbound", route, local, "mailbox outbound")


class GatewayOutbound:
    """The gateway's outbound side: who may relay out through it, and its MX queue."""

    def __init__(self, node, queue: OutboundQueue | None = None):
        self.node = node
        self.queue = queue
        self.trusted = PrefixTable([(parse_network(a), True) for a in node.settings.gateway.outbound_from])

    def is_trusted(self, peer_ip) -> bool:
        """The organisation's own mailbox servers (by address) may send to any domain."""
        return bool(self.trusted.lookup(normalize_ip(peer_ip)))

    async def accept(self, s, txn, body, compiled):
        """A message from our own mailbox server: stamp Received, queue durably, then 250.

        The inbound content checks and header hygiene are for mail from the Internet; this
        mail was already judged (and DKIM-signed) inside the organisation, so it is passed on
        as it is, below one Received field (which signatures do not cover, RFC 6376 §5.4.1).
        """
        trace_id = secrets.token_hex(8)
        received = s.received_header(by=self.node.settings.gateway.hostname, trace_id=trace_id, recipients=txn.recipients)
        final = received + body.getvalue()
        rcpts = [str(r.address) for r in txn.recipients]
        await self.queue.enqueue(str(txn.sender), rcpts, final, {"trace_id": trace_id, "peer": str(s.peer_ip)})
        self.node.trace.record_all(message_records(
            trace_id, sender=str(txn.sender), data=final,
            rows=[(r, "Pending", [("Receive", f"outbound from {s.peer_ip}"), ("Send", "queued for MX delivery")])
                  for r in rcpts],
            detail={"session": s.id, "tls": s.tls.version if s.tls else None},
            from_ip=str(s.peer_ip), policy_version=compiled.version, role="gateway", direction="outbound"))
        return accept("queued")

    async def bounce(self, sender: str, dsn: bytes, meta: Mapping[str, str]) -> str:
        """A DSN from the gateway's queues: out through this queue's routes — the downstream
        mailbox server for our own domains' senders, the sender's MX for everyone else — with
        its own trace row, so retries and the outcome show in the trace. Durable on return."""
        trace_id = secrets.token_hex(8)
        entry = await self.queue.enqueue("", [sender], dsn, {**meta, "trace_id": trace_id})
        domain = sender.rpartition("@")[2].lower()
        internal = bool(domain) and accepted_domain_for(self.node.watcher.current.policy, domain) is not None
        self.node.trace.record_all(message_records(
            trace_id, sender="", data=dsn,
            rows=[(sender, "Pending", [("Receive", f"delivery status notification for queue entry {meta.get('dsn_for', '')}"),
                                       ("Send", "queued for the mailbox server" if internal else "queued for MX delivery")])],
            detail={"dsn_for": meta.get("dsn_for", "")}, policy_version=self.node.watcher.current.version,
            reason="dsn", role="gateway", direction="inbound" if internal else "outbound"))
        return entry.queue_id

    async def stop(self) -> None:
        if self.queue:
            await self.queue.stop()


async def start_gateway_outbound(node, downstream: Callable[[], RelaySettings]) -> GatewayOutbound:
    """Outbound queue on the gateway: our domains (DSNs) to the downstream, the rest by MX.
    Every gateway runs it: its DSNs to Internet senders leave this way even without `outbound_from`."""
    resolver = _resolver(node)

    async def route(address: str) -> Route:
        domain = address.rpartition("@")[2].lower()
        if not domain or accepted_domain_for(node.watcher.current.policy, domain) is not None:
            d = downstream()
            return Route(RouteKind.RELAY, "downstream", tuple(d.hosts), "downstream", tls_name=d.tls_name)
        return await resolve_mx(Route(RouteKind.MX, f"mx:{domain}", require_tls=False), domain, resolver,
                                node.settings.outbound.tls_required_domains)

    queue = await _open_queue(node, "gateway-outbound", route, name="gateway outbound",
                              downstream_tls=lambda: downstream().tls_context)
    return GatewayOutbound(node, queue)
