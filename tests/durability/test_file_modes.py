"""Issue 17: the store (SQLite db, -wal, -shm), keys and spools are private — files 0600,
directories 0700, under a 0700 home — whatever the umask of the process that made them."""

from __future__ import annotations

import os
import stat

import pytest

from rig import GATEWAY, INTERNET, free_port, send_message, simple_message, wait_until

FAST_QUEUE = {"retry_first": 0.3, "retry_max_backoff": 1.0, "host_backoff": 0.2, "queue_scan_interval": 0.1,
              "relay_connect_timeout": 1.0, "relay_timeout": 5.0}
# Public by nature (DNS TXT values to publish, certificates): readable, never writable by others.
PUBLIC_SUFFIXES = (".txt", ".pem", ".crt")


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def modes(root):
    for dirpath, dirnames, filenames in os.walk(root):
        yield dirpath, stat.S_IMODE(os.stat(dirpath).st_mode), True
        for f in filenames:
            p = os.path.join(dirpath, f)
            yield p, stat.S_IMODE(os.lstat(p).st_mode), False


def test_everything_is_private_with_umask_zero(node_factory, dns, tmp_path, open_umask):
    n = node_factory(roles={"mailbox": True, "gateway": True, "admin": True}, home_dir=tmp_path / "home",
                     admin={"listen": f"127.0.0.1:{free_port()}"},
                     gateway={"listen": [f"{GATEWAY}:{free_port(GATEWAY)}"], "downstream": [f"127.0.0.1:{free_port()}"],
                              "hostname": "gw.contoso.test", **FAST_QUEUE},
                     dns={"servers": [dns.address], "timeout": 1.0})
    r = send_message("127.0.0.1", n.port(), source=GATEWAY, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=simple_message())
    assert r["end"][0] == 250  # a Maildir file
    r = send_message(GATEWAY, n.port("gateway"), source=INTERNET, sender="s@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=simple_message())
    assert r["end"][0] == 250  # a gateway spool file (its downstream is down: it stays queued)
    n.trace.flush()
    home = n.home.root
    assert wait_until(lambda: any(p.endswith("-wal") for p, _, _ in modes(home)))
    seen = {"db": 0, "spool": 0, "keys": 0}
    for path, mode, is_dir in modes(home):
        rel = os.path.relpath(path, home)
        if is_dir:
            assert mode == 0o700, (rel, oct(mode))
            continue
        assert not mode & 0o022, (rel, oct(mode))  # nobody else may ever write
        if rel.startswith("mxgate.db"):
            seen["db"] += 1
            assert mode == 0o600, (rel, oct(mode))
        elif rel.startswith("spool/") and not rel.endswith(".lock"):
            seen["spool"] += 1
            assert mode == 0o600, (rel, oct(mode))
        elif rel.startswith("keys/") and not rel.endswith(PUBLIC_SUFFIXES):
            seen["keys"] += 1
            assert mode == 0o600, (rel, oct(mode))
        elif rel.endswith((".key", "-key.pem")) or "maildir/" in rel:
            assert mode == 0o600, (rel, oct(mode))
    # the store, its -wal and -shm, and the policy change stamp (store/change_stamp.py)
    assert seen["db"] == 4 and seen["spool"] >= 1 and seen["keys"] >= 2, seen
    assert os.path.exists(home / "mxgate.db-mxgate_policy.changed")


def test_an_existing_loose_home_and_database_are_tightened(tmp_path, open_umask):
    from mxgate.config.home import Home
    from mxgate.store.db import open_engine

    root = tmp_path / "loose"
    root.mkdir(mode=0o777)
    (root / "mxgate.db").touch(mode=0o666)
    (root / "mxgate.db-mxgate_policy.changed").touch(mode=0o666)
    home = Home.open(root)
    open_engine(home.database_url).dispose()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / "mxgate.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(root / "mxgate.db-mxgate_policy.changed").st_mode) == 0o600
