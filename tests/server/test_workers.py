"""`[node] workers`: several processes share the mailbox listener (SO_REUSEPORT); each reports in
node status; they stop with the first process, even when it is killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import rig
from rig import GATEWAY, SubprocessNode, free_port, send_message, simple_message, wait_until
from mxgate.config.home import Home


def _pids_of_workers(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not serving anything
        return f.read().split(")")[-1].split()[0] != "Z"


def test_two_workers_share_the_listener_and_die_with_the_first(tmp_path):
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "mx"\nworkers = 2\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    node = SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))
    try:
        env = dict(os.environ, MXGATE_HOME=str(home))

        def names() -> set[str]:
            r = subprocess.run([sys.executable, "-m", "mxgate", "status", "--json"], capture_output=True, text=True, env=env)
            return {n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"] and "mailbox" in n["roles"]}

        assert wait_until(lambda: names() == {"mx", "mx-w1"}, timeout=15), names()
        for i in range(20):  # the kernel spreads connections; every one is served
            r = send_message("127.0.0.1", port, source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                             data=simple_message(subject=f"w{i}"))
            assert r["end"][0] == 250
        assert len(rig.maildir_messages(Home.open(home), "alice@contoso.test")) == 20
        workers = _pids_of_workers(node.proc.pid)
        assert len(workers) == 1
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        assert wait_until(lambda: not _alive(workers[0]), timeout=10), "the worker outlived the first process"
    finally:
        node.stop()


# --- defaults that are fast (issue 19): a fresh node picks its workers and loop itself ------------

def test_default_workers_follow_the_cores_this_process_may_use(monkeypatch):
    from mxgate.config import node as node_config
    from mxgate.config.node import load_settings

    monkeypatch.delenv("MXGATE_NODE__WORKERS", raising=False)
    for cores, expected in ((1, 1), (2, 2), (6, 6), (32, 8)):
        monkeypatch.setattr(node_config, "_cores", lambda cores=cores: cores)
        assert load_settings(None, {}).node.worker_count() == expected
    assert load_settings(None, {"node.workers": 3}).node.worker_count() == 3  # an explicit count wins


def test_worker_processes_serve_the_mailbox_and_gateway_listeners():
    """Workers share the mailbox's and the gateway's listeners (issue 19: the gateway's checks
    use every core too); a node with neither (submission or admin alone) starts none, since each
    would still run a whole node's background work (cluster sync, policy watcher, heartbeat)."""
    from mxgate.cli.serve_cmds import worker_listen
    from mxgate.config.node import load_settings

    assert load_settings(None, {"node.workers": 3}).processes() == 3
    gateway_only = load_settings(None, {"node.workers": 3, "roles.mailbox": False, "roles.gateway": True,
                                        "gateway.listen": ["127.0.0.10:2525"]})
    assert gateway_only.processes() == 3 and worker_listen(gateway_only) == ["127.0.0.10:2525"]
    both = load_settings(None, {"node.workers": 2, "roles.gateway": True, "mailbox.listen": ["127.0.0.1:25"],
                                "gateway.listen": ["127.0.0.10:25"], "submission.listen": ["127.0.0.1:587"]})
    assert worker_listen(both) == ["127.0.0.1:25", "127.0.0.10:25"]  # never submission's or admin's
    assert load_settings(None, {"node.workers": 3, "roles.mailbox": False, "roles.submission": True}).processes() == 1


def test_a_submission_only_node_starts_no_worker_processes(tmp_path):
    """Before issue 19's gateway workers, a gateway-only node was the example: a second process
    that served nothing yet synced cluster state ten times a second, polled the policy and wrote
    heartbeats. A node serving neither mailbox nor gateway still starts none."""
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "sub"\nworkers = 2\n[roles]\nmailbox = false\nsubmission = true\nadmin = false\n'
                      f'[submission]\nlisten = ["127.0.0.1:{port}"]\n')
    node = SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))
    try:
        # "event loop:" is printed after the workers are spawned: by then any child exists.
        assert wait_until(lambda: "event loop:" in node.log.read_text(), timeout=15), node.log.read_text()
        assert "workers:" not in node.log.read_text()
        assert _pids_of_workers(node.proc.pid) == []
    finally:
        node.stop()


def test_default_event_loop_is_uvloop_when_installed_and_asyncio_when_not(monkeypatch):
    import asyncio
    import builtins

    import pytest
    import uvloop  # a default dependency on Linux (pyproject.toml)

    from mxgate.config.node import load_settings
    from mxgate.errors import ConfigError
    from mxgate.server.node import event_loop_factory

    auto = load_settings(None, {})
    assert auto.node.event_loop == "auto"
    assert event_loop_factory(auto) is uvloop.new_event_loop
    assert event_loop_factory(load_settings(None, {"node.event_loop": "asyncio"})) is asyncio.new_event_loop

    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert event_loop_factory(auto) is asyncio.new_event_loop  # "auto" falls back quietly
    with pytest.raises(ConfigError, match="uvloop is not installed"):  # asked for explicitly: a clear error
        event_loop_factory(load_settings(None, {"node.event_loop": "uvloop"}))


def test_a_fresh_serve_runs_on_uvloop_with_a_worker_per_core(tmp_path, monkeypatch):
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "fresh"\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    monkeypatch.setenv("MXGATE_NODE__WORKERS", "0")  # the schema's default (the rig pins 1 otherwise)
    node = SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))
    try:
        cores = min(8, len(os.sched_getaffinity(0)))
        assert wait_until(lambda: "event loop:" in node.log.read_text(), timeout=15), node.log.read_text()
        log = node.log.read_text()
        assert "event loop:  uvloop" in log
        if cores > 1:
            assert f"workers:     {cores - 1} more processes" in log
            assert wait_until(lambda: len(_pids_of_workers(node.proc.pid)) == cores - 1, timeout=15)
        r = send_message("127.0.0.1", port, source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                         data=simple_message(subject="fresh"))
        assert r["end"][0] == 250
    finally:
        node.stop()


def test_a_worker_that_keeps_exiting_is_restarted_ever_more_slowly():
    """A worker restarted after a crash (issue 19: it recovers its own gateway spool) must not
    burn a core when it cannot start at all: 1 s, doubling up to a minute, back to 1 s once it
    has run for a minute."""
    from mxgate.cli.serve_cmds import RESTART_MAX, restart_pause

    pauses, pause = [], 0.0
    for _ in range(8):
        pause = restart_pause(pause, ran=0.5)
        pauses.append(pause)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert restart_pause(60.0, ran=RESTART_MAX) == 1.0  # it had been serving: a crash, not a start failure
    assert restart_pause(0.0, ran=3600.0) == 1.0
