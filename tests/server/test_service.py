"""Issue 21, the systemd unit: the shipped template, filled in by `mxgate service install`,
passes `systemd-analyze verify` in both start modes, and `mxgate serve` tells systemd it is ready
(Type=notify) over a real unix datagram socket only once its listeners answer."""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import rig
from rig import free_port, wait_until
from mxgate.config.home import Home
from mxgate.config.node import NodeSection
from mxgate.server import sdnotify


def _install(tmp_path: Path, mode: str) -> tuple[Path, str]:
    rig.ensure_test_account()
    config = tmp_path / "node.toml"
    config.write_text('[mailbox]\nlisten = ["0.0.0.0:25"]\n')
    unit = tmp_path / f"mxgate-{mode}.service"
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "mxgate", "--home", str(home), "service", "install", "--path", str(unit),
                        "--config", str(config), "--user", rig.TEST_ACCOUNT, "--mode", mode],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"wrote {unit}" in r.stdout and "systemctl enable --now" in r.stdout
    assert home.is_dir()  # ReadWritePaths= needs it to exist
    return unit, unit.read_text()


@pytest.mark.parametrize("mode", ["capabilities", "root"])
def test_installed_unit_passes_systemd_analyze_verify(tmp_path, mode):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: run scripts/install-system-deps.sh (Debian package systemd)"
    unit, text = _install(tmp_path, mode)
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    mine = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert r.returncode == 0 and not mine, r.stdout + r.stderr
    directives = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert directives["Type"] == "notify" and directives["Restart"] == "on-failure"
    assert directives["NoNewPrivileges"] == "yes" and directives["ProtectSystem"] == "strict"
    assert directives["PrivateTmp"] == "yes" and directives["ReadWritePaths"] == str(tmp_path / "home")
    assert directives["ExecStart"] == f"{sys.executable} -m mxgate serve --config {tmp_path / 'node.toml'}"
    # The stop timeout outlasts the sessions' grace, so systemd never kills a session mid-DATA.
    assert int(directives["TimeoutStopSec"].rstrip("s")) > NodeSection().shutdown_grace
    assert not re.search(r"@[A-Z_]+@", text)  # no placeholder left
    if mode == "capabilities":
        assert directives["User"] == directives["Group"] == rig.TEST_ACCOUNT and directives["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        assert directives["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    else:
        assert "User" not in directives and "AmbientCapabilities" not in directives
        assert f"Environment=MXGATE_NODE__USER={rig.TEST_ACCOUNT}" in text


def test_stop_timeout_follows_the_configured_shutdown_grace(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("[node]\nshutdown_grace = 200\n")
    r = subprocess.run([sys.executable, "-m", "mxgate", "--home", str(tmp_path / "h"), "service", "unit",
                        "--config", str(config), "--user", "mxgate"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "TimeoutStopSec=260s" in r.stdout


def test_a_broken_unit_is_caught_by_the_same_check(tmp_path):
    """The verification can fail: a misspelt directive makes systemd-analyze complain about our file."""
    unit, text = _install(tmp_path, "capabilities")
    unit.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert f"{unit.name}:" in r.stderr and "Failed to parse service restart" in r.stderr, r.stderr


def test_notify_sends_one_datagram_to_an_abstract_socket():
    name = f"@mxgate-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name[1:])
        s.settimeout(5)
        assert sdnotify.notify("READY=1", "STATUS=x", environ={"NOTIFY_SOCKET": name})
        assert s.recv(4096) == b"READY=1\nSTATUS=x"
    assert not sdnotify.notify("READY=1", environ={})  # not under systemd: nothing to do
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "/nonexistent/notify"})


def test_serve_is_ready_only_when_listening_and_workers_stay_silent(tmp_path):
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "sd"\nworkers = 2\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(path))
        sd.settimeout(60)  # a bound on the wait for the datagram, not a synchronisation sleep
        env = dict(os.environ, MXGATE_HOME=str(home), NOTIFY_SOCKET=str(path), PYTHONUNBUFFERED="1")
        log = tmp_path / "serve.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "mxgate", "serve", "--config", str(config)],
                                    stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            first = sd.recv(4096).decode()
            assert first.startswith("READY=1\n") and f"127.0.0.1:{port}" in first, first
            with rig.RawSMTP("127.0.0.1", port) as c:  # ready means serving, at that very moment
                assert c.greeting()[0] == 220

            def names() -> set[str]:
                r = subprocess.run([sys.executable, "-m", "mxgate", "status", "--json"], capture_output=True, text=True,
                                   env=dict(os.environ, MXGATE_HOME=str(home)))
                return {n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"]} if r.returncode == 0 else set()

            assert wait_until(lambda: names() == {"sd", "sd-w1"}, timeout=20), log.read_text()
            sd.setblocking(False)
            with pytest.raises(BlockingIOError):  # the worker started without telling systemd anything
                sd.recv(4096)
            sd.setblocking(True)
            proc.terminate()
            assert sd.recv(4096) == b"STOPPING=1"
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_log_file_is_reopened_after_logrotate_moves_it(tmp_path):
    """[log] file and logrotate without copytruncate: the next line goes to a new file."""
    import logging

    from mxgate.logs import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    path = tmp_path / "mxgate.log"
    try:
        setup_logging("info", str(path))
        logging.getLogger("mxgate.test").info("before rotation")
        path.rename(tmp_path / "mxgate.log.1")  # what logrotate does
        logging.getLogger("mxgate.test").info("after rotation")
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert json.loads((tmp_path / "mxgate.log.1").read_text())["msg"] == "before rotation"
    assert json.loads(path.read_text())["msg"] == "after rotation"
