"""Issue 21, privileges: `mxgate serve` binds a port below 1024 and runs unprivileged.

Started as root with `[node] user`, the first process binds, gives the home to the account and
drops root for good; its worker adopts the bound socket and runs as the same account. Started
by a service manager as the account with CAP_NET_BIND_SERVICE, it binds the low port itself.
Started as root without a user and without `allow_root`, it refuses. Real processes, real
sockets on loopback; the uids come from /proc, not from the node's own word."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import rig
from rig import GATEWAY, send_message, simple_message, visible_python, wait_port, wait_until
from mxgate.config.home import Home

ACCOUNT = rig.TEST_ACCOUNT
# This file's loopback address for the low-port listeners, drawn per run: two suites running at
# once on one machine both found port 700 free on a fixed address, and their nodes (the same
# unprivileged account, SO_REUSEPORT) then shared the listener.
HOST = f"127.43.{random.randrange(1, 255)}.{random.randrange(1, 255)}"


def low_port(host: str) -> int:
    start = random.randrange(700, 1024)  # not always the first free one (see HOST)
    for port in [*range(start, 1024), *range(700, start)]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below 1024 on {host}")


def listening_pids(host: str, port: int) -> set[int]:
    """Processes holding the listening socket host:port (from /proc/net/tcp and /proc/*/fd)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":  # 0A = LISTEN
            inodes.add(f"socket:[{f[9]}]")
    pids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for fd in (d / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    pids.add(int(d.name))
                    break
        except OSError:
            continue
    return pids


def proc_ids(pid: int) -> dict[str, list[int]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
        if key in ("CapEff", "CapPrm", "NoNewPrivs"):
            out[key] = [int(value.strip(), 16 if key.startswith("Cap") else 10)]
    return out


def unit_capabilities(mode: str, directive: str) -> list[str]:
    """The shipped unit's capability list for a start mode, as setpriv arguments (+net_bind_service,...),
    so these tests run the node with exactly the rights the unit would give it."""
    from mxgate.cli.service_cmds import render_unit

    text = render_unit(home="/var/lib/mxgate", config="/etc/mxgate/node.toml", user=ACCOUNT, group="", mode=mode)
    [line] = [l for l in text.splitlines() if l.startswith(directive + "=")]
    return ["+" + cap.lower().removeprefix("cap_") for cap in line.split("=", 1)[1].split()]


@pytest.fixture
def scratch():
    # Not below pytest's tmp_path: /tmp/pytest-of-root is closed to the account.
    d = Path(tempfile.mkdtemp(prefix="mxgate-priv-", dir="/tmp"))
    d.chmod(0o755)  # the home below it must be reachable by the account
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _serve(cmd_prefix: list[str], home: Path, config: Path, log: Path, env_extra: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MXGATE_NODE__ALLOW_ROOT"}
    env.update(MXGATE_HOME=str(home), PYTHONUNBUFFERED="1", **(env_extra or {}))
    with open(log, "ab") as f:
        return subprocess.Popen([*cmd_prefix, sys.executable, "-m", "mxgate", "serve", "--config", str(config)],
                                stdout=f, stderr=subprocess.STDOUT, env=env)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_root_start_with_user_binds_low_port_then_runs_as_that_user(scratch):
    account = rig.ensure_test_account()
    home = scratch / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)  # created by root: the node must hand it over
    port = low_port(HOST)
    config = scratch / "node.toml"
    config.write_text(f'[node]\nname = "mx"\nuser = "{ACCOUNT}"\nworkers = 2\n[roles]\nadmin = false\n'
                      f'[mailbox]\nlisten = ["{HOST}:{port}"]\n')
    config.chmod(0o644)  # the worker re-reads it as the account
    # Root with only what the unit's root mode leaves it (CapabilityBoundingSet, NoNewPrivileges).
    as_unit = ["setpriv", "--bounding-set=-all," + ",".join(unit_capabilities("root", "CapabilityBoundingSet")),
               "--no-new-privs"]
    proc = _serve(visible_python(scratch) + as_unit, home, config, scratch / "serve.log")
    try:
        wait_port(HOST, port, proc=proc, log=scratch / "serve.log")
        env = dict(os.environ, MXGATE_HOME=str(home))

        def alive_names() -> set[str]:
            r = subprocess.run([sys.executable, "-m", "mxgate", "status", "--json"], capture_output=True, text=True, env=env)
            return {n["name"] for n in json.loads(r.stdout)["nodes"] if n["alive"]} if r.returncode == 0 else set()

        assert wait_until(lambda: alive_names() == {"mx", "mx-w1"}, timeout=20), (alive_names(), (scratch / "serve.log").read_text())
        pids = listening_pids(HOST, port)
        assert proc.pid in pids and len(pids) == 2, pids  # the first process and its worker share one socket
        for pid in pids:
            ids = proc_ids(pid)
            assert ids["Uid"] == [account.pw_uid] * 4, (pid, ids)  # real, effective, saved, filesystem
            assert ids["Gid"] == [account.pw_gid] * 4, (pid, ids)
            assert 0 not in ids["Groups"], ids
            assert ids["CapEff"] == [0] and ids["CapPrm"] == [0], ids  # nothing of root's is left
            assert ids["NoNewPrivs"] == [1], ids
        for i in range(6):  # the kernel spreads connections over both processes
            r = send_message(HOST, port, source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                             data=simple_message(subject=f"priv {i}"))
            assert r["end"][0] == 250, r
        h = Home.open(home)
        assert len(rig.maildir_messages(h, "alice@contoso.test")) == 6
        files = [p for p in (home / "maildir").rglob("*")] + [home, home / "mxgate.db", home / "spool", home / "keys", home / "certs"]
        wrong = [(str(p), p.lstat().st_uid) for p in files if (p.lstat().st_uid, p.lstat().st_gid) != (account.pw_uid, account.pw_gid)]
        assert not wrong, wrong
        log = (scratch / "serve.log").read_text()
        assert f"running as {ACCOUNT}" in log
        # A second start finds the home already the account's (root must still open it, and may not
        # own it: the unit's capability set has to cover that too).
        _stop(proc)
        assert proc.returncode == 0, (scratch / "serve.log").read_text()[-2000:]
        proc = _serve(visible_python(scratch) + as_unit, home, config, scratch / "serve.log")
        wait_port(HOST, port, proc=proc, log=scratch / "serve.log")
        r = send_message(HOST, port, source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                         data=simple_message(subject="second start"))
        assert r["end"][0] == 250, r
        assert len(rig.maildir_messages(h, "alice@contoso.test")) == 7
        assert proc_ids(proc.pid)["Uid"] == [account.pw_uid] * 4
    finally:
        _stop(proc)


def test_started_as_the_account_with_cap_net_bind_service(scratch):
    """The systemd unit's way (User= plus AmbientCapabilities=CAP_NET_BIND_SERVICE), here with setpriv."""
    account = rig.ensure_test_account()
    home = scratch / "home"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(home)], check=True)
    port = low_port(HOST)
    config = scratch / "node.toml"
    config.write_text(f'[node]\nname = "capmx"\nuser = "{ACCOUNT}"\n[roles]\nadmin = false\n'
                      f'[mailbox]\nlisten = ["{HOST}:{port}"]\n')
    config.chmod(0o644)
    ambient = ",".join(unit_capabilities("capabilities", "AmbientCapabilities"))
    bounding = ",".join(unit_capabilities("capabilities", "CapabilityBoundingSet"))
    setpriv = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups",
               f"--bounding-set=-all,{bounding}", f"--inh-caps={ambient}", f"--ambient-caps={ambient}", "--no-new-privs"]
    proc = _serve(visible_python(scratch) + setpriv, home, config, scratch / "serve.log")
    try:
        wait_port(HOST, port, proc=proc, log=scratch / "serve.log")
        ids = proc_ids(proc.pid)
        assert ids["Uid"] == [account.pw_uid] * 4 and ids["Gid"] == [account.pw_gid] * 4, ids
        assert ids["CapEff"] == [1 << 10], ids  # CAP_NET_BIND_SERVICE only
        r = send_message(HOST, port, source=GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                         data=simple_message(subject="cap"))
        assert r["end"][0] == 250, r
        assert all(p.stat().st_uid == account.pw_uid for p in (home / "maildir").rglob("*"))
    finally:
        _stop(proc)


def _serve_fails(scratch: Path, node_section: str) -> tuple[int, str]:
    config = scratch / "node.toml"
    config.write_text(f'[node]\n{node_section}\n[roles]\nadmin = false\n[mailbox]\nlisten = ["{HOST}:{rig.free_port(HOST)}"]\n')
    env = {k: v for k, v in os.environ.items() if k != "MXGATE_NODE__ALLOW_ROOT"}
    r = subprocess.run([sys.executable, "-m", "mxgate", "serve", "--config", str(config)], capture_output=True, text=True,
                       env=dict(env, MXGATE_HOME=str(scratch / "home")), timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_root_without_user_refuses_to_start(scratch):
    code, text = _serve_fails(scratch, 'name = "rootmx"')
    assert code == 1, text
    assert "refusing to run as root" in text and "[node] user" in text and "Traceback" not in text


def test_unknown_user_is_a_clear_error(scratch):
    code, text = _serve_fails(scratch, 'user = "no-such-account-mxg"')
    assert code == 1 and "no account named 'no-such-account-mxg'" in text and "Traceback" not in text, text


def test_user_root_is_refused(scratch):
    code, text = _serve_fails(scratch, 'user = "root"')
    assert code == 1 and "unprivileged account" in text, text


def test_dropped_privileges_cannot_be_regained(scratch):
    """After drop(): no way back to root — not setuid, setgid, setgroups, nor root's files."""
    account = rig.ensure_test_account()
    probe = (
        "import json, os\n"
        "from mxgate.server.privileges import resolve, drop\n"
        f"drop(resolve({ACCOUNT!r}))\n"
        "out = {'resuid': os.getresuid(), 'resgid': os.getresgid(), 'groups': os.getgroups()}\n"
        "for name, call in [('setuid', lambda: os.setuid(0)), ('seteuid', lambda: os.seteuid(0)),\n"
        "                   ('setgid', lambda: os.setgid(0)), ('setgroups', lambda: os.setgroups([0])),\n"
        "                   ('shadow', lambda: open('/etc/shadow').read())]:\n"
        "    try:\n"
        "        call(); out[name] = 'succeeded'\n"
        "    except PermissionError:\n"
        "        out[name] = 'refused'\n"
        "print(json.dumps(out))\n")
    r = subprocess.run([*visible_python(scratch), sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["resuid"] == [account.pw_uid] * 3 and out["resgid"] == [account.pw_gid] * 3, out
    assert 0 not in out["groups"]
    assert all(out[k] == "refused" for k in ("setuid", "seteuid", "setgid", "setgroups", "shadow")), out


def test_the_account_replaces_a_policy_stamp_root_left(scratch):
    """`mxgate policy apply` run as root leaves a root-owned 0600 stamp; a change the node makes
    later as the account (the admin centre) must still wake the other processes at once
    (store/change_stamp.py), so the account replaces the stamp in its own home."""
    account = rig.ensure_test_account()
    home = scratch / "home"
    home.mkdir(mode=0o700)
    os.chown(home, account.pw_uid, account.pw_gid)
    stamp = home / "mxgate.db-mxgate_policy.changed"
    stamp.write_text("6")
    stamp.chmod(0o600)
    probe = (
        "from mxgate.server.privileges import resolve, drop\n"
        "from mxgate.store.change_stamp import announce\n"
        f"drop(resolve({ACCOUNT!r}))\n"
        f"announce({str(home / 'mxgate.db')!r}, 'mxgate_policy', '7')\n")
    r = subprocess.run([*visible_python(scratch), sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stamp.read_text() == "7" and stamp.stat().st_uid == account.pw_uid
