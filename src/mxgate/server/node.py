"""One mxgate node: opens the store, starts the roles it is configured for, reports its status.

Owns: start-up order (store → policy watcher → trace writer → committer → certificates →
listeners), the heartbeat row in `nodes` (roles, listeners, the policy version enforced;
written every HEARTBEAT_INTERVAL and as soon as the watcher puts a new version in force), and
graceful shutdown on SIGTERM/SIGINT. Each role's behaviour lives in its own module.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import delete, insert, select, update

from mxgate import metrics
from mxgate.auth.dns import node_resolver
from mxgate.auth.pipeline import Authenticator
from mxgate.config.home import Home
from mxgate.policy.attribution import connect_stage_fallback
from mxgate.config.node import ListenerSection, NodeSettings
from mxgate.delivery.internal import start_internal
from mxgate.durable import GroupCommitter
from mxgate.delivery.maildir import Maildir
from mxgate.quarantine.store import QuarantineStore
from mxgate.server.listener import Listener
from mxgate.server.mailbox import MailboxRole
from mxgate.server.policy_watch import PolicyWatcher
from mxgate.server.tls import GeneratedCertificates, ReloadingContext, ensure_default_certificates
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore
from mxgate.store.schema import nodes
from mxgate.trace.store import TraceStore

log = logging.getLogger("mxgate.node")

HEARTBEAT_INTERVAL = 1.0
# The young generation's collection threshold (CPython's default is 700 container objects).
# A message's work allocates and frees more than 700 containers at its peak, so at 700 the
# collector ran every ~16 messages in bench P3 (1.5% of each role's CPU) and found nothing:
# the message, refusal and session paths make no reference cycles (tests/server/test_gc.py).
# Cycle garbage (a timeout's traceback on the lossy-DNS path) still counts towards the
# threshold, so at most this many unreachable objects wait for a collection.
GC_YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """The running node's collector settings: young collections at GC_YOUNG_THRESHOLD, the
    older generations' ratios left at CPython's."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


