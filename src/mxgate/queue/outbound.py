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
`domain_validation` also checks that the certificate names the connector's `tls_domain` (EXO's
TlsDomain; "*.example" = any host below example), whether sent to smart hosts or by MX. To MX hosts each address carries its MX name and a
per-host policy (`plan_mx_tls`): DANE when the trusted resolver authenticates TLSA records (RFC
7672), else MTA-STS (RFC 8461: enforce = listed hosts only, verified TLS to the MX name; testing
= report only), else `[outbound] tls_required_domains` (STARTTLS required) or opportunistic TLS
(RFC 7435). No host meeting its policy: deferred 4.7.5 and retried.
"""

from __future__ import annotations

import asyncio
import os
import logging
import ssl
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Awaitable, Callable, Mapping, Sequence

from mxgate.auth.dns import node_resolver
from mxgate.names import format_hostport, normalize_ip, parse_hostport
from mxgate.policy.ipset import PrefixTable, parse_network
from mxgate.policy.model import Policy
from mxgate.policy.validate import accepted_domain_for, outbound_for
from mxgate.probe.mx import lookup_mx
from mxgate.queue.relay import HostTls, RcptOutcome, RelayResult, RelaySettings, client_context, relay
from mxgate.queue.runner import Runner
from mxgate.queue.scheduler import HostHealth, RetryPolicy
from mxgate.queue.spool import (CorruptEntryError, PartialEntryError, QueueEntry, Spool, StaleEntryError,
                                open_process_spool)
from mxgate.trace.records import message_records, new_trace_id
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
    host_tls: tuple[tuple[str, HostTls], ...] = ()  # MX delivery: each "host:port"'s MX name and TLS policy
    policy_strings: tuple[tuple[str, tuple[str, ...]], ...] = ()  # per RFC 8460 policy type: its strings


def _hostport(host: str) -> str:
    """"gw.example" → "gw.example:25"; "[::1]:2526" and "1.2.3.4:2526" keep their port."""
    return format_hostport(*parse_hostport(host, SMTP_PORT))


def connector_route(policy: Policy, domain: str) -> Route:
    """Pure: the outbound connector for a recipient domain; no connector means direct MX delivery."""
    conn = outbound_for(policy, domain)
    # domain_validation checks the certificate against the connector's TlsDomain, not the host's
    # name; a wildcard TlsDomain ("*.example") is matched after a chain-only handshake (relay.py).
    tls_name = conn.tls_domain.strip().lower() if conn and conn.tls_settings == "domain_validation" else ""
    tls = conn.tls_settings if conn else "encryption_only"
    if tls_name.startswith("*."):
        tls = "certificate_validation"
    if conn is None or conn.use_mx_record or not conn.smart_hosts:
        name = conn.name if conn else ""
        # no connector: opportunistic TLS (RFC 7435); a connector's TLS setting requires STARTTLS
        return Route(RouteKind.MX, f"mx:{domain}", tls=tls, why=f"connector {name!r} by MX" if name else "no connector: MX",
                     require_tls=conn is not None, tls_name=tls_name)
    return Route(RouteKind.RELAY, f"connector:{conn.name.lower()}", tuple(_hostport(h) for h in conn.smart_hosts),
                 tls, why=f"connector {conn.name!r}", tls_name=tls_name)


def tls_required(domain: str, required: Sequence[str]) -> bool:
    """Pure: does a per-domain policy require TLS to this domain ("example.com" or "*.example.com")?"""
    d = domain.lower().rstrip(".")
    for pattern in required:
        p = pattern.lower().rstrip(".")
        if d == p or (p.startswith("*.") and d.endswith(p[1:])):
            return True
    return False


@dataclass(frozen=True)
class MxTlsFacts:
    """Gathered for one domain's MX hosts: its MTA-STS policy and each host's authenticated TLSA."""

    sts: object = None  # queue/mtasts.StsPolicy or None
    tlsa: Mapping[str, tuple] = None  # MX name → DANE records; () none usable; None lookup failed
    verify: ssl.SSLContext | None = None  # chain and name checked (MTA-STS, RFC 8461 §4.2)
    dane: ssl.SSLContext | None = None  # chain not checked by OpenSSL: TLSA decides (RFC 7672 §3)


def sts_strings(policy) -> tuple[str, ...]:
    return ("version: STSv1", f"mode: {policy.mode}", *(f"mx: {m}" for m in policy.mx), f"max_age: {policy.max_age}")


def plan_mx_tls(mx_hosts, facts: MxTlsFacts, require: bool) -> tuple[list[tuple[str, HostTls]], str]:
    """Pure: each MX address with the TLS its host must meet, and why hosts were left out.

    DANE first (RFC 8461 §2: a host with authenticated TLSA records follows DANE, not MTA-STS);
    then MTA-STS enforce: only hosts matching the policy's mx patterns, STARTTLS with a certificate
    valid for the MX name (§4.1, §4.2, §5.1); testing: checked, a failure only reported; no policy:
    `require` (a per-domain setting or connector) or opportunistic TLS."""
    from mxgate.queue.mtasts import applies

    out, skipped = [], []
    for h in mx_hosts:
        tlsa = (facts.tlsa or {}).get(h.name, ())
        if tlsa is None:  # RFC 7672 §2.2: a failed TLSA lookup for a secure host — do not deliver there
            skipped.append(f"{h.name}: TLSA lookup failed")
            continue
        if tlsa:
            t = HostTls(h.name, True, facts.dane, tlsa, policy="tlsa")
        else:
            how = applies(facts.sts, h.name)
            if how == "skip":
                skipped.append(f"{h.name}: not an mx of the MTA-STS policy")
                continue
            if how == "require":
                t = HostTls(h.name, True, facts.verify, policy="sts")
            elif how == "report":
                t = HostTls(h.name, require, facts.verify, testing=not require, policy="sts")
            else:
                t = HostTls(h.name, require)
        out += [(format_hostport(a, SMTP_PORT), t) for a in h.addresses]
    return out, "; ".join(skipped)


class MxTlsPolicies:
    """Gathers MTA-STS policies (cached, queue/mtasts.StsCache) and DANE TLSA records for MX
    delivery. `sync_resolver` answers blocking lookups (run in worker threads); DANE applies only
    when `dane_trusted` says the resolver validates DNSSEC over a trusted path (RFC 7672 §2.1)."""

    def __init__(self, sync_resolver, *, verify: ssl.SSLContext, sts_context: ssl.SSLContext | None = None,
                 sts_port: int = 443, mta_sts: bool = True, dane_trusted: bool = False, timeout: float = 5.0):
        from mxgate.queue.mtasts import StsCache

        self.resolver, self.dane_trusted, self.timeout = sync_resolver, dane_trusted, timeout
        self.sts = StsCache(sync_resolver, context=sts_context, port=sts_port, timeout=timeout) if mta_sts else None
        self.verify = verify
        self.dane = client_context(None, verify=False)

    def _tlsa(self, name: str):
        import dns.exception

        from mxgate.queue import dane

        try:
            return dane.lookup(self.resolver, name, trusted=self.dane_trusted, timeout=self.timeout) or ()
        except dns.exception.DNSException:
            return None

    async def facts(self, domain: str, mx_hosts) -> MxTlsFacts:
        sts = await asyncio.to_thread(self.sts.policy, domain) if self.sts else None
        tlsa = {}
        if self.dane_trusted:
            for h in mx_hosts:
                tlsa[h.name] = await asyncio.to_thread(self._tlsa, h.name)
        return MxTlsFacts(sts, tlsa, self.verify, self.dane)


async def resolve_mx(route: Route, domain: str, resolver, required: Sequence[str] = (),
                     policies: MxTlsPolicies | None = None) -> Route:
    """An "mx" route with the domain's exchanges as hosts (RFC 5321 §5.1), each with its MX name
    and TLS policy (MTA-STS, DANE), or a failure. Without a connector, TLS is opportunistic unless
    `required` (the per-domain policy) names the domain."""
    if tls_required(domain, required):
        route = replace(route, require_tls=True)
    result = await lookup_mx(domain, resolver)
    if result.null_mx:  # RFC 7505 §4.2: the domain takes no mail
        return replace(route, kind=RouteKind.FAIL, status="5.1.10", why=f"{domain} publishes a null MX (RFC 7505)")
    if result.error and "NXDOMAIN" in result.error:
        return replace(route, kind=RouteKind.FAIL, status="5.1.2", why=f"{domain}: {result.error}")
    if result.error:
        return replace(route, kind=RouteKind.FAIL, status="4.4.3", why=f"{domain}: {result.error}")
    if not any(h.addresses for h in result.hosts):
        return replace(route, kind=RouteKind.FAIL, status="4.4.3", why=f"{domain}: MX hosts have no addresses")
    facts = await policies.facts(domain, result.hosts) if policies else MxTlsFacts()
    planned, skipped = plan_mx_tls(result.hosts, facts, route.require_tls)
    strings = []
    if facts.sts is not None and facts.sts.mode != "none":
        strings.append(("sts", sts_strings(facts.sts)))
    from mxgate.queue.dane import presentation

    tlsa = tuple(presentation(t) for recs in (facts.tlsa or {}).values() if recs for t in recs)
    if tlsa:
        strings.append(("tlsa", tlsa))
    if not planned:  # RFC 8461 §5.1 / RFC 7672 §2.2: no host may be used — a temporary failure
        return replace(route, kind=RouteKind.FAIL, status="4.7.5", why=f"{domain}: no MX host meets its TLS policy ({skipped})",
                       policy_strings=tuple(strings))
    return replace(route, kind=RouteKind.RELAY, hosts=tuple(h for h, _ in planned), host_tls=tuple(planned),
                   policy_strings=tuple(strings))


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
        """One TLS-RPT line per MX session (RFC 8460 §4.4): each host's TLS failure, each
        delivery's failed-but-tolerated check (MTA-STS testing), and each encrypted delivery, with
        the policy type applied to that host ("tlsa", "sts", "no-policy-found") and its strings."""
        if self.tls_reports is None or not r.key.startswith("mx:"):
            return
        from mxgate.queue.tlsrpt import TlsResult, classify

        domain = r.key[3:]
        per_host = dict(r.host_tls)
        strings = dict(r.policy_strings)

        def record(host: str, ok: bool, kind: str = "") -> None:
            t = per_host.get(host)
            ptype = t.policy if t else "no-policy-found"
            self.tls_reports.record(TlsResult(domain, ptype, ok, kind, mx_host=t.name if t else "",
                                              receiving_ip=host.rsplit(":", 1)[0].strip("[]"),
                                              sending_ip=self.base.source_address, policy_strings=strings.get(ptype, ())))

        for err in result.errors:
            host, _, why = err.partition(": ")
            kind = classify(why)
            if kind:
                record(host, False, kind)
        noted = set()
        for note in result.notes:
            host, _, why = note.partition(": ")
            noted.add(host)
            record(host, False, classify(why) or "validation-failure")
        if result.host and result.tls and result.host not in noted and any(o.state == "delivered" for o in result.outcomes):
            record(result.host, True)

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
                               require_tls=r.require_tls, host_tls=r.host_tls)
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
        await self.spool.stop()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = -1

    def describe(self) -> str:
        return self.runner.describe()


def _resolver(node):
    return node_resolver(node).aio  # the node's cache: MX answers shared with the checks


def mx_policies(node) -> MxTlsPolicies:
    """The node's one MTA-STS cache and DANE settings ([outbound]), shared by its queues."""
    existing = getattr(node, "mx_tls_policies", None)
    if existing is None:
        o = node.settings.outbound
        verify = tls_context_for("domain_validation", str(node.certs.ca_cert))
        existing = node.mx_tls_policies = MxTlsPolicies(
            node_resolver(node), verify=verify, sts_context=verify, sts_port=o.mta_sts_port, mta_sts=o.mta_sts,
            dane_trusted=o.dane, timeout=node.settings.dns.timeout)
    return existing


async def _open_queue(node, directory: str, route, local=None, name: str = "outbound",
                      downstream_tls: Callable[[], ssl.SSLContext] | None = None) -> OutboundQueue:
    g = node.settings.gateway  # the node's queue timings (retries, timeouts) live in [gateway]
    spool, lock_fd = await open_process_spool(node.home.spool, directory, node.settings.node.worker,
                                               node.settings.processes(), node.committer)
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
    spool.start()
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
        if r.kind != RouteKind.MX:
            return r
        return await resolve_mx(r, domain, resolver, node.settings.outbound.tls_required_domains, mx_policies(node))

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
        trace_id = new_trace_id()
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
        trace_id = new_trace_id()
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
                                node.settings.outbound.tls_required_domains, mx_policies(node))

    queue = await _open_queue(node, "gateway-outbound", route, name="gateway outbound",
                              downstream_tls=lambda: downstream().tls_context)
    return GatewayOutbound(node, queue)
