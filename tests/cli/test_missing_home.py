"""Issue 20: commands that read state refuse a --home that does not exist (exit 2, with a hint
naming where a running node's home is) instead of creating it and showing empty results;
`mxgate verify` with no policy says so instead of printing an empty FAIL table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rig
from rig import SubprocessNode, free_port

from mxgate.config.running import home_of, running_homes

READ_COMMANDS = [
    ["trace"], ["status"], ["policy", "export"], ["policy", "history"], ["org", "show"], ["connector", "list"],
    ["domain", "list"], ["mailbox", "list"], ["quarantine", "list"], ["queue", "list"], ["verify"],
    ["admin", "token", "list"], ["admin", "users"], ["app-credential", "list"], ["tls", "status"],
    ["keys", "list"], ["tls-rpt", "report", "--domain", "fabrikam.test", "--day", "2026-12-01"],
    # The DNS records to publish are the running node's keys: a new home would hold new keys,
    # and the admin would publish those instead of the ones the node signs with.
    ["keys", "dns", "arc"], ["keys", "dns", "dkim", "--domain", "contoso.test"], ["gateway", "arc-dns"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=[" ".join(a) for a in READ_COMMANDS])
def test_read_commands_refuse_a_missing_home(run, tmp_path, args):
    missing = tmp_path / "typo" / "mxgate-data"
    r = run("--home", str(missing), *args)
    assert r.exit_code == 2, r.output
    assert f"home directory {missing} does not exist" in r.stderr
    assert "--home" in r.stderr  # the hint says how to point at the right place
    assert not missing.exists() and not missing.parent.exists()


def test_backup_refuses_a_missing_home(run, tmp_path):
    r = run("--home", str(tmp_path / "nope"), "backup", str(tmp_path / "b"))
    assert r.exit_code == 2 and "does not exist" in r.stderr and not (tmp_path / "nope").exists()


def test_write_commands_still_create_a_new_home(run, tmp_path):
    new = tmp_path / "fresh"
    assert run("--home", str(new), "domain", "new", "contoso.test").exit_code == 0
    assert (new / "mxgate.db").exists()
    assert run("--home", str(new), "domain", "list").exit_code == 0


def test_verify_without_a_policy_says_so(run, tmp_path):
    home = tmp_path / "empty"
    home.mkdir()
    r = run("--home", str(home), "verify", "--target", f"127.0.0.1:{free_port()}")
    assert r.exit_code == 2
    assert "no policy in the store" in r.stderr and "mxgate policy apply" in r.stderr
    assert "FAIL" not in r.stdout


def test_verify_with_no_lockdown_to_test_says_so(run, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text(rig.GUIDE_POLICY.split("[[inbound_connector]]")[0])
    r = run("verify", "--policy", str(policy), "--target", f"127.0.0.1:{free_port()}")
    assert r.exit_code == 1
    assert "no partner inbound connector" in r.stderr and "FAIL" not in r.stdout


@pytest.mark.parametrize("argv,env,cwd,expected", [
    (["/venv/bin/mxgate", "serve"], {}, "/srv", "/srv/mxgate-data"),
    (["/venv/bin/mxgate", "--home", "/data/n1", "serve", "--config", "n.toml"], {}, "/srv", "/data/n1"),
    (["mxgate", "serve"], {"MXGATE_HOME": "rel/home"}, "/srv", "/srv/rel/home"),
    (["/venv/bin/mxgate", "demo", "--keep-running"], {}, "/home/u/mxgate", "/home/u/mxgate/mxgate-demo"),
    (["mxgate", "demo", "--demo-home", "/tmp/d"], {}, "/x", "/tmp/d"),
    (["mxgate", "trace"], {}, "/x", None),
    (["vim", "serve"], {}, "/x", None),
])
def test_home_of_a_command_line(argv, env, cwd, expected):
    got = home_of(argv, env, Path(cwd))
    assert (str(got) if got else None) == expected


def _start_node(tmp_path):
    home = tmp_path / "node-home"
    home.mkdir()
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    return SubprocessNode(home, config).start(wait_for=("127.0.0.1", port))


def _mxgate(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(rig.REPO / "src")}
    env.pop("MXGATE_HOME", None)
    return subprocess.run([sys.executable, "-m", "mxgate", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_hint_names_a_running_nodes_home(tmp_path):
    node = _start_node(tmp_path)
    try:
        assert node.home.resolve() in running_homes()
        proc = _mxgate("--home", str(tmp_path / "typo"), "trace", cwd=tmp_path)
        assert proc.returncode == 2
        assert str(node.home.resolve()) in proc.stderr and "add --home" in proc.stderr
        assert not (tmp_path / "typo").exists()
    finally:
        node.kill9()
        node.proc.wait(timeout=10)


# In a PID namespace of its own the node below is the only one this user runs, whatever else the
# machine runs: the README's commands, typed in another directory without --home, must find it.
FOLLOW = """
import json, subprocess, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import rig
tmp = Path({tmp!r})
port = rig.free_port()
(tmp / "node.toml").write_text('[roles]\\nadmin = false\\n[mailbox]\\nlisten = ["127.0.0.1:%d"]\\n' % port)
(tmp / "node-home").mkdir()
node = rig.SubprocessNode(tmp / "node-home", tmp / "node.toml").start(wait_for=("127.0.0.1", port))
try:
    other = tmp / "elsewhere"
    other.mkdir()
    out = {{}}
    for args in (["trace"], ["policy", "export"], ["verify", "--target", "127.0.0.1:%d" % port]):
        p = subprocess.run([sys.executable, "-m", "mxgate", *args], cwd=other, capture_output=True, text=True, timeout=60)
        out[" ".join(args[:2])] = [p.returncode, p.stdout, p.stderr]
    writer = tmp / "writer"
    writer.mkdir()
    p = subprocess.run([sys.executable, "-m", "mxgate", "domain", "new", "extra.test"], cwd=writer,
                       capture_output=True, text=True, timeout=60)
    out["write"] = [p.returncode, p.stdout, p.stderr]
    print(json.dumps(out))
finally:
    node.kill9()
    node.proc.wait(timeout=10)
"""


def test_readme_commands_find_the_running_node_from_another_directory(tmp_path):
    import json
    import shutil

    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is needed (scripts/install-system-deps.sh)"
    env = {**os.environ, "PYTHONPATH": str(rig.REPO / "src")}
    env.pop("MXGATE_HOME", None)
    script = FOLLOW.format(tests=str(rig.REPO / "tests"), tmp=str(tmp_path))
    proc = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    home = str((tmp_path / "node-home").resolve())
    write = out.pop("write")
    for name, (code, stdout, stderr) in out.items():
        assert f"using the home of the running node, {home}" in stderr, (name, stderr)
    # A command that changes something never adopts the running node: it makes ./mxgate-data.
    assert write[0] == 0 and "using the home" not in write[2], write
    assert (tmp_path / "writer" / "mxgate-data" / "mxgate.db").exists()
    assert out["trace"][0] == 0
    assert out["policy export"][0] == 0 and 'name = "Third-party filter service"' in out["policy export"][1]
    assert out["verify --target"][0] == 0, out["verify --target"]
    assert not (tmp_path / "elsewhere" / "mxgate-data").exists()
