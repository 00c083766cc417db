"""Issue 21, backup and restore: back up a running node under light load, restore into a new
home, start it, and find every acknowledged message and the same policy version.

A client keeps sending (a bounded number of messages) while `mxgate backup --maildirs --spools`
runs against the live `mxgate serve`. Every message whose 250 arrived before the backup began
copying Maildirs (the manifest's `maildirs_from`) must be in the restored home, byte for byte;
the restored node enforces the same policy version and serves the same certificate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import rig
from rig import GATEWAY, RawSMTP, SubprocessNode, free_port, wait_until
from mxgate.config.home import Home
from mxgate.server.tls import peer_certificate

MAX_MESSAGES = 300
RCPT = "alice@contoso.test"


def _load(port: int, acked: dict[str, float], stop: threading.Event) -> None:
    """Persistent TLS sessions from the gateway address; subject -> time the 250 was read."""
    n = 0
    while not stop.is_set() and n < MAX_MESSAGES:
        with RawSMTP("127.0.0.1", port, GATEWAY, timeout=10) as c:
            c.greeting(); c.cmd("EHLO gw.test"); c.starttls(); c.cmd("EHLO gw.test")
            while not stop.is_set() and n < MAX_MESSAGES:
                subject = f"b{n}"
                n += 1
                assert c.cmd("MAIL FROM:<gw@fabrikam.test>")[0] == 250
                assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
                assert c.cmd("DATA")[0] == 354
                c.send(rig.simple_message(subject=subject) + b".\r\n")
                if c.read_reply()[0] == 250:
                    acked[subject] = time.time()  # after the reply: the ack was no later than this


def _messages(home: Path) -> dict[str, tuple[str, bytes]]:
    """subject -> (file name, bytes) of every message in the recipient's Maildir."""
    out = {}
    for sub in ("new", "cur"):
        d = home / "maildir" / RCPT / sub
        for p in d.iterdir() if d.exists() else []:
            data = p.read_bytes()
            subject = next(line[9:].decode() for line in data.split(b"\r\n") if line.startswith(b"Subject: "))
            out[subject] = (p.name, data)
    return out


def _mxgate(home: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MXGATE_CONFIG", "MXGATE_STORE_URL")}
    env["MXGATE_HOME"] = str(home)
    if config:
        env["MXGATE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=env, timeout=120)


def _served_pin(port: int) -> str:
    with RawSMTP("127.0.0.1", port, GATEWAY) as c:
        c.greeting(); c.cmd("EHLO gw.test"); c.starttls()
        return peer_certificate(c.sock.getpeercert(binary_form=True)).spki_sha256


def test_backup_of_a_running_node_restores_every_acknowledged_message(tmp_path, monkeypatch):
    old_home = tmp_path / "old"
    h = Home.open(old_home)
    rig.apply_policy(h, rig.GUIDE_POLICY)
    policy_version = rig.apply_policy(h, rig.GUIDE_POLICY.replace('address = "alice@contoso.test"',
                                                                  'address = "alice@contoso.test"\n\n[[mailbox]]\naddress = "carol@contoso.test"', 1))
    assert policy_version == 2
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "old"\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    node = SubprocessNode(old_home, config).start(wait_for=("127.0.0.1", port))
    acked: dict[str, float] = {}
    stop = threading.Event()
    load = threading.Thread(target=_load, args=(port, acked, stop), daemon=True)
    restored = None
    try:
        old_pin = _served_pin(port)
        load.start()
        assert wait_until(lambda: len(acked) >= 20, timeout=30), "the load did not start"
        backup_dir = tmp_path / "backup"
        r = _mxgate(old_home, "backup", str(backup_dir), "--maildirs", "--spools", "--json", config=config)
        during = len(acked)
        stop.set()
        load.join(30)
        assert r.returncode == 0, r.stderr
        manifest = json.loads(r.stdout)
        assert manifest["policy_version"] == 2 and manifest["store"] == "sqlite"
        must_have = {s for s, t in acked.items() if t < manifest["maildirs_from"]}
        assert len(must_have) >= 20 and during > 20, (len(must_have), during)
        print(f"{len(acked)} acknowledged, {len(must_have)} before the Maildir copy began, "
              f"{manifest['maildir_messages']} messages copied, backup took {manifest['finished_at'] - manifest['created_at']:.2f}s")

        # Restore into a new home and start a node on it (on another port: the old one still runs).
        new_home = tmp_path / "new"
        r = _mxgate(new_home, "restore", str(backup_dir))
        assert r.returncode == 0, r.stderr
        assert "policy version 2" in r.stdout and (new_home / "node.toml").exists()
        port2 = free_port()
        monkeypatch.setenv("MXGATE_MAILBOX__LISTEN", f'["127.0.0.1:{port2}"]')
        monkeypatch.setenv("MXGATE_NODE__NAME", "restored")
        restored = SubprocessNode(new_home, new_home / "node.toml").start(wait_for=("127.0.0.1", port2))

        status = json.loads(_mxgate(new_home, "status", "--json").stdout)
        assert status["policy_version"] == 2
        assert wait_until(lambda: any(n["name"] == "restored" and n["alive"] and n["policy_version"] == 2
                                      for n in json.loads(_mxgate(new_home, "status", "--json").stdout)["nodes"]), 15)
        assert _served_pin(port2) == old_pin  # the same certificate and key came back

        old_msgs, new_msgs = _messages(old_home), _messages(new_home)
        missing = must_have - set(new_msgs)
        assert not missing, f"acknowledged before the backup but not restored: {sorted(missing)[:10]}"
        for subject, (name, data) in new_msgs.items():  # whatever was copied is whole, never a torn file
            assert old_msgs[subject][1] == data, subject
        # The restored node takes mail for the mailbox the second policy version added.
        r2 = rig.send_message("127.0.0.1", port2, source=GATEWAY, sender="gw@fabrikam.test", rcpts=["carol@contoso.test"],
                              data=rig.simple_message(subject="after restore", to="carol@contoso.test"))
        assert r2["end"][0] == 250, r2
    finally:
        stop.set()
        node.stop()
        if restored:
            restored.stop()


def test_restore_refuses_a_damaged_backup_and_a_home_in_use(tmp_path):
    home = tmp_path / "old"
    rig.apply_policy(Home.open(home), rig.GUIDE_POLICY)
    r = _mxgate(home, "backup", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "policy version 1" in r.stdout
    r = _mxgate(home, "backup", str(tmp_path / "b"))
    assert r.returncode == 1 and "not empty" in r.stderr

    r = _mxgate(home, "restore", str(tmp_path / "b"))  # onto the home it came from: in use
    assert r.returncode == 1 and "in use" in r.stderr and "--force" in r.stderr

    db = tmp_path / "b" / "store" / "mxgate.db"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0xFF
    db.write_bytes(bytes(data))
    r = _mxgate(tmp_path / "fresh", "restore", str(tmp_path / "b"))
    assert r.returncode == 1 and "damaged" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "fresh" / "mxgate.db").exists()  # nothing half-restored

    r = _mxgate(tmp_path / "fresh2", "restore", str(tmp_path / "nothing-here"))
    assert r.returncode == 1 and "not an mxgate backup" in r.stderr
