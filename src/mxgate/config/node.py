"""Node settings (node.toml), separate from the organisation policy. The settings reference in
the README is generated from this schema (`mxgate config reference`), so each field documents
its meaning, default and why here, once.

Owns: the schema and loading (file → MXGATE_* environment → flags). Must not know how the
settings are used.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mxgate.config.sources import environment_settings
from mxgate.errors import ConfigError
from mxgate.smtp import limits


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nan(self):
        """TOML has nan, and no bound (ge=0) refuses it; uvloop's timers raise on it. inf stays: "never"."""
        for name, value in self:
            if isinstance(value, float) and value != value:
                raise ValueError(f"{name} = nan is not a number")
        return self


def _each(parse: Callable[[str], object]) -> AfterValidator:
    """Every entry must parse as its user parses it, so a typo is named when node.toml is read,
    not a traceback when a listener starts or a relay that can never connect."""
    def check(values: list[str]) -> list[str]:
        for value in values:
            try:
                parse(value)
            except ValueError as exc:
                raise ValueError(f"{value!r}: {exc}") from None
        return values
    return AfterValidator(check)


def _network(text: str) -> None:  # the listeners and the outbound relay: host bits zero
    from mxgate.policy.ipset import parse_network

    parse_network(text)


def _skipped_network(text: str) -> None:  # enhanced filtering's skip list (auth/skiplist.py) is lenient
    import ipaddress

    ipaddress.ip_network(text, strict=False)


def _dns_server(text: str) -> None:
    from mxgate.auth.dns import parse_server

    parse_server(text)


def _host_port(text: str) -> None:  # queue/relay.py: the port is required
    from mxgate.names import parse_hostport

    parse_hostport(text)


