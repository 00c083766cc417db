"""adversarial.md §7 and §1 against a real `mxgate serve` process: memory stays bounded when a
client sends far more than the size limit, and a nearly full disk refuses at MAIL (452 4.3.1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import rig
from rig import GATEWAY, RawSMTP, SubprocessNode, free_port
from mxgate.config.home import Home


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _start(tmp_path: Path, home: Path, extra: str = "") -> tuple[SubprocessNode, int]:
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n{extra}')
    return SubprocessNode(home, config).start(wait_for=("127.0.0.1", port)), port


def test_20mb_without_size_to_a_10mb_limit(tmp_path):
    node, port = _start(tmp_path, tmp_path / "home")
    try:
        with RawSMTP("127.0.0.1", port, GATEWAY, timeout=30) as c:  # warm up TLS and the session path first
            c.greeting(); c.cmd("EHLO x"); c.starttls(); c.cmd("EHLO x")
            before = _vm_hwm_kb(node.proc.pid)
            assert c.cmd("MAIL FROM:<a@fabrikam.test>")[0] == 250
            assert c.cmd("RCPT TO:<alice@contoso.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            line = b"x" * 76 + b"\r\n"
            chunk = b"Subject: big\r\n\r\n" + line * (65536 // len(line))
            sent = 0
            while sent < 20 * 1024 * 1024:
                c.send(chunk)
                sent += len(chunk)
                chunk = line * (65536 // len(line))
            c.send(b".\r\n")
            code, text = c.read_reply()
            after = _vm_hwm_kb(node.proc.pid)
        assert code == 552 and "5.3.4" in text
        growth_mb = (after - before) / 1024
        print(f"peak RSS grew by {growth_mb:.1f} MB while receiving 20 MB over a 10 MB limit")
        assert growth_mb < 8, growth_mb
        assert not list((tmp_path / "home" / "maildir").rglob("new/*"))
    finally:
        node.stop()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_nearly_full_disk_refuses_at_mail_and_never_acknowledges(tmp_path):
    home = tmp_path / "small"
    mounted = _mount_tmpfs(home, "8m")
    # On a machine where mounting is not allowed, a free-space floor above the disk's free space
    # plays the same part (the guard is the same code path).
    extra = "[mailbox.limits]\nmin_free_disk = 3145728\n" if mounted else \
        f"[mailbox.limits]\nmin_free_disk = {shutil.disk_usage(tmp_path).free * 2}\n"
    try:
        node, port = _start(tmp_path, home, extra)
        try:
            if mounted:  # fill the small filesystem until less than the floor is left
                filler = home / "filler"
                free = shutil.disk_usage(home).free
                filler.write_bytes(b"\0" * max(0, free - 2 * 1024 * 1024))
            with RawSMTP("127.0.0.1", port, GATEWAY) as c:
                c.greeting(); c.cmd("EHLO x"); c.starttls(); c.cmd("EHLO x")
                code, text = c.cmd("MAIL FROM:<a@fabrikam.test>")
            assert code == 452 and "4.3.1" in text
            assert not list((home / "maildir").rglob("new/*"))
        finally:
            node.stop()
    finally:
        if mounted:
            result = subprocess.run(["umount", str(home)], capture_output=True, text=True)
            assert result.returncode == 0, f"could not unmount the test filesystem: {result.stderr}"


@pytest.fixture(autouse=True)
def _need_proc():
    if not Path("/proc/self/status").exists():
        pytest.fail("these tests read /proc (Linux)")