@dataclass
class Node:
    settings: NodeSettings
    home: Home
    engine: Any = None
    policy_store: PolicyStore | None = None
    watcher: PolicyWatcher | None = None
    trace: TraceStore | None = None
    committer: GroupCommitter | None = None
    certs: GeneratedCertificates | None = None
    listeners: dict[str, Listener] = field(default_factory=dict)
    tls: dict[str, ReloadingContext] = field(default_factory=dict)  # role -> its renewing certificate
    roles: dict[str, Any] = field(default_factory=dict)
    extras: list[Any] = field(default_factory=list)  # other services with async start()/stop()
    cluster: Any = None  # store/cluster.ClusterState: counters, greylist, connect verdicts shared by the nodes
    keyring: Any = None  # store/keys.KeyRing: the SRS, DKIM and ARC keys every node uses
    _stop: asyncio.Event | None = None
    _hb_stop: threading.Event = field(default_factory=threading.Event)
    # One heartbeat write at a time, each reading the version in force inside it: a periodic
    # write that read the old version can then never land after the policy change's own write.
    _hb_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # An explicit "uvloop" is set process-wide here (a Node built before its loop exists);
        # `mxgate serve` runs on event_loop_factory()'s loop itself, so "auto" leaves the policy
        # of a process that embeds a Node (tests, the demo) alone.
        if self.settings.node.event_loop == "uvloop":
            factory = event_loop_factory(self.settings)

            class _Policy(asyncio.DefaultEventLoopPolicy):
                def new_event_loop(self):
                    return factory()

            asyncio.set_event_loop_policy(_Policy())

    @property
    def name(self) -> str:
        return self.settings.node.name

    async def start(self) -> None:
        # Signals first: a SIGTERM that arrives while listeners open must still stop gracefully.
        self._install_signal_handlers()
        url = self.settings.store.url or self.home.database_url
        self.engine = await asyncio.to_thread(open_engine, url)
        self.policy_store = PolicyStore(self.engine)
        self.first_run_policy = await asyncio.to_thread(apply_first_run_policy, self.policy_store)
        self.watcher = await asyncio.to_thread(PolicyWatcher, self.policy_store)
        self.watcher.start()
        worker = self.settings.node.worker
        # Rows the database cannot take now wait here, fsync'd, one journal per process.
        journal = self.home.spool / (f"trace-w{worker}.journal" if worker else "trace.journal")
        self.trace = TraceStore(self.engine, node=self.name, journal=journal,
                                retention_days=self.settings.trace.retention_days)
        self.trace.start()
        from mxgate.store.cluster import ClusterState
        from mxgate.store.keys import KeyRing

        self.cluster = ClusterState(self.engine, self.name, interval=self.settings.node.cluster_sync_interval,
                                    stale_after=self.settings.node.cluster_stale_after)
        if shares_state(self.settings):
            await asyncio.to_thread(self.cluster.start)
        self.keyring = KeyRing(self.engine, self.home.keys, refresh=self.settings.node.key_refresh,
                               srs_file=self.settings.node.srs_key_file)
        await asyncio.to_thread(self.keyring.srs_secrets)  # made (or adopted) now, not on the first bounce
        self.committer = GroupCommitter()
        self.committer.start()
        self.certs = ensure_default_certificates(self.home.certs, self.settings.mailbox.hostname)
        if self.settings.roles.mailbox:
            await self._start_mailbox()
        for role, target in OPTIONAL_ROLES.items():
            if getattr(self.settings.roles, role, False):
                await _load(target)(self)
        # Before the first row: a change loaded between the two is still written (under the lock).
        self.watcher.subscribe(self._policy_loaded)
        self._heartbeat(first=True)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._tls_watch_loop, name="tls-watch", daemon=True).start()
        metrics.set_tls_reader(lambda: {role: ctx.info.days_left() for role, ctx in self.tls.items()})
        # Everything loaded at start-up (SQLAlchemy, pydantic, the policy) lives for the whole
        # process: out of the collector's sight, full collections stop re-walking it (-5% CPU
        # per message in bench P1). Collected first: start-up's own cycle garbage (a lost race
        # for a key row's INSERT, with its traceback) would otherwise be frozen for good.
        gc.collect()
        gc.freeze()
        tune_collector()

    def tls_provider(self, section: ListenerSection) -> Callable[[], Any]:
        """A callable giving the listener's current SSL context (renewed files are picked up by
        check_certificates); client certs only where a client CA is set."""
        role = next((r for r in ("mailbox", "gateway", "submission") if getattr(self.settings, r) is section), "listener")
        cert = section.tls_cert or str(self.certs.server_cert)
        key = section.tls_key or str(self.certs.server_key)
        try:
            ctx = ReloadingContext(role, cert, key, section.client_ca or None)
        except (OSError, ValueError, ssl.SSLError) as exc:
            from mxgate.errors import ConfigError

            files = f"{cert} with {key}" + (f" (client_ca {section.client_ca})" if section.client_ca else "")
            names = "tls_cert/tls_key" + ("/client_ca" if section.client_ca else "")
            raise ConfigError(f"[{role}] {names}: cannot load {files}: {exc}") from None
        self.tls[role] = ctx
        return ctx

    def check_certificates(self) -> dict[str, str]:
        """Look at every listener's certificate files now: {role: unchanged|reloaded|refused}."""
        return {role: ctx.check() for role, ctx in list(self.tls.items())}

    def _tls_watch_loop(self) -> None:
        while not self._hb_stop.wait(self.settings.node.tls_check_interval):
            try:
                self.check_certificates()
            except Exception as exc:  # never let the watcher die: the next poll tries again
                log.warning("certificate check failed: %s", exc)

    async def _start_mailbox(self) -> None:
        """The mailbox role's composition root: every collaborator built here, passed to constructors."""
        s = self.settings.mailbox
        dns = self.settings.dns
        maildir = Maildir(self.home.maildir, self.committer, hostname=s.hostname)
        # Enhanced filtering, SPF/DKIM/DMARC/ARC on the node's resolver (issue 4).
        auth = Authenticator(servers=dns.servers, timeout=dns.timeout, cache_size=dns.cache_size,
                             non_routable=s.non_routable, resolver=node_resolver(self))
        auth.install()
        self.extras.append(auth)
        if self.settings.node.worker == 0:  # once per node, not once per worker process
            self._note_reject_stage(self.watcher.current)
            self.watcher.subscribe(self._note_reject_stage)
        # Aliases, lists, forwarding, on-premises relaying and DSNs routed inside the process (issue 6).
        internal = await start_internal(self, maildir)
        role = MailboxRole(s, node=self.name, watcher=self.watcher, trace=self.trace, maildir=maildir,
                           disk_path=str(self.home.maildir), hooks=[auth], delivery=internal,
                           quarantine=QuarantineStore(self.engine, node=self.name))
        listener = Listener(role, s.limits, ssl_context=self.tls_provider(s), spill_dir=str(self.home.spool),
                            trusted_proxies=s.trusted_proxies)
        listener.reuse_port = self.settings.processes() > 1
        await listener.start(s.listen)
        self.roles["mailbox"] = role
        self.listeners["mailbox"] = listener

    def _note_reject_stage(self, compiled) -> None:
        """Say at start — and again only when the reason changes — that reject_stage = "connect"
        cannot refuse in the greeting under this policy and refusals happen at RCPT instead."""
        why = connect_stage_fallback(compiled, self.settings.mailbox.reject_stage)
        before = getattr(self, "_reject_stage_note", None)
        if why != before:
            if why:
                log.warning(why)
            elif before:
                log.info('reject_stage = "connect" applies again from policy version %d', compiled.version)
            self._reject_stage_note = why

    # --- status ---------------------------------------------------------------------------
    def status_row(self) -> dict[str, Any]:
        listeners = {r: lst.addresses for r, lst in self.listeners.items()}
        for extra in self.extras:  # services that are roles but not SMTP listeners (admin)
            if getattr(extra, "role_name", None):
                listeners[extra.role_name] = list(extra.addresses)
        return {
            "name": self.name,
            "roles": json.dumps(sorted(listeners)),
            "listeners": json.dumps(listeners),
            "policy_version": self.watcher.current.version if self.watcher else 0,
            "heartbeat": time.time(),
            "pid": os.getpid(),
        }

    def _heartbeat(self, first: bool = False) -> None:
        with self._hb_lock:
            if self._hb_stop.is_set():  # stopped: stop() has written the last row (heartbeat 0)
                return
            row = self.status_row()
            with self.engine.begin() as conn:
                if first:
                    conn.execute(delete(nodes).where(nodes.c.name == self.name))
                    conn.execute(insert(nodes).values(started_at=time.time(), **row))
                else:
                    conn.execute(update(nodes).where(nodes.c.name == self.name).values(**row))

    def _policy_loaded(self, compiled) -> None:
        """In the policy watcher's thread, just after the swap: the row shows the version now in
        force at once (`mxgate status`), not at the next HEARTBEAT_INTERVAL."""
        try:
            self._heartbeat()
        except Exception as exc:  # the next periodic heartbeat writes it
            log.warning("heartbeat after policy version %d failed: %s", compiled.version, exc)

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(HEARTBEAT_INTERVAL):
            try:
                self._heartbeat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    # --- lifetime -------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (in-process test nodes): stop() is called directly
        try:  # `systemctl reload` (ExecReload): look at the certificate files now
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.check_certificates))
            # A worker starts with SIGHUP blocked (cli/serve_cmds.Workers); one that came
            # while it started is delivered now, to the handler.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    async def run_until_stopped(self) -> None:
        if self._stop is None:
            self._install_signal_handlers()
        await self._stop.wait()
        await self.stop(self.settings.node.shutdown_grace)

    async def stop(self, deadline: float = 10.0) -> None:
        for extra in self.extras:  # work in flight that can be cut short (the gateway's checks)
            if hasattr(extra, "begin_stop"):
                extra.begin_stop()
        await asyncio.gather(*(lst.stop(deadline) for lst in self.listeners.values()))
        for extra in reversed(self.extras):
            await extra.stop()
        if self.committer:
            await self.committer.aclose()
        self._hb_stop.set()
        if self.cluster and shares_state(self.settings):  # only a started one has counts to hand over
            await asyncio.to_thread(self.cluster.stop)
        if self.watcher:
            self.watcher.stop()
        if self.trace:
            self.trace.stop()
        try:
            with self._hb_lock, self.engine.begin() as conn:  # after any heartbeat in progress
                conn.execute(update(nodes).where(nodes.c.name == self.name).values(heartbeat=0.0, listeners="{}"))
        except Exception:
            pass
        self.engine.dispose()  # the pool's connections (a stopped node in a longer-lived process keeps none)

    def describe(self) -> str:
        lines = [f"mxgate node {self.name!r} (pid {os.getpid()}, host {socket.gethostname()})"]
        if self.first_run_policy:
            lines.append("  first run: applied the sample policy (Contoso, partner connector 'Third-party filter service'"
                         " restricted to 127.0.0.10, TLS required); see `mxgate policy export`")
        lines += [
                 f"  home:        {self.home.root}",
                 f"  database:    {self.engine.url.render_as_string(hide_password=True)}",
                 f"  policy:      version {self.watcher.current.version}",
                 f"  maildirs:    {self.home.maildir}",
                 f"  certificates: CA {self.certs.ca_cert}"]
        for role, lst in self.listeners.items():
            lines.append(f"  {role:<12} {' '.join(lst.addresses)}")
        for extra in self.extras:
            if hasattr(extra, "describe"):
                lines.append("  " + extra.describe())
        return "\n".join(lines)


