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
