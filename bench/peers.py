"""The servers a benchmark measures side by side: mxgate (`mxgate serve`), Postfix, an aiosmtpd null sink.

Owns: starting and stopping each peer as its own process tree on loopback, its configuration
(a node.toml + policy for mxgate; a config_directory for Postfix configured as the same
locked-down server: cidr lock-down of the gateway address, TLS offered, virtual Maildir), and
telling where each peer puts delivered mail so the harness can count it (`delivered()`).
Must not know: load patterns, timing or the report. Imports only mxgate's own code, never tests/.
"""

from __future__ import annotations

import os
import shutil
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
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
NOBODY = 65534  # virtual(8) refuses to deliver as root: Maildirs belong to nobody

GUIDE_POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[mailbox]]
address = "alice@contoso.test"

[[inbound_connector]]
name = "Third-party filter service"
type = "partner"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.10"]
restrict_domains_to_ip_addresses = true
require_tls = true
"""


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


def server_loop() -> str:
    """uvloop for mxgate (and the null sink) when the `speed` extra is installed: same loop for both."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


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
event_loop = "{server_loop()}"
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
        return self

    def apply_policy(self, text: str) -> None:
        apply_policy(self.home, text)

    def maildir_new(self) -> Path:
        return self.home / "maildir" / RECIPIENT / "new"


def spawn_serve(root: Path, home: Path, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, MXGATE_HOME=str(home), PYTHONUNBUFFERED="1", **(env or {}))
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


POSTFIX_MASTER = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixPeer(Peer):
    """Debian's Postfix in its own config_directory: the same lock-down, virtual Maildir delivery."""

    reject_stage: str = "rcpt"

    def __post_init__(self):
        self.durability = "queue fsync before 250; Maildir fsync after"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def start(self, cert: Path, key: Path) -> "PostfixPeer":
        if not Path(POSTFIX).exists():
            raise RuntimeError("postfix is not installed: run scripts/install-system-deps.sh")
        self.port = self.port or free_port()
        for d in ("etc", "spool", "data", "vmail"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        p = self.root  # the postfix user must be able to traverse to its queue and the Maildirs
        while p != p.parent:
            if str(p).startswith("/tmp") or p == self.root:
                os.chmod(p, os.stat(p).st_mode | 0o755)
            p = p.parent
        shutil.chown(self.root / "data", "postfix", "postfix")
        os.chown(self.root / "vmail", NOBODY, NOBODY)
        # Postfix reads the key as root before dropping privileges; a private copy keeps modes sane.
        shutil.copy(cert, self.etc / "cert.pem")
        shutil.copy(key, self.etc / "key.pem")
        (self.etc / "lockdown.cidr").write_text(f"{GATEWAY}/32 OK\n0.0.0.0/0 REJECT 5.7.51 bypass refused\n")
        (self.etc / "vmailbox").write_text(f"{RECIPIENT} contoso.test/alice/\n")
        # "connect" stage: refuse in the greeting (smtpd_delay_reject = no refuses at connect).
        delay = "no" if self.reject_stage == "connect" else "yes"
        r = self.root
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
config_directory = {r / 'etc'}
queue_directory = {r / 'spool'}
data_directory = {r / 'data'}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydomain = postfix.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
maillog_file_prefixes = {r}
maillog_file = {r / 'maillog'}
syslog_name = postfix-bench
alias_maps =
alias_database =
local_recipient_maps =
smtpd_delay_reject = {delay}
smtpd_client_restrictions = check_client_access cidr:{self.etc / 'lockdown.cidr'}, reject
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_cert_file = {self.etc / 'cert.pem'}
smtpd_tls_key_file = {self.etc / 'key.pem'}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
virtual_mailbox_domains = contoso.test
virtual_mailbox_base = {r / 'vmail'}
virtual_mailbox_maps = texthash:{self.etc / 'vmailbox'}
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
virtual_destination_concurrency_limit = 20
""")
        (self.etc / "master.cf").write_text(POSTFIX_MASTER.format(listen=f"127.0.0.1:{self.port}"))
        self._postfix("start")
        wait_greeting("127.0.0.1", self.port, 30, None, self.root / "maillog")
        self.proc = None
        return self

    def _postfix(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            log = (self.root / "maillog").read_text(errors="replace")[-2000:] if (self.root / "maillog").exists() else ""
            raise RuntimeError(f"postfix {' '.join(args)} failed: {proc.stdout}{proc.stderr}\n{log}")
        return proc.stdout

    def pid(self) -> int:
        try:
            return int((self.root / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def maildir_new(self) -> Path:
        return self.root / "vmail" / "contoso.test" / "alice" / "new"

    def queue_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            d = self.root / "spool" / sub
            if d.exists() and any(True for _ in os.scandir(d) if True):
                for entry in os.walk(d):
                    if entry[2]:
                        return False
        return True

    def quiesce(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.queue_empty():
            time.sleep(0.05)

    def stop(self) -> None:
        master = self.pid()
        self._postfix("stop", check=False)
        end = time.monotonic() + 15
        while master and time.monotonic() < end:
            try:
                os.kill(master, 0)
            except OSError:
                return
            time.sleep(0.05)


@dataclass
class DnsServer:
    """bench/dnszone.py in its own process; `publish()` rewrites the zone and reloads it."""

    root: Path
    port: int = 0
    records: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DnsServer":
        import json

        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_udp_port()
        (self.root / "zone.json").write_text(json.dumps(self.records))
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "dnszone.py"), "--port", str(self.port),
                                      "--zone", str(self.root / "zone.json")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "dns.log", "ab"))
        time.sleep(0.3)
        return self

    def publish(self, name: str, rtype: str, value: str) -> None:
        import json

        self.records.setdefault(name, {}).setdefault(rtype, []).append(value)
        (self.root / "zone.json").write_text(json.dumps(self.records))
        if self.proc:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

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
