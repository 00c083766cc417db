"""Fixtures for the gateway tests: a mailbox server, a gateway in front of it, DNS, clamd, a sink."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import rig
from rig import GATEWAY, RecordingSink, free_port

from mxgate.filters.result import MessageFacts
from mxgate.smtp.source import MessageSource

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

# Fast retries so queue tests finish in seconds; every value is a [gateway] setting.
FAST_QUEUE = {"retry_first": 0.3, "retry_max_backoff": 1.0, "host_backoff": 0.2, "queue_scan_interval": 0.1,
              "relay_connect_timeout": 2.0, "relay_timeout": 10.0}


def gateway_toml(port: int, downstream: str, ca, dns, node: str = "", **queue) -> str:
    """node.toml of a gateway-only `mxgate serve` relaying to `downstream` from the gateway address,
    with the fast queue timings (`queue` overrides or adds [gateway] keys; `node`: [node] lines)."""
    fast = "\n".join(f"{k} = {v}" for k, v in {**FAST_QUEUE, **queue}.items())
    return f"""
{"[node]" + chr(10) + node if node else ""}
[roles]
mailbox = false
gateway = true
admin = false
[gateway]
listen = ["{GATEWAY}:{port}"]
downstream = ["{downstream}"]
downstream_ca = "{ca}"
source_address = "{GATEWAY}"
{fast}
[dns]
servers = ["{dns.address}"]
timeout = 2.0
"""


def gateway_policy(checks: str = "", base: str = rig.GUIDE_POLICY) -> str:
    """The guide's policy plus [gateway.<check>] tables; rDNS/SPF only tag unless a test says otherwise."""
    return base + "\n" + checks


MAILBOX_POLICY = rig.GUIDE_POLICY.replace('authserv_id = "mx.contoso.test"',
                                          'authserv_id = "mx.contoso.test"\narc_trusted_sealers = ["mxgate.test"]')


@pytest.fixture
def mailbox(node_factory, dns):
    """The locked-down mailbox server; it trusts the gateway's ARC sealer and asks the test DNS."""
    return node_factory(MAILBOX_POLICY, dns={"servers": [dns.address], "timeout": 2.0})


@pytest.fixture
def make_gateway(node_factory, dns, mailbox):
    """make_gateway(checks_toml="", downstream=None, **gateway_settings) -> InProcessNode."""

    def make(checks: str = "", downstream: list[str] | None = None, policy: str | None = None, **gw) -> rig.InProcessNode:
        settings = {"listen": [f"{GATEWAY}:{free_port(GATEWAY)}"],
                    "downstream": downstream if downstream is not None else [f"127.0.0.1:{mailbox.port()}"],
                    "downstream_ca": str(mailbox.node.certs.ca_cert), "source_address": GATEWAY,
                    "hostname": "gw.contoso.test", **FAST_QUEUE, **gw}
        node = node_factory(policy or gateway_policy(checks), roles={"mailbox": False, "gateway": True},
                            gateway=settings, dns={"servers": [dns.address], "timeout": 2.0})
        publish_arc_key(dns, node)
        return node

    return make


def publish_arc_key(dns, node) -> None:
    g = node.node.settings.gateway
    txt = (node.home.keys / f"arc-{g.arc_selector}.txt").read_text()
    dns.add(f"{g.arc_selector}._domainkey.{g.arc_domain}", "TXT", txt)


def gw_port(node) -> int:
    return node.port("gateway")


def spool_count(node) -> int:
    return node.node.roles["gateway"].sv.spool.count()


# --- a recording SMTP sink (downstream stand-in for DSN and byte-level tests) -----------------

def Sink(cert: str, key: str, host: str = "127.0.0.1", port: int = 0) -> RecordingSink:
    """The downstream stand-in for DSN and byte-level tests: raw DATA bytes as sent."""
    return RecordingSink(cert, key, host, port)


@pytest.fixture
def sink(test_ca):
    s = Sink(test_ca["server_cert"], test_ca["server_key"])
    yield s
    s.close()


