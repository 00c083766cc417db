"""The servers a benchmark measures side by side: mxgate (`mxgate serve`), an aiosmtpd null sink
(and Postfix, in bench/postfix.py), plus the loopback DNS server they ask.

Owns: starting and stopping each peer as its own process tree on loopback, its configuration
(a node.toml + policy for mxgate; a config_directory for Postfix configured as the same
locked-down server: see bench/postfix.py), and
telling where each peer puts delivered mail so the harness can count it (`delivered()`).
Must not know: load patterns, timing or the report. Imports only mxgate's own code, never tests/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GATEWAY = "127.0.0.10"  # the partner connector's address (the guide's "Third-party filter service")
ATTACKER = "127.0.0.66"
INTERNET = "127.0.0.77"
RECIPIENT = "alice@contoso.test"

# The guide's policy, as mxgate ships it (src/mxgate/examples/guide.toml).
GUIDE_POLICY = (REPO / "src" / "mxgate" / "examples" / "guide.toml").read_text()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_greeting(host: str, port: int, timeout: float = 30, proc: subprocess.Popen | None = None,
                  log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited ({proc.returncode}): {log.read_text()[-2000:] if log else ''}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if s.recv(512)[:1] in (b"2", b"5", b"4"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not greet within {timeout}s {log.read_text()[-2000:] if log else ''}")


def wait_workers(home: Path, log: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> int:
    """Wait until every process of a node (`[node] workers`) serves: the first prints its workers
    after spawning them, each writes its heartbeat row once it listens. A worker still importing
    would otherwise spend its start-up CPU inside the measured window. Returns the process count."""
    import re

    sys.path.insert(0, str(REPO / "src"))
    from mxgate.config.home import Home
    from mxgate.server.node import read_status
    from mxgate.store.db import open_engine

    end = time.monotonic() + timeout
    while "event loop:" not in log.read_text(errors="replace"):
        if time.monotonic() > end or (proc is not None and proc.poll() is not None):
            raise RuntimeError(f"the node did not finish starting: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    m = re.search(r"workers: +(\d+) more processes", log.read_text(errors="replace"))
    count = 1 + (int(m.group(1)) if m else 0)
    engine = open_engine(Home.open(home).database_url)
    try:
        while sum(1 for r in read_status(engine) if r["alive"]) < count:
            if time.monotonic() > end:
                raise RuntimeError(f"only some of {count} processes serve: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    finally:
        engine.dispose()
    return count


def server_loop() -> str:
    """uvloop for mxgate (and the null sink) when the `speed` extra is installed: same loop for both."""
    from importlib.util import find_spec

    return "uvloop" if find_spec("uvloop") else "asyncio"


def certificates(directory: Path):
    """A CA and a server certificate every peer presents (mxgate's own generator)."""
    sys.path.insert(0, str(REPO / "src"))
    from mxgate.server.tls import ensure_default_certificates

    directory.mkdir(parents=True, exist_ok=True)
    return ensure_default_certificates(directory, "mx.contoso.test")


@dataclass
class Peer:
    """One server under test: a name, a port, a process tree and a place where mail lands."""

    name: str
    root: Path
    port: int = 0
    durability: str = ""
    proc: subprocess.Popen | None = None

    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def maildir_new(self) -> Path | None:
        return None

    def received_file(self) -> Path | None:
        return None

    def quiesce(self, timeout: float) -> None:
        """Wait until mail accepted so far is in its final place (Postfix delivers after the 250)."""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class MxgatePeer(Peer):
    """`python -m mxgate serve` with a bench node.toml: the mailbox role only, caps raised for load."""

    reject_stage: str = "rcpt"
    dns: str = ""  # "host:port" of the bench DNS server; every message is authenticated through it
    cert: str = ""  # the bench certificate every peer presents (empty: mxgate's generated one)
    key: str = ""
    extra_toml: str = ""
    mailbox_toml: str = ""  # more [mailbox] lines (P3: non_routable without loopback)
    # [node] workers: processes sharing the listener (SO_REUSEPORT); None = the node's default
    # (one per core), as a fresh `mxgate serve` runs: P1's target is at the node's defaults.
    workers: int | None = None
    policy: str = GUIDE_POLICY
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.durability = "group commit: fdatasync + dir fsync before 250"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def start(self) -> "MxgatePeer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.apply_policy(self.policy)
        toml = f"""
[node]
name = "bench-{self.name}"
{"" if self.workers is None else f"workers = {self.workers}"}
[roles]
mailbox = true
gateway = false
submission = false
admin = false
[mailbox]
listen = ["127.0.0.1:{self.port}"]
hostname = "mx.contoso.test"
reject_stage = "{self.reject_stage}"
tls_cert = "{self.cert}"
tls_key = "{self.key}"
{self.mailbox_toml}
[mailbox.limits]
max_connections_per_ip = 20000
max_connections = 30000
[dns]
servers = [{f'"{self.dns}"' if self.dns else ''}]
timeout = 2.0
[log]
level = "warning"
{self.extra_toml}
"""
        (self.root / "node.toml").write_text(toml)
        self.proc = spawn_serve(self.root, self.home, self.env)
        wait_greeting("127.0.0.1", self.port, 60, self.proc, self.root / "serve.log")
        # At the node's defaults ([node] workers = one per core): measure once every process serves.
        self.processes = wait_workers(self.home, self.root / "serve.log", self.proc)
        return self

    def apply_policy(self, text: str) -> None:
        apply_policy(self.home, text)

    def maildir_new(self) -> Path:
        return self.home / "maildir" / RECIPIENT / "new"


def spawn_serve(root: Path, home: Path, env: dict | None = None) -> subprocess.Popen:
    # The benchmark machine runs as root; the node may stay root there (a service would use [node] user).
    env = dict(os.environ, MXGATE_HOME=str(home), PYTHONUNBUFFERED="1", MXGATE_NODE__ALLOW_ROOT="true", **(env or {}))
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with open(root / "serve.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "mxgate", "serve", "--config", str(root / "node.toml")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root))


def apply_policy(home: Path, text: str) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from mxgate.config.home import Home
    from mxgate.policy.document import load_toml
    from mxgate.store.db import open_engine
    from mxgate.store.policy_store import PolicyStore

    h = Home.open(home)
    engine = open_engine(h.database_url)
    try:
        return PolicyStore(engine).save(load_toml(text), actor="bench", summary="bench policy").version
    finally:
        engine.dispose()


@dataclass
class NullSinkPeer(Peer):
    """aiosmtpd answering 250 to everything and storing nothing (bench/nullsink.py)."""

    lose_every: int = 0  # test hook: store every message but the k-th, still answering 250
    store: bool = False

    def __post_init__(self):
        self.durability = "none (stores nothing)" if not self.store else "write, no fsync"

    def start(self, cert: Path, key: Path) -> "NullSinkPeer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        argv = [sys.executable, str(REPO / "bench" / "nullsink.py"), "--port", str(self.port),
                "--cert", str(cert), "--key", str(key), "--record", str(self.received_file())]
        if self.store:
            argv += ["--store", str(self.root / "maildir")]
        if self.lose_every:
            argv += ["--lose-every", str(self.lose_every)]
        with open(self.root / "sink.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_greeting("127.0.0.1", self.port, 30, self.proc, self.root / "sink.log")
        return self

    def received_file(self) -> Path:
        return self.root / "received.txt"

    def maildir_new(self) -> Path | None:
        return self.root / "maildir" / "new" if self.store else None

    def quiesce(self, timeout: float) -> None:
        # The sink appends what it received on SIGUSR1; wait for the file to grow past the marker.
        marker = self.received_file()
        before = marker.stat().st_mtime_ns if marker.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if marker.exists() and marker.stat().st_mtime_ns != before:
                return
            time.sleep(0.02)


@dataclass
class DnsServer:
    """`mxgate dev dns` (mxgate/devtools/dnsserver.py) in its own process, so its work never
    competes with the load client for the harness's GIL; `publish()` rewrites the zone file
    and has it reloaded (SIGHUP), returning once the new record is served."""

    root: Path
    port: int = 0
    records: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    lossy: bool = False  # P8: a quarter of queries dropped, negative answers without an SOA

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DnsServer":
        import json

        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_udp_port()
        (self.root / "zone.json").write_text(json.dumps(self.records))
        self.proc = subprocess.Popen([sys.executable, "-m", "mxgate", "dev", "dns", "--listen", self.address,
                                      "--zone", str(self.root / "zone.json"),
                                      *(["--drop", "0.25", "--no-negative-soa"] if self.lossy else [])],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "dns.log", "ab"))
        self._wait_served("__ready__.test", "A", expect=0)
        return self

    def publish(self, name: str, rtype: str, value: str) -> None:
        import json

        self.records.setdefault(name, {}).setdefault(rtype, []).append(value)
        (self.root / "zone.json").write_text(json.dumps(self.records))
        if self.proc:
            self.proc.send_signal(signal.SIGHUP)
            self._wait_served(name, rtype, expect=len(self.records[name][rtype]))

    def _wait_served(self, name: str, rtype: str, expect: int, timeout: float = 10.0) -> None:
        """Until the server answers with `expect` records for `name` (0: answers at all); no fixed
        sleeps. A lossy server drops some of these questions too: each is simply asked again."""
        import dns.exception
        import dns.message
        import dns.query

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                reply = dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1", port=self.port, timeout=0.5)
                if sum(len(r) for r in reply.answer) >= expect:
                    return
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"DNS server on {self.address} did not serve {name} {rtype} within {timeout:g}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What the sender's domain publishes in every scenario: SPF covering loopback, DMARC p=none.
SENDER_RECORDS = {
    "fabrikam.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
    "_dmarc.fabrikam.test": {"TXT": ["v=DMARC1; p=none"]},
}
