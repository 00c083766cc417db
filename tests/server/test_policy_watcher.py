"""The policy watcher on SQLite (issue 19: enforced within 100 ms of the commit): it looks at the
store's commit counter every few ms and queries only after a commit — a commit from any other
connection or process is seen, nothing else wakes it, and a failing look does not lose a commit."""

from __future__ import annotations

import sqlite3

import rig
from mxgate.config.home import Home
from mxgate.policy.document import load_toml
from mxgate.server.policy_watch import PolicyWatcher
from mxgate.store import sqlite as lite
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore


def _store(tmp_path):
    home = Home.open(tmp_path / "home")
    rig.apply_policy(home, rig.GUIDE_POLICY)
    engine = open_engine(home.database_url)
    return home, engine


def test_the_commit_counter_sees_other_connections_commits_only(tmp_path):
    home, engine = _store(tmp_path)
    try:
        counter = lite.commit_counter(home.database_url)
        assert counter is not None and not counter.committed()
        PolicyStore(engine).current()  # reads change nothing
        assert not counter.committed()
        light = PolicyStore(lite.open_current(home.database_url))
        light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="x", base_version=1)
        assert counter.committed() and not counter.committed()  # one commit, seen once
        with sqlite3.connect(home.database) as other:  # any writer at all, e.g. the trace
            other.execute("UPDATE policy_versions SET summary = 'edited' WHERE version = 1")
        assert counter.committed()
        counter.close()
    finally:
        engine.dispose()
    assert lite.commit_counter("postgresql+psycopg://u@127.0.0.1/db") is None
    assert lite.commit_counter(f"sqlite:///{tmp_path / 'none.db'}") is None


def test_a_running_watcher_takes_a_commit_from_another_process(tmp_path):
    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    try:
        assert watcher._commits is not None and watcher.current.version == 1
        watcher.start()
        light = PolicyStore(lite.open_current(home.database_url))
        light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2", base_version=1)
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)
    finally:
        watcher.stop()
        engine.dispose()


def test_a_failing_look_does_not_lose_the_commit(tmp_path, monkeypatch):
    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    seen = []
    real_refresh = watcher.refresh

    def refresh_failing_once():
        seen.append(1)
        if len(seen) == 1:
            raise sqlite3.OperationalError("database is locked")  # the counter said "committed"
        return real_refresh()

    monkeypatch.setattr(watcher, "refresh", refresh_failing_once)
    try:
        watcher.start()
        PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2",
                                                               base_version=1)
        # The counter has moved past the commit; the retry after the failure queries anyway.
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)
        assert len(seen) >= 2
    finally:
        watcher.stop()
        engine.dispose()


def test_on_sqlite_the_watcher_asks_on_the_counters_connection_not_the_engine(tmp_path, monkeypatch):
    """Issue 19: the trace's commits wake the watcher ~50 times a second under load; each look asks
    for the newest version on the counter's own sqlite3 connection (~10 µs), not through the engine."""
    home, engine = _store(tmp_path)
    store = PolicyStore(engine)
    watcher = PolicyWatcher(store)
    engine_asks = []
    real_latest = store.latest_version_number
    monkeypatch.setattr(store, "latest_version_number", lambda: engine_asks.append(1) or real_latest())
    try:
        assert watcher._commits.scalar("SELECT MAX(version) FROM policy_versions") == 1
        watcher.start()
        for n in range(5):  # other writers' commits: looks, no change
            with sqlite3.connect(home.database) as other:
                other.execute("UPDATE policy_versions SET summary = ? WHERE version = 1", (f"edit {n}",))
        PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2",
                                                               base_version=1)
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)
        assert engine_asks == []
    finally:
        watcher.stop()
        engine.dispose()