def apply_first_run_policy(store: PolicyStore) -> bool:
    """An empty store gets the guide's sample policy, so a first start is already locked down."""
    if store.latest_version_number() != 0:
        return False
    from importlib import resources

    from mxgate.policy.document import load_toml

    text = resources.files("mxgate.examples").joinpath("guide.toml").read_text(encoding="utf-8")
    store.save(load_toml(text), actor="first-run", summary="sample policy applied on first run")
    return True


# Each further role lives in its own module with an async starter(node).
# The roles that count or remember something across the nodes through store/cluster.py: the
# gateway (rate limits, greylist, connect verdicts), submission (AUTH failures) and the admin
# centre (login failures). The mailbox role keeps nothing there, so a process serving only it
# (every mailbox worker) runs no sync thread: its four reads ten times a second were ~1% of
# the mailbox's CPU per message in bench P1 (issue 19).
SHARED_STATE_ROLES = ("gateway", "submission", "admin")


def shares_state(settings: NodeSettings) -> bool:
    """True when a role of this process uses the cluster's shared state (ClusterState.start)."""
    return any(getattr(settings.roles, role, False) for role in SHARED_STATE_ROLES)


OPTIONAL_ROLES = {
    "gateway": "mxgate.server.gateway:start_gateway",
    "submission": "mxgate.server.submission:start_submission",
    "admin": "mxgate.admin.app:start_admin",
}


def _load(target: str):
    import importlib

    from mxgate.errors import ConfigError

    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"role {module.rsplit('.', 1)[-1]!r} is not available: {exc}") from None


def read_status(engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(nodes).order_by(nodes.c.name)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["roles"] = json.loads(d["roles"])
        d["listeners"] = json.loads(d["listeners"])
        d["alive"] = time.time() - d["heartbeat"] < 5 * HEARTBEAT_INTERVAL
        out.append(d)
    return out


def event_loop_factory(settings: NodeSettings) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop a node runs on ([node] event_loop): uvloop's when asked for or, with "auto",
    when installed; else the standard one."""
    if settings.node.event_loop in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            from mxgate.errors import ConfigError

            if settings.node.event_loop == "auto":
                return asyncio.new_event_loop
            raise ConfigError('[node] event_loop = "uvloop" but uvloop is not installed (pip install mxgate[speed])') from None
        return uvloop.new_event_loop
    return asyncio.new_event_loop
