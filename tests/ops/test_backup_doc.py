"""docs/operations.md, "4. Backups", run as written (paths moved under a temporary root, the test
account in place of `mxgate`, runuser in place of sudo): the backup runs as the node's account,
which cannot create a directory under Debian's root-owned /var/backups. The page gave only the
backup line, which failed with "Permission denied" (session 10, followed from outside); it now
creates the account's backup directory first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import rig
from mxgate.config.home import Home

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def _backup_lines() -> list[str]:
    section = DOC.read_text(encoding="utf-8").split("## 4. Backups", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split(" #", 1)[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, gid)


@pytest.fixture
def root():
    # Not below pytest's tmp_path: /tmp/pytest-of-root is closed to the account.
    d = Path(tempfile.mkdtemp(prefix="mxgate-backup-doc-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_documented_backup_runs_as_the_nodes_account(root):
    tmp_path = root
    account = rig.ensure_test_account()
    var = tmp_path / "var"
    (var / "backups").mkdir(parents=True)
    os.chmod(var / "backups", 0o755)  # Debian's /var/backups: root's, 0755
    home = var / "lib" / "mxgate"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    _chown_tree(home, account.pw_uid, account.pw_gid)
    etc = tmp_path / "etc" / "mxgate"
    etc.mkdir(parents=True)
    (etc / "node.toml").write_text('[node]\nname = "gw1"\n')
    os.chmod(etc / "node.toml", 0o644)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mxgate").write_text(f'#!/bin/sh\nexec {sys.executable} -m mxgate "$@"\n')
    os.chmod(bin_dir / "mxgate", 0o755)
    for p in (tmp_path, tmp_path / "var", var / "lib", tmp_path / "etc"):
        os.chmod(p, 0o755)
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}

    lines = _backup_lines()
    assert any(" backup " in line for line in lines)
    for line in lines:
        line = (line.replace("/var/", f"{var}/").replace("/etc/mxgate", str(etc))
                .replace("-o mxgate", f"-o {rig.TEST_ACCOUNT}").replace("-g mxgate", f"-g {account.pw_gid}")
                .replace("sudo -u mxgate ", f"runuser -u {rig.TEST_ACCOUNT} -- "))
        r = subprocess.run([*rig.visible_python(tmp_path), "bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, (line, r.stdout, r.stderr)
    [made] = list((var / "backups" / "mxgate").iterdir())
    manifest = json.loads((made / "manifest.json").read_text())
    assert manifest["policy_version"] == 1 and made.stat().st_uid == account.pw_uid
