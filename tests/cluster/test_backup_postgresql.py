"""Issue 21, backups of a PostgreSQL store: `mxgate backup` runs pg_dump (the password never on
the command line), `mxgate restore --store-url` loads the dump into a new, empty database, and a
node on it enforces the same policy version with the same message trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import rig
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore
from mxgate.trace.store import TraceStore


def _mxgate(home, *args, store_url: str):
    env = {k: v for k, v in os.environ.items() if k != "MXGATE_CONFIG"}
    env.update(MXGATE_HOME=str(home), MXGATE_STORE_URL=store_url)
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=env, timeout=120)


def test_postgresql_store_backed_up_with_pg_dump_and_restored_into_a_new_database(pg_cluster, tmp_path, node_factory):
    url = pg_cluster.create_database()
    engine = open_engine(url)
    try:
        store = PolicyStore(engine)
        store.save(rig.load_toml(rig.GUIDE_POLICY), actor="t", summary="one")
        store.save(rig.load_toml(rig.GUIDE_POLICY), actor="t", summary="two")
    finally:
        engine.dispose()
    n = node_factory(policy=None, store={"url": url})  # a running node writes while we back up
    rig.send_message("127.0.0.1", n.port(), source=rig.GATEWAY, sender="a@fabrikam.test", rcpts=["alice@contoso.test"],
                     data=rig.simple_message(subject="traced"))
    assert rig.wait_until(lambda: len(n.trace.search(recipient="alice@contoso.test")) == 1, timeout=10)

    r = _mxgate(n.home.root, "backup", str(tmp_path / "b"), "--json", store_url=url)  # the node's keys and certificates too
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["store"] == "postgresql" and manifest["policy_version"] == 2
    assert (tmp_path / "b" / "store" / "store.pgdump").stat().st_size > 0
    assert (tmp_path / "b" / "certs" / "server.pem").read_bytes() == (n.home.certs / "server.pem").read_bytes()

    target = pg_cluster.create_database()
    r = _mxgate(tmp_path / "new", "restore", str(tmp_path / "b"), "--store-url", target, store_url=target)
    assert r.returncode == 0, r.stderr
    assert "policy version 2" in r.stdout
    restored = open_engine(target)
    try:
        assert PolicyStore(restored).latest_version_number() == 2
        [row] = TraceStore(restored, node="x").search(recipient="alice@contoso.test")
        assert row["subject"] == "traced" and row["status"] == "Delivered"
    finally:
        restored.dispose()

    # A SQLite backup is not restored into PostgreSQL by mistake, nor a dump without a database.
    r = _mxgate(tmp_path / "new2", "restore", str(tmp_path / "b"), store_url="")
    assert r.returncode == 1 and "--store-url" in r.stderr
