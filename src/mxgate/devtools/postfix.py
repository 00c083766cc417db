"""A real Postfix for tests and the benchmark: its own config_directory, queue_directory and data_directory under a
temporary directory, SMTP services on loopback ports, started and stopped by the test.

Reusable by any test (export, probe, benchmarks): pass extra main.cf text, extra master.cf
lines and table files; hash: tables named in the main.cf text are compiled with postmap.
Postfix runs as root here; its daemons drop to the `postfix` user, so the tmp tree is made
reachable for it. Needs Debian's postfix (scripts/install-system-deps.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"

# The services every instance needs besides smtpd (Debian's master.cf, chroot off so nothing
# has to be copied into the queue directory).
BASE_MASTER_CF = """\
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
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def base_main_cf(root: Path, hostname: str = "mx.postfix.test") -> str:
    """Instance settings: where this instance lives, who it is, no DNS, log to a file."""
    return f"""\
compatibility_level = 3.6
config_directory = {root / 'etc'}
queue_directory = {root / 'spool'}
data_directory = {root / 'data'}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = all
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
maillog_file_prefixes = {root}
maillog_file = {root / 'maillog'}
syslog_name = postfix-test-{root.name}
alias_maps =
alias_database =
local_recipient_maps =
"""


@dataclass
class PostfixInstance:
    # None: a fresh directory under /tmp, removed by stop(). Postfix's daemons run as `postfix`
    # (and virtual delivery as `nobody`), so the tree must be reachable by them: pytest's own
    # tmp directories are 0700 and re-chmodded by every concurrent pytest session.
    root: Path | None = None
    main_cf: str = ""  # appended to the base settings
    master_cf: str = ""  # appended to the base services (the smtpd listeners)
    tables: dict[str, str] = field(default_factory=dict)  # file name in etc/ → content
    hostname: str = "mx.postfix.test"
    running: bool = False
    owns_root: bool = False

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mxgate-postfix-"))
            os.chmod(self.root, 0o755)
            self.owns_root = True

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def write(self) -> "PostfixInstance":
        for d in ("etc", "spool", "data"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # data_directory belongs to the mail_owner (master.lock, TLS caches); postfix check fixes the queue.
        shutil.chown(self.root / "data", "postfix", "postfix")
        main = base_main_cf(self.root, self.hostname) + "\n" + self.main_cf
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(BASE_MASTER_CF + "\n" + self.master_cf)
        for name, text in self.tables.items():
            (self.etc / name).write_text(text)
        for name in sorted(set(re.findall(r"hash:\$\{?config_directory\}?/([\w.-]+)", main))):
            self._run([POSTMAP, "-c", str(self.etc), f"hash:{self.etc / name}"])
        return self

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{self.log_tail()}")
        return proc

    def check(self) -> str:
        """`postfix check`: returns its output (warnings); raises when it fails."""
        proc = self._run([POSTFIX, "-c", str(self.etc), "check"])
        return proc.stdout + proc.stderr

    def start(self, wait_for: list[tuple[str, int]] = (), timeout: float = 20) -> "PostfixInstance":
        self._run([POSTFIX, "-c", str(self.etc), "start"])
        self.running = True
        for host, port in wait_for:
            wait_smtp(host, port, timeout, self)
        return self

    def stop(self) -> None:
        if self.running:
            self._run([POSTFIX, "-c", str(self.etc), "stop"], check=False)
            self.running = False
            # master exits asynchronously; wait for its pid file lock to go so the port is free.
            pid = self.root / "spool" / "pid" / "master.pid"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.05)
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def postconf(self, name: str) -> str:
        return self._run(["postconf", "-c", str(self.etc), "-h", name]).stdout.strip()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def wait_smtp(host: str, port: int, timeout: float, instance: PostfixInstance | None = None) -> None:
    """Wait until the listener sends a greeting."""
    import socket

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                # Any greeting counts: a lock-down at connect answers 554 instead of 220.
                if re.match(rb"^[2-5][0-9][0-9][ -]", s.recv(512)):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"postfix on {host}:{port} did not greet ({last})\n"
                       f"{instance.log_tail() if instance else ''}")


def smtpd_service(listen: str, *options: str) -> str:
    """One master.cf smtpd line for `host:port` / `[v6]:port`, with -o overrides."""
    opts = "".join(f"\n  -o {o}" for o in options)
    return f"{listen} inet n - n - - smtpd{opts}\n"
