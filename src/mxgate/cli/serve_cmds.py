"""`mxgate serve`, `mxgate status`, `mxgate config reference`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

import typer

from mxgate.cli.common import engine, handle_errors, home, out, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("status")(status)
    config_app = typer.Typer(help="Node settings.", no_args_is_help=True)
    config_app.command("reference")(config_reference)
    app.add_typer(config_app, name="config")


@handle_errors
def serve(config: Optional[Path] = typer.Option(None, "--config", "-c", help="node.toml; without it: the embedded default"),
          role: Optional[list[str]] = typer.Option(None, "--role", help="run only these roles (mailbox, gateway, submission, admin)"),
          mailbox_listen: Optional[list[str]] = typer.Option(None, "--mailbox-listen", help="host:port (repeatable)"),
          reject_stage: Optional[str] = typer.Option(None, "--reject-stage", help="rcpt | connect"),
          name: Optional[str] = typer.Option(None, "--name", help="node name"),
          worker: int = typer.Option(0, "--worker", hidden=True, help="internal: index of a worker process")):
    """Run the node: the roles in node.toml (default: a locked-down mailbox server on loopback)."""
    from mxgate.config.node import load_settings
    from mxgate.logs import setup_logging
    from mxgate.server.node import Node

    overrides = {}
    if role:
        for r in ("mailbox", "gateway", "submission", "admin"):
            overrides[f"roles.{r}"] = r in role
    if mailbox_listen:
        overrides["mailbox.listen"] = mailbox_listen
    if reject_stage:
        overrides["mailbox.reject_stage"] = reject_stage
    if name:
        overrides["node.name"] = name
    from mxgate.cli.common import config_path

    settings = load_settings(config or config_path(), overrides)
    if worker:
        # A worker serves the mailbox and gateway listeners beside the first process (SO_REUSEPORT),
        # with its own gateway queue directory (queue/spool.py "one spool per process").
        die_with_parent()
        settings = load_settings(config or config_path(), {
            **overrides, "node.name": f"{settings.node.name}-w{worker}", "node.worker": worker,
            "roles.submission": False, "roles.admin": False})
    the_home = home()
    account = run_as(settings, the_home, worker)
    setup_logging(settings.log.level, settings.log.file)
    if account:
        import logging

        logging.getLogger("mxgate.privileges").info("listeners bound; running as %s (uid %d, gid %d)",
                                                    account.name, account.uid, account.gid)
    node = Node(settings, the_home)
    workers = Workers(settings.processes(), worker_listen(settings))

    async def main() -> None:
        from mxgate.server import sdnotify

        await node.start()
        if not worker:
            workers.start()
            if workers.count:
                forward_reload(node, workers)
            loop = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
            shared = " and ".join(r for r in ("mailbox", "gateway") if getattr(settings.roles, r))
            out.print(node.describe() + f"\n  event loop:  {loop}"
                      + (f"\n  workers:     {workers.count} more processes share the {shared} listeners"
                         if workers.count else ""), markup=False)
            sdnotify.notify("READY=1", f"STATUS=serving {' '.join(a for lst in node.listeners.values() for a in lst.addresses)}")
        out.file.flush()
        await node.run_until_stopped()
        if not worker:
            sdnotify.notify("STOPPING=1")

    from mxgate.server.node import event_loop_factory

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:  # uvloop by default where installed
            runner.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        workers.stop()


def forward_reload(node, workers: "Workers") -> None:
    """SIGHUP (`systemctl reload`, sent to the main process only) reaches the workers too, so every
    process serving the listener loads a renewed certificate at once."""
    import signal

    loop = asyncio.get_running_loop()

    def reload() -> None:
        loop.run_in_executor(None, node.check_certificates)
        workers.signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reload)


def run_as(settings, the_home, worker: int):
    """Privileges (server/privileges.py): bind every listener, then drop root for good before the
    node opens anything; a worker instead adopts the sockets its first process handed over."""
    import os

    from mxgate.server import privileges, sockets

    if worker:
        sockets.inherit()
        return None
    account = privileges.plan(os.geteuid(), settings.node.user, settings.node.group, settings.node.allow_root)
    if account is None:
        return None
    sockets.prebind(listen_addresses(settings), reuse_port=settings.processes() > 1)
    privileges.give_home(the_home.root, account)
    privileges.drop(account)
    return account


def listen_addresses(settings) -> list[str]:
    """Every address the enabled roles listen on (what must be bound before dropping root)."""
    addrs: list[str] = []
    for role in ("mailbox", "gateway", "submission"):
        if getattr(settings.roles, role):
            addrs += getattr(settings, role).listen
    if settings.roles.admin:
        addrs.append(settings.admin.listen)
    return addrs


def worker_listen(settings) -> list[str]:
    """The listeners worker processes share with the first: the mailbox's and the gateway's."""
    return [a for role in ("mailbox", "gateway") if getattr(settings.roles, role) for a in getattr(settings, role).listen]


# Seconds before a worker that exited is started again: 1 s, doubling while it keeps exiting
# within RESTART_MAX of its start (a worker that cannot start must not burn a core in a loop).
RESTART_PAUSE, RESTART_MAX = 1.0, 60.0


def restart_pause(previous: float, ran: float) -> float:
    """Seconds to wait before starting again a worker that exited after running `ran` seconds."""
    return RESTART_PAUSE if ran >= RESTART_MAX else min(max(2 * previous, RESTART_PAUSE), RESTART_MAX)


class Workers:
    """Processes 1..count-1: the same command line plus --worker N (they re-read the same settings).
    They inherit the first process's user and its pre-opened listening sockets (an unprivileged
    worker could not bind a port below 1024), and never speak to systemd (NotifyAccess=main).

    Supervised, like Postfix's master: a worker that exits while the node runs (a crash, kill -9)
    is started again with the same index, so it recovers its own queue directory and the mail it
    acknowledged is relayed (queue/spool.py "one spool per process"). One thread per worker
    starts it and waits for it: Linux's parent-death signal (die_with_parent) follows the
    thread that forked, and this one lives exactly as long as its child."""

    def __init__(self, count: int, listen: list[str]):
        import threading

        self.count = max(0, count - 1)
        self.listen = listen
        self._procs: dict[int, object] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list = []

    def start(self) -> None:
        import threading

        for i in range(1, self.count + 1):
            t = threading.Thread(target=self._supervise, args=(i,), name=f"worker-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def current(self) -> list:
        with self._lock:
            return list(self._procs.values())

    def signal(self, sig) -> None:
        for p in self.current():
            if p.poll() is None:
                p.send_signal(sig)

    def _spawn(self, index: int):
        import os
        import signal
        import subprocess
        import sys

        from mxgate.server import sdnotify, sockets

        extra_env, fds = sockets.for_child(self.listen)
        env = {k: v for k, v in os.environ.items() if k != sdnotify.ENV} | extra_env
        # Workers start with SIGHUP blocked (the mask survives fork and exec) and unblock it once
        # their handler is in place (server/node.py): a reload forwarded while one is still
        # starting waits for it instead of ending it, SIGHUP's default action.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            return subprocess.Popen([sys.executable, "-m", "mxgate", *sys.argv[1:], "--worker", str(index)], env=env,
                                    pass_fds=fds)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _supervise(self, index: int) -> None:
        import logging
        import time

        pause = 0.0
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                proc = self._procs[index] = self._spawn(index)
            code = proc.wait()
            if self._stopping.is_set():
                return
            pause = restart_pause(pause, time.monotonic() - started)
            logging.getLogger("mxgate.node").warning("worker %d (pid %d) exited with %s; starting it again in %.0f s",
                                                     index, proc.pid, code, pause)
            if self._stopping.wait(pause):
                return

    def stop(self) -> None:
        import subprocess

        with self._lock:
            self._stopping.set()
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def die_with_parent() -> None:
    """Linux PR_SET_PDEATHSIG: a worker stops when the first process dies, even by kill -9."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@handle_errors
def status(json_out: bool = typer.Option(False, "--json")):
    """Every node using this store: roles, listeners, last heartbeat, the policy version it enforces."""
    from mxgate.server.node import read_status
    from mxgate.store.policy_store import PolicyStore

    rows = read_status(engine(read=True))
    latest = PolicyStore(engine(read=True)).latest_version_number()
    if json_out:
        print_json({"policy_version": latest, "nodes": rows})
        return
    out.print(f"policy version in store: {latest}", markup=False)
    print_table("Nodes", ["node", "alive", "roles", "listeners", "enforces version", "heartbeat"],
                [[r["name"], "yes" if r["alive"] else "no", ", ".join(r["roles"]),
                  "; ".join(f"{k}: {' '.join(v)}" for k, v in r["listeners"].items()), r["policy_version"],
                  f"{time.time() - r['heartbeat']:.1f}s ago" if r["heartbeat"] else "stopped"] for r in rows])


def config_reference():
    """Print the node settings reference (Markdown), generated from the schema."""
    from mxgate.config.node import settings_reference

    out.file.write(settings_reference())
