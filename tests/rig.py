"""The test rig every end-to-end test reuses: loopback hosts, a throwaway CA, running nodes,
a raw SMTP client that binds a source address.

Hosts (all on loopback; Linux lets a client bind any 127.0.0.0/8 address):
GATEWAY 127.0.0.10, PARTNER 127.0.0.20, INTERNET 127.0.0.77 (an Internet sender),
ATTACKER 127.0.0.66, PRINTER 127.0.0.30; IPv6 uses ::1.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxgate.config.home import Home
from mxgate.config.node import NodeSettings, load_settings
from mxgate.policy.document import load_toml
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore

GATEWAY = "127.0.0.10"
GATEWAY2 = "127.0.0.11"
PARTNER = "127.0.0.20"
PRINTER = "127.0.0.30"
ATTACKER = "127.0.0.66"
INTERNET = "127.0.0.77"

REPO = Path(__file__).resolve().parent.parent

# The guide's policy: Contoso behind the "Third-party filter service" gateway.
# The guide's policy: Contoso behind the "Third-party filter service" gateway (the sample
# policy a first start applies; one source for the product, the tests and the benchmark).
GUIDE_POLICY = (Path(__file__).resolve().parent.parent / "src" / "mxgate" / "examples" / "guide.toml").read_text()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


TEST_ACCOUNT = "mxgate-test"  # the unprivileged system account privilege tests drop to


def ensure_test_account():
    """pwd entry of TEST_ACCOUNT, created if missing (scripts/install-system-deps.sh creates it too)."""
    import pwd

    try:
        return pwd.getpwnam(TEST_ACCOUNT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_ACCOUNT], check=True)
        return pwd.getpwnam(TEST_ACCOUNT)


def apply_policy(home: Home, toml_text: str, actor: str = "test") -> int:
    engine = open_engine(home.database_url)
    try:
        pv = PolicyStore(engine).save(load_toml(toml_text), actor=actor, summary="test policy")
    finally:
        engine.dispose()  # no open database files left behind (tests unmount filesystems)
    return pv.version


# --- nodes -------------------------------------------------------------------------------------

class InProcessNode:
    """A Node running on its own event loop in a background thread (tests stay synchronous)."""

    def __init__(self, settings: NodeSettings, home: Home):
        from mxgate.server.node import Node

        self.node = Node(settings, home)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.node.start())
        except BaseException as exc:  # surfaced to the test by start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()  # its selector and self-pipe: a suite starts a thousand nodes

    def start(self) -> "InProcessNode":
        self._thread.start()
        self._started.wait(30)
        if self._error:
            raise self._error
        return self

    def call(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._error is None and self.loop.is_running():
            try:
                self.call(self.node.stop(deadline=2.0))
                self.call(_cancel_leftover_tasks())
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)

    def port(self, role: str = "mailbox") -> int:
        return int(self.node.listeners[role].addresses[0].rsplit(":", 1)[1])

    @property
    def trace(self):
        return self.node.trace


async def _cancel_leftover_tasks() -> None:
    """Sessions still delivering when a test ends are cancelled, not destroyed mid-flight."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def node_settings(tmp: Path, **sections: dict) -> NodeSettings:
    """Settings for a test node: only the roles asked for, listeners on free loopback ports."""
    base: dict[str, dict] = {
        "roles": {"mailbox": True, "gateway": False, "submission": False, "admin": False},
        "mailbox": {"listen": [f"127.0.0.1:{free_port()}", f"[::1]:{free_port('::1')}"]},
    }
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    overrides = {f"{section}.{k}": v for section, values in base.items() for k, v in values.items()}
    return load_settings(None, overrides)


@dataclass
class SubprocessNode:
    """`mxgate serve` as a real process (kill -9 tests)."""

    home: Path
    config: Path
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self):
        self.log = self.home / "serve.log"

    def start(self, wait_for: tuple[str, int] | None = None, timeout: float = 20) -> "SubprocessNode":
        env = dict(os.environ, MXGATE_HOME=str(self.home), PYTHONUNBUFFERED="1")
        if "workers" not in self.config.read_text():
            # One process unless the test asks for more: the default is one per core, and a
            # test's counters, logs and kill -9 are about one process.
            env.setdefault("MXGATE_NODE__WORKERS", "1")
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "mxgate", "serve", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_for:
            wait_port(*wait_for, timeout=timeout, proc=self.proc, log=self.log)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_port(host: str, port: int, timeout: float = 20, proc=None, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text()[-2000:] if log else ''}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open in {timeout}s")


# --- a raw SMTP client ------------------------------------------------------------------------