Networks = Annotated[list[str], _each(_network)]
SkippedNetworks = Annotated[list[str], _each(_skipped_network)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container or taskset may allow fewer than the machine has
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class NodeSection(_Section):
    name: str = Field("node1", description="This node's name in status, trace and the admin centre. Restart.")
    worker: int = Field(0, ge=0, description="Set by `mxgate serve` in its worker processes (0 = the first process); a worker keeps its own queues (spool/gateway-w<N>, spool/gateway-outbound-w<N>, spool/outbound-w<N>).")
    workers: int = Field(0, ge=0, le=64, description="Processes serving the mailbox and gateway listeners, sharing their sockets (SO_REUSEPORT). 0 (the default) = one per CPU core this process may run on, at most 8. One process is bound by its event loop and GIL; on a multi-core machine 2 or more raise msg/s (bench/ P1). Submission and admin run in the first process only. Each process has its own gateway queue directory; the first adopts those of workers the node no longer runs. Restart.")
    srs_key_file: str = Field("", description="The SRS secret (delivery/srs.py): mailbox servers sign forwarded senders with it and the gateway refuses forged SRS bounces at RCPT with it, so every node of the organisation needs the same file (copy it). Default <home>/keys/srs.key, made on first use. Restart.")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field("auto", description='Event loop of `mxgate serve`: "auto" (the default: uvloop when installed — a default dependency on Linux — else the standard loop), "asyncio" (the standard loop) or "uvloop" (required; its C transports and TLS cut CPU per refused connection ~14% and per message ~5% in bench/). Restart.')
    user: str = Field("", description='Account to run as when `mxgate serve` is started as root: the listeners are bound first, the home directory is given to this account, then the process drops root for good (setgroups, setgid, setuid) before opening anything else. Worker processes run as the same account. Empty = do not change user. Restart.')
    group: str = Field("", description="Group to run as with `user`; empty = the account's primary group. The account's supplementary groups (e.g. ssl-cert, to read certificate keys) are kept.")
    allow_root: bool = Field(False, description="Let `mxgate serve` keep running as root when no `user` is set. Off: started as root without `user`, the node refuses to start. The test rig sets it (MXGATE_NODE__ALLOW_ROOT=true); a service should use `user` or the systemd unit's CAP_NET_BIND_SERVICE instead.")
    shutdown_grace: float = Field(30.0, ge=0, description="Seconds open SMTP sessions get to finish after SIGTERM before they are closed (the systemd unit's TimeoutStopSec is longer). Restart.")
    tls_check_interval: float = Field(60.0, gt=0, description="Seconds between checks of the listeners' certificate and key files; a changed pair is loaded for new handshakes without a restart (SIGHUP checks at once).")
    cluster_sync_interval: float = Field(0.1, gt=0, le=5, description="Seconds between this node's exchanges of shared state with the store: rate-limit and authentication-failure counts, greylist, connect-stage verdicts (store/cluster.py). Between two exchanges a node admits at most its share of what is left of a limit. Restart.")
    cluster_stale_after: float = Field(3.0, gt=0, description="Seconds without reaching the store after which this node enforces every shared limit on its own count (degraded: N nodes admit up to N x a limit) until the store answers again. Restart.")
    key_refresh: float = Field(2.0, gt=0, description="Seconds a node keeps its copy of the cluster keys (SRS, DKIM, ARC) before reading them again, so a rotation on any node is used by all within this time (store/keys.py).")


    def worker_count(self) -> int:
        """`workers`, with 0 resolved to the cores this process may run on (at most 8)."""
        if self.workers:
            return self.workers
        return max(1, min(8, _cores()))

class RolesSection(_Section):
    mailbox: bool = Field(True, description="Run the mailbox server (anonymous inbound listener with connector enforcement).")
    gateway: bool = Field(False, description="Run the mail security gateway (the public MX).")
    submission: bool = Field(False, description="Run authenticated submission (SMTP AUTH over TLS, port 587 style).")
    admin: bool = Field(True, description="Run the admin centre (web UI and REST API).")


class LimitsSection(_Section):
    max_message_size: int = Field(limits.DEFAULT_MAX_MESSAGE_SIZE, description="Bytes; larger messages get 552 5.3.4 (SIZE at MAIL, or after the dot).")
    max_recipients: int = Field(limits.DEFAULT_MAX_RECIPIENTS, description="Recipients per transaction; more get 452 4.5.3 (RFC 5321 §4.5.3.1.8 asks for at least 100).")
    command_timeout: float = Field(limits.COMMAND_TIMEOUT, description="Seconds to wait for the next command (RFC 5321 §4.5.3.2.7: 5 minutes).")
    min_data_rate: int = Field(limits.MIN_DATA_RATE, description="Bytes/s a client must sustain during DATA after a grace period; slower peers get 421 (slowloris).")
    data_rate_grace: float = Field(limits.DATA_RATE_GRACE, description="Seconds of DATA before the minimum rate is enforced.")
    max_session_seconds: float = Field(limits.MAX_SESSION_SECONDS, description="Longest session; then 421 4.4.2.")
    max_connections_per_ip: int = Field(20, description="Concurrent connections from one address; more get 421 4.7.0.")
    max_connections: int = Field(20000, description="Concurrent connections on the listener; more get 421 4.7.0.")
    max_errors: int = Field(limits.MAX_ERRORS, description="Unknown or invalid commands before 421 and disconnect.")
    greeting_delay: float = Field(0.0, description="Seconds to wait before the greeting; a client that talks first is refused (pregreet). 0 disables.")
    min_free_disk: int = Field(64 * 1024 * 1024, description="Bytes that must stay free on the spool/maildir disk; below it MAIL gets 452 4.3.1.")


class ListenerSection(_Section):
    listen: list[str] = Field(default_factory=list, description='Addresses "host:port" ("[::1]:port" for IPv6).')
    hostname: str = Field("mx.mxgate.test", description="Name in the greeting, EHLO reply and Received headers.")
    tls_cert: str = Field("", description="PEM server certificate; empty = the generated one in <home>/certs.")
    tls_key: str = Field("", description="PEM private key for tls_cert.")
    client_ca: str = Field("", description="PEM CA bundle for client certificates (certificate connectors). Empty = no client certificates requested.")
    trusted_proxies: Networks = Field(default_factory=list, description="Addresses/CIDRs allowed to send a PROXY protocol header; from anyone else it is not believed.")
    limits: LimitsSection = Field(default_factory=LimitsSection)


class MailboxSection(ListenerSection):
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:2525", "[::1]:2525"], description="Anonymous inbound listener addresses.")
    reject_stage: Literal["rcpt", "connect"] = Field("rcpt", description='"rcpt" refuses bypass attempts at RCPT (logged with sender and recipient, as EXO); "connect" refuses in the greeting when every accepted domain is IP-locked (cheapest under floods); with an enabled certificate connector, or a domain not IP-locked, refusals stay at RCPT, and the node logs why at start and when a policy change alters it (`mxgate verify` shows it too).')
    non_routable: SkippedNetworks = Field(default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128"], description="Addresses enhanced filtering always skips as internal hops (mail-flow.md §4.2). Tests that use loopback senders as 'external' remove 127.0.0.0/8.")


class GatewaySection(ListenerSection):
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:2526"], description="The gateway's public (MX) listener addresses.")
    hostname: str = Field("gw.mxgate.test", description="Name in the greeting and Received headers.")
    downstream: Annotated[list[str], _each(_host_port)] = Field(default_factory=list, description='Mailbox servers "host:port", tried in order.')
    downstream_ca: str = Field("", description="CA that signs the mailbox server's certificate; empty = the generated CA.")
    downstream_tls_name: str = Field("", description="Name the mailbox server's certificate must carry (DNS name or IP address, RFC 6125); empty = the host named in each `downstream` entry. The relay checks the name as well as the CA, so a certificate from a public CA in downstream_ca cannot stand in for the mailbox server.")
    source_address: str = Field("", description="Local address the relay binds, so the mailbox server's connector sees the gateway address.")
    client_cert: str = Field("", description="Client certificate presented to the downstream (certificate connectors).")
    client_key: str = Field("", description="Key for client_cert.")
    authserv_id: str = Field("gw.mxgate.test", description="authserv-id of the gateway's Authentication-Results (RFC 8601 §2.5) and of its ARC seal; forged results with this id are removed.")
    arc_domain: str = Field("mxgate.test", description="d= of the gateway's ARC seal; publish the key with `mxgate gateway arc-dns` and list this domain in the policy's arc_trusted_sealers.")
    arc_selector: str = Field("mxgate-gw", description="s= of the ARC seal; the key is generated once into <home>/keys/arc-<selector>.pem. Restart.")
    recipient_validation: Literal["directory", "callahead"] = Field("directory", description='"directory": recipients are checked against the policy in the shared store; "callahead": an RCPT to the downstream decides (cached). Unknown recipients get 550 5.1.1 at RCPT.')
    callahead_ttl: float = Field(600.0, description="Seconds a callahead answer (known/unknown recipient) is cached.")
    connect_checks: list[Literal["dnsbl", "rdns"]] = Field(default_factory=list, description='Checks looked up when a connection opens, before the greeting (postscreen-style; filters/connect.py): "dnsbl", "rdns". The policy\'s [gateway.dnsbl]/[gateway.rdns] settings decide; a check whose action is reject refuses the client (see connect_refuse), other outcomes are carried to the DATA-phase decision without a second lookup. The answer is cached per address for the cluster (connect_verdict_ttl). Empty = these checks run after DATA only.')
    connect_refuse: Literal["greeting", "rcpt"] = Field("greeting", description='Where a connect-stage refusal is answered: "greeting" (554 instead of 220, RFC 5321 §3.1; then 503 to everything but QUIT) or "rcpt" (a normal greeting, every RCPT refused with the check\'s reply, so the sender and recipients reach the trace).')
    connect_verdict_ttl: float = Field(300.0, gt=0, description="Seconds a connect-stage lookup of an address is reused by every node on the store; failed lookups are not cached.")
    retry_first: float = Field(300.0, description="Seconds before the first retry of a deferred message (Postfix minimal_backoff_time); doubles after each attempt.")
    retry_max_backoff: float = Field(4000.0, description="Longest wait between retries (Postfix maximal_backoff_time, ~67 min).")
    retry_max_age: float = Field(5 * 86400.0, description="Give up and bounce (DSN) after this many seconds in the queue (Postfix maximal_queue_lifetime, 5 days; RFC 5321 §4.5.4.1).")
    relay_concurrency: int = Field(20, description="Deliveries in flight at once to the downstream, the queue's and cut-through's together (each process of the node has its own); as many idle relay sessions are kept for the next messages.")
    relay_connect_timeout: float = Field(10.0, description="Seconds to connect and get the greeting from a downstream host; short so fail-over is quick.")
    relay_timeout: float = Field(120.0, description="Seconds per SMTP command while relaying (RFC 5321 §4.5.3.2 suggests minutes; DATA end gets this too).")
    host_backoff: float = Field(30.0, description="Seconds a downstream host that refused the connection is skipped before it is tried again (doubles once per outage, up to retry_max_backoff and at most 10 min).")
    cut_through: bool = Field(True, description="Cut-through relay (as Exim's cut_through_delivery, Postfix's before-queue proxy): a message that passed the checks and was stamped is relayed to the downstream before the sender gets its reply, and nothing is written to the gateway's spool when the downstream took it for every recipient. A recipient the downstream refuses for good is refused to the sender at DATA when every recipient was (no backscatter DSN), else gets a DSN; anything else (4xx, no connection, a host backing off, past cut_through_timeout) is spooled, fsynced before the 250, and retried as without it. Only messages held in memory (up to 1 MiB), not quarantined, not outbound, with a delivery slot free (relay_concurrency). The sender's 250 always follows the downstream's 250 for every recipient or the gateway's own fsync. false = every message through the spool first.")
    cut_through_timeout: float = Field(20.0, gt=0, description="Seconds a cut-through relay may take in all (connect, TLS, the transaction, the downstream's reply after the message) before the message is spooled instead; connecting and the greeting get at most 5 s of it (or relay_connect_timeout when shorter), so a downstream that does not greet is not waited for. The mailbox server answers in milliseconds after its group commit; 20 s rides out a slow disk or a busy downstream and stays far below the 10 minutes a sender waits for the reply (RFC 5321 §4.5.3.2.6). A downstream past it may still deliver the message: spooled after the final dot, it may arrive twice, never not at all (RFC 1047). A host that overran it gets no cut-through for host_backoff seconds.")
    queue_scan_interval: float = Field(1.0, description="Seconds between scans of the queue for due messages.")
    check_workers: int = Field(8, description="Worker threads running the content checks (DNS, DKIM, clamd) off the event loop.")
    check_per_client: int = Field(4, ge=1, description="Messages from one client address in the content checks at once; "
                                  "more get 451 4.7.0 (one sender cannot occupy every check worker). A client also "
                                  "gets at most half of check_workers.")
    outbound_from: Networks = Field(default_factory=list, description="Addresses/CIDRs of the organisation's own mailbox servers: they may relay mail for any domain through this gateway (outbound, delivered by MX lookup through a durable queue with retries and DSNs). Empty = no outbound relaying.")
    queue: Literal["disk", "database"] = Field("disk", description='Where accepted mail waits for the downstream. "disk": the spool in <home>/spool/gateway, and spool/gateway-w<N> for worker process N (one node). "database": a table in the shared [store] (PostgreSQL), so any gateway node delivers any queued message and a dead node\'s mail is delivered by the others after its lease. Restart.')
    queue_lease: float = Field(60.0, gt=0, description='With queue = "database": seconds a node holds a message it is relaying; renewed every third of it while the node lives. A node dead for longer hands its messages to the others. Shorter = faster take-over; longer than a stall of a live node avoids a duplicate delivery.')


class SubmissionSection(ListenerSection):
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:5587"], description="Submission listener addresses.")


class DnsSection(_Section):
    servers: Annotated[list[str], _each(_dns_server)] = Field(default_factory=list, description='DNS servers "host:port"; empty = the system resolver (same cache, retries and serve-stale).')
    timeout: float = Field(3.0, description="Seconds per lookup; a timeout gives temperror, never a hang.")
    cache_size: int = Field(10000, description="DNS answers kept in memory for their TTL (SPF, DKIM, DMARC, DNSBL, MX); 0 disables the cache.")


class TraceSection(_Section):
    retention_days: float = Field(90.0, ge=0, description="Days a message trace row is kept (pruned hourly); 0 keeps rows forever.")


class AdminSection(_Section):
    listen: str = Field("127.0.0.1:8025", description="Admin centre address; loopback by default (the admin surface is never public by default).")
    metrics_public: bool = Field(True, description="Serve /metrics without authentication (for a local Prometheus).")
    tls_cert: str = Field("", description="PEM certificate (chain) for HTTPS on [admin] listen; empty = plain HTTP (loopback only, or behind a TLS proxy). Session cookies are `Secure` over HTTPS. Restart.")
    tls_key: str = Field("", description="PEM private key for [admin] tls_cert. Restart.")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host header names the admin centre answers to (DNS-rebinding guard), besides `localhost` and IP literals; e.g. [\"admin.contoso.test\"].")


class OutboundSection(_Section):
    tls_required_domains: list[str] = Field(default_factory=list, description='Recipient domains ("example.com", "*.example.com") whose MX hosts must offer STARTTLS; to every other domain without an outbound connector TLS is opportunistic (used when offered, clear text when not, RFC 7435). A host of a listed domain without STARTTLS gets no mail: the message is deferred (4.4.1) and retried.')
    mta_sts: bool = Field(True, description="Apply recipient domains' MTA-STS policies (RFC 8461) to MX delivery: with mode enforce only the policy's mx hosts, STARTTLS with a certificate valid for the MX name (checked against the node's CA and the system store), else deferred (4.7.5); mode testing delivers and records the failure for TLS-RPT.")
    mta_sts_port: int = Field(443, ge=1, le=65535, description="HTTPS port of the mta-sts.<domain> policy host (RFC 8461 §3.3 says 443; other values are for test rigs).")
    dane: bool = Field(False, description="The [dns] servers validate DNSSEC and the path to them is trusted (a validating resolver on this host): TLSA answers carrying the AD bit are applied (DANE for SMTP, RFC 7672) and take precedence over MTA-STS. Off: TLSA records are not looked up.")


class StoreSection(_Section):
    url: str = Field("", description="Database URL; empty = SQLite in the home directory. PostgreSQL: postgresql+psycopg://...")


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level of the JSON log lines.")
    file: str = Field("", description="Also write JSON log lines here; empty = stderr only.")


class NodeSettings(_Section):
    node: NodeSection = Field(default_factory=NodeSection)
    roles: RolesSection = Field(default_factory=RolesSection)
    mailbox: MailboxSection = Field(default_factory=MailboxSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    submission: SubmissionSection = Field(default_factory=SubmissionSection)
    dns: DnsSection = Field(default_factory=DnsSection)
    outbound: OutboundSection = Field(default_factory=OutboundSection)
    trace: TraceSection = Field(default_factory=TraceSection)
    admin: AdminSection = Field(default_factory=AdminSection)
    store: StoreSection = Field(default_factory=StoreSection)
    log: LogSection = Field(default_factory=LogSection)

    def processes(self) -> int:
        """Processes serving the node's SMTP traffic: `[node] workers` when the mailbox or the
        gateway role runs, else 1. Workers serve only those two listeners (submission and admin
        stay in the first process), so a node without either starts none (each would still run a
        whole node's background work — cluster sync, policy watcher, heartbeat)."""
        return self.node.worker_count() if self.roles.mailbox or self.roles.gateway else 1


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> NodeSettings:
    """Read node.toml (if given), then apply MXGATE_<SECTION>__<KEY> environment values and overrides."""
    data: dict = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
    for section, field, value in environment_settings():
        data.setdefault(section, {})[field] = _env_value(value)
    for dotted, value in (overrides or {}).items():
        section, _, field = dotted.partition(".")
        data.setdefault(section, {})[field] = value
    try:
        return NodeSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"node settings: {where}: {first['msg']}") from None


def _env_value(text: str):
    """Environment values are TOML values when they parse as one (lists, booleans), else strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def settings_reference() -> str:
    """Markdown table of every setting, generated from the schema (README 'Settings reference')."""
    lines = ["| setting | default | meaning |", "|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = f.get_default(call_default_factory=True)
            lines.append(f"| `{prefix}{name}` | `{default!r}` | {f.description or ''} |")

    for section, f in NodeSettings.model_fields.items():
        walk(f.annotation, f"[{section}] ")
    return "\n".join(lines) + "\n"
