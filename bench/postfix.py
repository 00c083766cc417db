"""Postfix as a benchmark peer: Debian's postfix in its own config_directory on a loopback port.

Owns: the configuration that makes Postfix the same locked-down mailbox server as mxgate — a cidr
table admitting only the gateway address then REJECT (at RCPT by default, in the greeting with
reject_stage "connect"), STARTTLS offered with the bench certificate, virtual(8) Maildir
delivery as an unprivileged uid (Postfix runs as root here and virtual refuses root) — plus
start, stop and knowing when its queue has drained (it delivers after the 250).
Must not know: load patterns or the report. Needs scripts/install-system-deps.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from peers import GATEWAY, RECIPIENT, Peer, free_port, wait_greeting

from mxgate.devtools.postfix import BASE_MASTER_CF

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
NOBODY = 65534  # virtual(8) refuses to deliver as root: Maildirs belong to nobody

# Debian's service list shared with the tests' Postfix; smtpd on the bench's listener first.
POSTFIX_MASTER = "{listen} inet n - n - - smtpd\n" + BASE_MASTER_CF.replace("{", "{{").replace("}", "}}")


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