class RawSMTP:
    """Line-level SMTP client over a real socket bound to `source`; sends exactly the bytes given."""

    def __init__(self, host: str, port: int, source: str | None = None, timeout: float = 10):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.host = host
        self._buf = b""
        self.tls = False

    def read_reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\r\n" not in self._buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; partial reply {lines!r} {self._buf!r}")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line + "\r\n")
        return self.read_reply()

    def greeting(self) -> tuple[int, str]:
        return self.read_reply()

    def starttls(self, ca_file: str | None = None, cert: str | None = None, key: str | None = None) -> tuple[int, str]:
        code, text = self.cmd("STARTTLS")
        if code != 220:
            return code, text
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()
        ctx.check_hostname = False
        if cert:
            ctx.load_cert_chain(cert, key)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.tls = True
        return code, text

    def closed(self, wait: float = 2.0) -> bool:
        """True if the server closed the connection (EOF) within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send_message(host: str, port: int, *, source: str, sender: str, rcpts: list[str], data: bytes,
                 tls: bool = True, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 ehlo: str = "client.test") -> dict[str, Any]:
    """One full transaction; returns every reply so tests can assert the stage that refused."""
    result: dict[str, Any] = {"rcpt": []}
    with RawSMTP(host, port, source) as c:
        result["greeting"] = c.greeting()
        if result["greeting"][0] != 220:
            return result
        result["ehlo"] = c.cmd(f"EHLO {ehlo}")
        if tls:
            result["starttls"] = c.starttls(ca, cert, key)
            result["ehlo2"] = c.cmd(f"EHLO {ehlo}")
        result["mail"] = c.cmd(f"MAIL FROM:<{sender}>")
        if result["mail"][0] != 250:
            c.cmd("QUIT")
            return result
        for r in rcpts:
            result["rcpt"].append(c.cmd(f"RCPT TO:<{r}>"))
        if not any(code == 250 for code, _ in result["rcpt"]):
            c.cmd("QUIT")
            return result
        result["data"] = c.cmd("DATA")
        if result["data"][0] == 354:
            body = data.replace(b"\r\n.", b"\r\n..")
            if body.startswith(b"."):
                body = b"." + body
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            c.send(body + b".\r\n")
            result["end"] = c.read_reply()
        c.cmd("QUIT")
    return result


def simple_message(subject: str = "test", sender: str = "sender@fabrikam.test", to: str = "alice@contoso.test",
                   body: str = "Hello.") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{time.time_ns()}@fabrikam.test>\r\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\n{body}\r\n").encode()


def maildir_messages(home: Home, address: str, folder: str | None = None) -> list[bytes]:
    base = home.maildir / address.lower()
    if folder:
        base = base / f".{folder}"
    new = base / "new"
    if not new.exists():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- a recording SMTP server (a downstream, or an Internet MX, in tests) ----------------------

class RecordingSink:
    """A tiny SMTP server on loopback with STARTTLS that records each transaction.

    Each message is a dict: sender, rcpts, tls (whether the session was encrypted) and raw — the
    DATA bytes exactly as sent (dot-stuffed, with the terminator), or with `unstuff` the message
    as stored. `refuse` maps a recipient to the reply line for its RCPT ("550 5.1.1 ...");
    `peers` lists each connection's source address. Knobs for the downstream's own replies:
    `greeting` (e.g. "421 ..." closes at once), `final` (the reply after the message; a message is
    recorded only under a 250) and `hold` — when set to an Event, the reply after the message waits
    for it (the message is recorded first, as a server that committed it would have). `got_data` is
    set each time a message has arrived.
    """

    def __init__(self, cert: str, key: str, host: str = "127.0.0.1", port: int = 0, *, unstuff: bool = False,
                 name: str = "sink"):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(20)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.unstuff, self.name = unstuff, name
        self.messages: list[dict] = []
        self.refuse: dict[str, str] = {}
        self.max_rcpts = 0  # > 0: RCPTs beyond this many per transaction get 452 4.5.3
        self.smtputf8 = False  # offer SMTPUTF8 (RFC 6531) after STARTTLS
        self.offer_starttls = True  # False: a server without STARTTLS (opportunistic TLS falls back)
        self.peers: list[str] = []
        self.greeting = f"220 {name} ESMTP"
        self.final = "250 stored"
        self.hold: threading.Event | None = None
        self.got_data = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn) -> None:
        f = conn.makefile("rb")

        def w(line: str) -> None:
            conn.sendall(line.encode() + b"\r\n")

        w(self.greeting)
        if not self.greeting.startswith("220"):
            conn.close()
            return
        txn: dict = {"rcpts": []}
        tls = False
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", errors="replace").strip()
                verb = cmd[:4].upper()
                if verb == "EHLO":
                    utf8 = "\r\n250-SMTPUTF8" if self.smtputf8 else ""
                    w(f"250-{self.name}{utf8}\r\n250 PIPELINING" if tls or not self.offer_starttls
                      else f"250-{self.name}\r\n250-PIPELINING\r\n250 STARTTLS")
                elif verb == "STAR":
                    w("220 go")
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    f, tls = conn.makefile("rb"), True
                elif verb == "MAIL":
                    txn = {"sender": cmd[10:].split(">")[0].lstrip("<"), "rcpts": [], "tls": tls}
                    w("250 ok")
                elif verb == "RCPT":
                    addr = cmd[8:].split(">")[0].lstrip("<")
                    if addr in self.refuse:
                        w(self.refuse[addr])
                    elif self.max_rcpts and len(txn["rcpts"]) >= self.max_rcpts:
                        w("452 4.5.3 Too many recipients")
                    else:
                        txn["rcpts"].append(addr)
                        w("250 ok")
                elif verb == "DATA" and not txn["rcpts"]:
                    w("554 5.5.1 no valid recipients")  # RFC 2920 §3.1: what a pipelining client relies on
                elif verb == "DATA":
                    w("354 go")
                    raw = b""
                    while not raw.endswith(b"\r\n.\r\n") and raw != b".\r\n":
                        chunk = f.readline()
                        if not chunk:
                            return
                        raw += chunk
                    txn["raw"] = raw[:-5].replace(b"\r\n..", b"\r\n.") + b"\r\n" if self.unstuff else raw
                    final, hold = self.final, self.hold
                    if final.startswith("250"):
                        self.messages.append(txn)
                    self.got_data.set()
                    if hold is not None:
                        hold.wait(60)
                    w(final)
                elif verb == "QUIT":
                    w("221 bye")
                    return
                else:
                    w("250 ok")
        except OSError:
            return
        finally:
            conn.close()


def MxSink(cert: str, key: str, name: str = "mx.external.test") -> RecordingSink:
    """An Internet mail server on <random loopback address>:25 with STARTTLS (MX lookups go to
    port 25), recording each message as stored."""
    for _ in range(20):
        host = f"127.0.{random.randint(100, 250)}.{random.randint(2, 250)}"
        try:
            return RecordingSink(cert, key, host, 25, unstuff=True, name=name)
        except OSError:
            continue
    raise RuntimeError("no free loopback address for port 25")


async def read_reply(reader) -> str:
    """One SMTP reply (every line of a multi-line one) from an asyncio StreamReader."""
    import asyncio

    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode()
        lines.append(line)
        if line[3:4] != "-":
            return "".join(lines)


async def until_state(predicate, limit: int = 10_000) -> None:
    """Wait on state inside the event loop, yielding to it; never a clock."""
    import asyncio

    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("state not reached")


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that other users may not enter, if any."""
    return next((p for p in reversed(path.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001), None)


def visible_python(scratch: Path) -> list[str]:
    """A command prefix that lets an unprivileged account run this Python and this checkout.

    What the node needs may live below directories only root may enter: the interpreter
    (/root/.pyenv), a virtual environment's or the checkout's own folder (a clone below /root).
    In a private mount namespace each such directory is covered by an open tmpfs holding just the
    trees needed, so the node itself changes nothing on the machine."""
    import mxgate

    needed = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent,
              Path(mxgate.__file__).resolve().parents[1]}
    keeps: dict[Path, set[str]] = {}
    for path in needed:
        closed = _closed_ancestor(path)
        if closed is not None:
            keeps.setdefault(closed, set()).add(path.relative_to(closed).parts[0])
    # A closed directory inside another one's kept tree is covered after it (outermost first).
    steps = []
    for n, (closed, names) in enumerate(sorted(keeps.items(), key=lambda kv: len(kv[0].parts))):
        stashes = []
        for m, name in enumerate(sorted(names)):
            stash = scratch / f"stash{n}-{m}"
            stash.mkdir(exist_ok=True)
            stashes.append((name, stash))
            steps.append(f'mount --bind "{closed / name}" "{stash}"')
        steps.append(f'mount -t tmpfs -o mode=755 tmpfs "{closed}"')
        for name, stash in stashes:
            steps.append(f'mkdir "{closed / name}"; mount --bind "{stash}" "{closed / name}"')
    if not steps:
        return []
    script = "set -e; " + "; ".join(steps) + '; exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