# --- clamd ------------------------------------------------------------------------------------

@pytest.fixture
def internet_mx(test_ca, dns):
    """fabrikam.test's MX (where DSNs to fabrikam senders go): a recording server on a loopback
    address, port 25."""
    mx = rig.MxSink(test_ca["server_cert"], test_ca["server_key"], name="mx.fabrikam.test")
    dns.add("fabrikam.test", "MX", (10, "mx.fabrikam.test"))
    dns.add("mx.fabrikam.test", "A", mx.host)
    yield mx
    mx.close()


@pytest.fixture(scope="session")
def clamd_socket(tmp_path_factory):
    """Debian's clamd with a one-line local signature database detecting EICAR (no network)."""
    exe = shutil.which("clamd") or "/usr/sbin/clamd"
    if not Path(exe).exists():
        pytest.fail("clamd is not installed: run scripts/install-system-deps.sh")
    d = tmp_path_factory.mktemp("clamd")
    (d / "db").mkdir()
    (d / "db" / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Mxgate.Test.EICAR\n")
    sock = d / "clamd.sock"
    conf = d / "clamd.conf"
    conf.write_text(f"DatabaseDirectory {d / 'db'}\nLocalSocket {sock}\nForeground true\nLogFile {d / 'clamd.log'}\n"
                    f"PidFile {d / 'clamd.pid'}\nTemporaryDirectory {d}\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    end = time.monotonic() + 60
    while time.monotonic() < end and not sock.exists():
        if proc.poll() is not None:
            pytest.fail(f"clamd exited: {(d / 'clamd.log').read_text() if (d / 'clamd.log').exists() else ''}")
        time.sleep(0.1)
    yield str(sock)
    proc.terminate()
    proc.wait(10)


# --- a clamd that holds every scan until told (checks in flight, deterministically) -----------

class HoldingClamd:
    """A UNIX-socket clamd stand-in: reads each zINSTREAM to its end, counts it in `scans`, then
    answers "stream: OK" only once `release` is set. `closed` counts scans whose client went away."""

    def __init__(self, path: str):
        import socket
        import threading

        self.path = path
        self.release = threading.Event()
        self.scans = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(64)
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn) -> None:
        import struct

        with conn:
            buf = b""
            while True:  # "zINSTREAM\0", then length-prefixed chunks up to a zero length
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                if buf.startswith(b"zINSTREAM\0"):
                    pos = len(b"zINSTREAM\0")
                    done = False
                    while pos + 4 <= len(buf):
                        (n,) = struct.unpack("!I", buf[pos:pos + 4])
                        if n == 0:
                            done = True
                            break
                        if pos + 4 + n > len(buf):
                            break
                        pos += 4 + n
                    if done:
                        break
            with self._lock:
                self.scans += 1
            conn.settimeout(0.05)
            while not self.release.is_set():
                try:
                    if conn.recv(1) == b"":  # the gateway gave up on this scan
                        with self._lock:
                            self.closed += 1
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return
            try:
                conn.sendall(b"stream: OK\0")
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.release.set()
        self._sock.close()


@pytest.fixture
def holding_clamd(tmp_path):
    c = HoldingClamd(str(tmp_path / "hold.sock"))
    yield c
    c.close()


def message_facts(message: bytes, client: str, *, spooled: bool = False) -> MessageFacts:
    """The checks' facts for `message` from `client` (a@fabrikam.test → b@contoso.test); `spooled`
    keeps the body in a file, as a large DATA is kept."""
    if not spooled:
        source = MessageSource.from_bytes(message)
    else:
        fh = tempfile.TemporaryFile()
        fh.write(message)
        fh.flush()
        source = MessageSource(b"", fd=os.dup(fh.fileno()), size=len(message))
        fh.close()
    return MessageFacts(client, "mail.fabrikam.test", "a@fabrikam.test", ("b@contoso.test",), source.split_head(65536))
