"""Issue 19: a gateway node uses every core. `[node] workers` processes accept on the gateway's
port, each queueing into its own spool directory (spool/gateway, spool/gateway-w<N>) with its own
lock and runner. Real `mxgate serve` processes, real sockets on loopback, a real downstream:
every acknowledged message reaches the downstream exactly once, through a worker's kill -9, a
restart with fewer workers, and the queue CLI acting on a worker's spool."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest
import rig
from gwkit import gateway_policy, gateway_toml
from rig import GATEWAY, INTERNET, RecordingSink, SubprocessNode, free_port, send_message, simple_message, wait_until

from mxgate.config.home import Home
from mxgate.queue.spool import entries_on_disk, process_spools, spool_owned


def _config(port: int, downstream: str, ca: str, dns, workers: int, **extra) -> str:
    return gateway_toml(port, downstream, ca, dns, node=f'name = "gw"\nworkers = {workers}', **extra)


class GatewayProcesses:
    """A gateway-only `mxgate serve` with `workers` processes, and what the tests look at."""

    def __init__(self, tmp_path, dns, downstream: str, ca: str, workers: int = 2, **extra):
        self.home = Home.open(tmp_path / "gw")
        rig.apply_policy(self.home, gateway_policy())
        self.port = free_port(GATEWAY)
        self.config = tmp_path / "gw.toml"
        self.dns, self.downstream, self.ca, self.extra = dns, downstream, ca, extra
        self.node: SubprocessNode | None = None
        self.start(workers)

    def start(self, workers: int) -> "GatewayProcesses":
        self.workers = workers
        self.config.write_text(_config(self.port, self.downstream, self.ca, self.dns, workers, **self.extra))
        self.node = SubprocessNode(self.home.root, self.config).start(wait_for=(GATEWAY, self.port))
        # Every worker has recovered and locked its spool and listens (it heartbeats after both).
        assert wait_until(lambda: self.serving() == {"gw", *(f"gw-w{i}" for i in range(1, workers))}, timeout=30), \
            (self.serving(), self.node.log.read_text()[-3000:])
        return self

    def serving(self) -> set[str]:
        from mxgate.server.node import read_status
        from mxgate.store.db import open_engine

        try:
            engine = open_engine(self.home.database_url)
        except Exception:
            return set()
        try:
            rows = read_status(engine)
        except Exception:
            return set()
        finally:
            engine.dispose()  # a connection left open here kept reading the killed node's rows
        return {r["name"] for r in rows if r["alive"] and "gateway" in r["roles"]}

    def spool(self, index: int):
        return self.home.spool / ("gateway" if index == 0 else f"gateway-w{index}")

    def queued(self, index: int) -> list:
        return entries_on_disk(self.spool(index))

    def all_queued(self) -> list:
        return [e for _, root in process_spools(self.home.spool, "gateway") for e in entries_on_disk(root)]

    def database_rows(self) -> int:
        """Rows of the database queue (`queue = "database"`; every process leases from it)."""
        from sqlalchemy import func, inspect, select

        from mxgate.queue.dbspool import gateway_queue
        from mxgate.store.db import open_engine

        engine = open_engine(self.home.database_url)
        try:
            if not inspect(engine).has_table("gateway_queue"):
                return 0
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(gateway_queue)).scalar()
        finally:
            engine.dispose()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.node.proc.pid)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mxgate", "--home", str(self.home.root), *args],
                              capture_output=True, text=True, timeout=60)

    def send(self, subject: str) -> bool:
        """One message in its own connection (the kernel spreads connections over the processes)."""
        r = send_message(GATEWAY, self.port, source=INTERNET, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                         data=simple_message(subject=subject))
        return r.get("end", (0,))[0] == 250

    def send_until(self, predicate, prefix: str, limit: int = 400) -> list[str]:
        """Messages, one per connection, until `predicate()` holds (both processes got some)."""
        acked = []
        for i in range(limit):
            if self.send(f"{prefix}-{i}"):
                acked.append(f"{prefix}-{i}")
            if predicate():
                return acked
        raise AssertionError(f"no spread over the processes after {limit} messages: "
                             f"{[len(self.queued(i)) for i in range(self.workers)]}")

    def stop(self) -> None:
        if self.node:
            self.node.stop()


def _subjects(sink: RecordingSink) -> Counter:
    return Counter(email.message_from_bytes(m["raw"])["Subject"] for m in sink.messages)


@pytest.fixture
def down(test_ca):
    """A downstream address with nothing listening yet: mail stays in the spools until `up()`."""
    port = free_port()
    state = {}

    def up() -> RecordingSink:
        state["sink"] = RecordingSink(test_ca["server_cert"], test_ca["server_key"], "127.0.0.1", port, unstuff=True)
        return state["sink"]

    yield f"127.0.0.1:{port}", up
    if "sink" in state:
        state["sink"].close()


@pytest.mark.parametrize("queue", ["disk", "database"])
def test_two_processes_share_the_gateway_port_and_deliver_every_message_once(tmp_path, dns, mailbox, queue):
    gw = GatewayProcesses(tmp_path, dns, f"127.0.0.1:{mailbox.port()}", str(mailbox.node.certs.ca_cert),
                          queue=f'"{queue}"')
    try:
        acked = [f"spread-{i}" for i in range(30) if gw.send(f"spread-{i}")]
        assert len(acked) == 30
        inbox = lambda: [email.message_from_bytes(m)["Subject"] for m in rig.maildir_messages(mailbox.home, "alice@contoso.test")]  # noqa: E731
        assert wait_until(lambda: len(inbox()) >= 30, timeout=60), len(inbox())
        assert Counter(inbox()) == Counter(acked)  # every one, once
        assert wait_until(lambda: gw.all_queued() == [] and gw.database_rows() == 0, timeout=30)  # all drained
        # Both processes accepted and queued mail (the trace names the process that received it).
        from sqlalchemy import select

        from mxgate.store.db import open_engine
        from mxgate.store.schema import trace_messages

        def receivers() -> set[str]:
            with open_engine(gw.home.database_url).connect() as conn:
                return set(conn.execute(select(trace_messages.c.node).where(trace_messages.c.role == "gateway")).scalars())

        assert wait_until(lambda: receivers() == {"gw", "gw-w1"}, timeout=15), receivers()
        assert "workers:     1 more processes share the gateway listeners" in gw.node.log.read_text()
    finally:
        gw.stop()


def test_kill9_of_a_gateway_worker_loses_none_of_its_acknowledged_mail(tmp_path, dns, down, test_ca):
    address, up = down
    gw = GatewayProcesses(tmp_path, dns, address, test_ca["ca"])
    acked: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**6))
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            subject = f"k9-{next(counter)}"
            try:
                ok = gw.send(subject)
            except OSError:  # the session was on the killed worker: not acknowledged
                continue
            if ok:
                with lock:
                    acked.append(subject)

    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        [old] = gw.worker_pids()
        for t in threads:
            t.start()
        # Load until worker 1 holds acknowledged mail (the downstream is down: it stays queued).
        assert wait_until(lambda: len(gw.queued(1)) >= 3 and len(gw.queued(0)) >= 1, timeout=60)
        os.kill(old, signal.SIGKILL)  # mid-flow: clients are still sending
        stop.set()
        for t in threads:
            t.join(30)
        # The first process starts worker 1 again; it recovers and locks its own directory.
        assert wait_until(lambda: gw.worker_pids() not in ([], [old]), timeout=30)
        assert wait_until(lambda: spool_owned(gw.spool(1)), timeout=30)
        assert "worker 1 (pid" in gw.node.log.read_text() and "starting it again" in gw.node.log.read_text()
        assert gw.node.proc.poll() is None
        sink = up()
        assert wait_until(lambda: set(acked) <= set(_subjects(sink)), timeout=60), set(acked) - set(_subjects(sink))
        assert wait_until(lambda: gw.all_queued() == [], timeout=30)
        # Nothing had been delivered before the kill (no downstream), so nothing may arrive twice.
        assert max(_subjects(sink).values()) == 1, [s for s, n in _subjects(sink).items() if n > 1]
    finally:
        stop.set()
        gw.stop()


def test_restart_with_fewer_workers_drains_what_the_gone_worker_held(tmp_path, dns, down, test_ca):
    address, up = down
    gw = GatewayProcesses(tmp_path, dns, address, test_ca["ca"])
    try:
        acked = gw.send_until(lambda: len(gw.queued(1)) >= 2 and len(gw.queued(0)) >= 2, "shrink")
        held_by_w1 = {e.queue_id for e in gw.queued(1)}
        gw.stop()  # SIGTERM: the node and its worker stop; gateway-w1 keeps its files
        assert {e.queue_id for e in gw.queued(1)} == held_by_w1
        gw.start(workers=1)
        # Process 0 adopted worker 1's directory at start: same queue ids, nothing left behind.
        assert gw.queued(1) == []
        assert held_by_w1 <= {e.queue_id for e in gw.queued(0)}
        assert "adopted" in gw.node.log.read_text()
        assert gw.worker_pids() == []
        sink = up()
        assert wait_until(lambda: set(acked) <= set(_subjects(sink)), timeout=60), set(acked) - set(_subjects(sink))
        assert wait_until(lambda: gw.all_queued() == [], timeout=30)
        assert max(_subjects(sink).values()) == 1
        assert json.loads(gw.cli("queue", "list", "--json").stdout) == []
    finally:
        gw.stop()


def test_queue_cli_lists_and_acts_on_mail_in_a_workers_spool(tmp_path, dns, down, test_ca):
    address, _up = down
    gw = GatewayProcesses(tmp_path, dns, address, test_ca["ca"], retry_first=3600.0, retry_max_backoff=3600.0)
    try:
        gw.send_until(lambda: len(gw.queued(1)) >= 2 and len(gw.queued(0)) >= 1, "cli")
        assert wait_until(lambda: all(e.attempts >= 1 for e in gw.all_queued()), timeout=15)
        listed = json.loads(gw.cli("queue", "list", "--json").stdout)
        assert {e["id"] for e in listed} == {e.queue_id for e in gw.all_queued()}
        in_w1 = [e for e in listed if e["spool"] == "gateway-w1"]
        assert {e["id"] for e in in_w1} == {e.queue_id for e in gw.queued(1)} and len(in_w1) >= 2
        assert any(e["spool"] == "gateway" for e in listed)
        table = gw.cli("queue", "list").stdout
        assert "spool/gateway-w1" in table and in_w1[0]["id"] in table
        shown = json.loads(gw.cli("queue", "show", in_w1[0]["id"], "--json").stdout)
        assert shown["spool"] == "gateway-w1" and "ARC-Seal" in shown["headers"]
        # Worker 1 owns that directory: the delete is its request, applied by its runner.
        r = gw.cli("queue", "delete", in_w1[0]["id"], "--json")
        assert json.loads(r.stdout)["state"] == "applied", (r.stdout, r.stderr)
        assert in_w1[0]["id"] not in {e.queue_id for e in gw.queued(1)}
        before = {e.queue_id: e.attempts for e in gw.all_queued()}
        r = gw.cli("queue", "flush", "--json")
        assert json.loads(r.stdout)["state"] == "applied", (r.stdout, r.stderr)
        # Every process retried its own entries (one more attempt each, in both directories).
        assert wait_until(lambda: all(e.attempts > before[e.queue_id] for e in gw.all_queued()), timeout=15), \
            ({e.queue_id: e.attempts for e in gw.all_queued()}, before)
        assert wait_until(lambda: {e.queue_id for e in gw.all_queued()} == set(before), timeout=15)
        # Stopped: the CLI takes worker 1's directory lock itself and changes it there.
        gw.stop()
        left = gw.queued(1)[0]
        r = gw.cli("queue", "retry", left.queue_id, "--json")
        assert json.loads(r.stdout)["state"] == "applied (gateway not running)", (r.stdout, r.stderr)
        [after] = [e for e in gw.queued(1) if e.queue_id == left.queue_id]
        assert after.attempts == left.attempts + 1 and not spool_owned(gw.spool(1))
    finally:
        gw.stop()


def test_kill9_of_the_first_process_loses_nothing_either_spool_held(tmp_path, dns, down, test_ca):
    """kill -9 of the node's first process: its worker stops with it (parent-death signal); the
    node started again runs both processes, each recovering its own directory."""
    address, up = down
    gw = GatewayProcesses(tmp_path, dns, address, test_ca["ca"])
    try:
        acked = gw.send_until(lambda: len(gw.queued(1)) >= 2 and len(gw.queued(0)) >= 2, "first")
        [worker] = gw.worker_pids()
        gw.node.kill9()
        assert wait_until(lambda: not os.path.exists(f"/proc/{worker}") or
                          open(f"/proc/{worker}/stat").read().split(")")[-1].split()[0] == "Z", timeout=30)
        assert not spool_owned(gw.spool(0)) and not spool_owned(gw.spool(1))
        gw.start(workers=2)
        assert wait_until(lambda: spool_owned(gw.spool(0)) and spool_owned(gw.spool(1)), timeout=30)
        sink = up()
        assert wait_until(lambda: set(acked) <= set(_subjects(sink)), timeout=60), set(acked) - set(_subjects(sink))
        assert wait_until(lambda: gw.all_queued() == [], timeout=30)
        assert max(_subjects(sink).values()) == 1
    finally:
        gw.stop()
