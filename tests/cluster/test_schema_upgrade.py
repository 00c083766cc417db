"""Issue 21, upgrades: a store created at the previous schema revision, with data in it, is
migrated when a node starts; a store migrated by a newer mxgate is refused with a clear message
and left alone. Run on SQLite and PostgreSQL (the store_url fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

import rig
from mxgate.policy.document import load_toml
from mxgate.store.db import HEAD_REVISION, MIGRATIONS_DIR, SchemaTooNewError, current_revision, known_revisions, open_engine
from mxgate.store.policy_store import PolicyStore


def _create_at(url: str, revision: str):
    """A store as the previous mxgate release left it: migrated only up to `revision`."""
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return engine


def test_store_at_the_previous_revision_with_data_is_upgraded_on_start(store_url, node_factory, tmp_path):
    revisions = known_revisions()
    assert revisions[-1] == HEAD_REVISION and len(revisions) >= 2
    previous = revisions[-2]
    old = _create_at(store_url, previous)
    try:
        assert current_revision(old) == previous
        # Data written by the previous release: a policy version and a message trace row.
        PolicyStore(old).save(load_toml(rig.GUIDE_POLICY), actor="old-release", summary="before the upgrade")
        with old.begin() as conn:
            conn.execute(text("INSERT INTO trace_messages (trace_id, node, role, direction, created_at, updated_at, sender, "
                              "recipient, subject, status, message_id, size, from_ip, original_ip, connector, policy_version, "
                              "reason, detail) VALUES ('t-old', 'n', 'mailbox', 'inbound', :now, :now, 'a@fabrikam.test', "
                              "'alice@contoso.test', 'kept across the upgrade', 'Delivered', '<m@x>', 10, '127.0.0.10', '', "
                              "'', 1, '', '{}')"), {"now": time.time()})
        tables_before = set(inspect(old).get_table_names())
    finally:
        old.dispose()

    # A node of this release starts on it: the schema is brought to HEAD, the data stays.
    n = node_factory(policy=None, store={"url": store_url})
    assert n.node.watcher.current.version == 1
    assert current_revision(n.node.engine) == HEAD_REVISION
    assert set(inspect(n.node.engine).get_table_names()) > tables_before  # the newer revisions' tables
    [row] = n.trace.search(trace_id="t-old")
    assert row["subject"] == "kept across the upgrade"
    if store_url.startswith("sqlite"):
        # SQLite is migrated only after a consistent copy of the old database is put beside it.
        db = store_url.removeprefix("sqlite:///")
        copy = create_engine(f"sqlite:///{db}.before-{HEAD_REVISION}")
        try:
            assert current_revision(copy) == previous
            assert PolicyStore(copy).latest_version_number() == 1
        finally:
            copy.dispose()


def test_a_store_from_a_newer_mxgate_is_refused_and_left_alone(store_url, tmp_path):
    engine = open_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaTooNewError, match=r"revision 9999_from_the_future, newer than this mxgate knows"):
        open_engine(store_url)

    # `mxgate serve` says so in one line and exits; the store is not touched.
    config = tmp_path / "node.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{rig.free_port()}"]\n')
    r = subprocess.run([sys.executable, "-m", "mxgate", "serve", "--config", str(config)], capture_output=True, text=True,
                       env=dict(os.environ, MXGATE_HOME=str(tmp_path / "home")), timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "newer than this mxgate knows" in r.stderr and "Upgrade mxgate on this node" in r.stderr
    assert "Traceback" not in r.stderr
    check = create_engine(store_url)
    try:
        assert current_revision(check) == "9999_from_the_future"
    finally:
        check.dispose()
