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

    def refresh_failing_once(*args):
        seen.append(1)
        if len(seen) == 1:
            raise sqlite3.OperationalError("database is locked")  # the counter said "committed"
        return real_refresh(*args)

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


def test_a_commit_that_is_not_a_policy_change_costs_no_engine_query(tmp_path):
    """Every trace batch is a commit the counter sees; the watcher then reads the newest version
    number on the counter's own connection (issue 19), not through an engine connection."""
    from sqlalchemy import event

    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    checkouts, looks = [], []
    event.listen(engine, "checkout", lambda *a: checkouts.append(1))
    counter = watcher._commits
    real_first_value = counter.first_value
    counter.first_value = lambda sql: looks.append(sql) or real_first_value(sql)
    try:
        assert watcher._latest() == PolicyStore(engine).latest_version_number() == 1
        looks.clear()
        checkouts.clear()
        watcher.start()
        with sqlite3.connect(home.database) as other:  # what a trace batch does
            other.execute("UPDATE policy_versions SET summary = 'edited' WHERE version = 1")
        assert rig.wait_until(lambda: looks, timeout=10)
        assert checkouts == [] and watcher.current.version == 1
        PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2",
                                                               base_version=1)
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)  # a real change still loads
    finally:
        watcher.stop()
        engine.dispose()


# --- on the node's event loop (issue 19: no thread waking fifty times a second) ----------------

async def _until(predicate, timeout: float = 10.0) -> bool:
    """Wait on the loop (its timers must run) until `predicate()` holds."""
    import asyncio
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def _threads_named(name: str) -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_on_the_loop_a_commit_from_another_process_is_enforced_without_a_thread(tmp_path):
    import asyncio

    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    before = len(_threads_named("policy-watch"))
    changed = []
    watcher.subscribe(lambda compiled: changed.append(compiled.version))

    async def main():
        watcher.start(asyncio.get_running_loop())
        try:
            assert len(_threads_named("policy-watch")) == before  # no thread of its own
            # A look must never block the loop behind a lock: the counter's reads do not wait.
            assert watcher._commits._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0
            with sqlite3.connect(home.database) as other:  # a commit that is not a policy change
                other.execute("UPDATE policy_versions SET summary = 'edited' WHERE version = 1")
            light = PolicyStore(lite.open_current(home.database_url))
            light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2", base_version=1)
            assert await _until(lambda: watcher.current.version == 2)
            assert changed == [2]  # listeners told once
            light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v3", base_version=2)
            assert await _until(lambda: watcher.current.version == 3)
        finally:
            watcher.stop()
        assert watcher._timer is None

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


def test_on_the_loop_a_failing_look_does_not_lose_the_commit(tmp_path, monkeypatch):
    import asyncio

    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    counter = watcher._commits
    real_first_value = counter.first_value
    failures = []

    def locked_once(sql):
        if not failures:
            failures.append(sql)
            raise sqlite3.OperationalError("database is locked")  # what a busy store answers at once
        return real_first_value(sql)

    async def main():
        watcher.start(asyncio.get_running_loop())
        try:
            counter.first_value = locked_once
            PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t",
                                                                   summary="v2", base_version=1)
            # The counter moved past the commit during the failing look; the next look queries anyway.
            assert await _until(lambda: watcher.current.version == 2)
            assert failures
        finally:
            watcher.stop()

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


def test_on_the_loop_a_failing_load_is_tried_again(tmp_path, monkeypatch):
    """Loading the new version (in a thread) fails once: the watcher keeps the old policy, is not
    left 'loading' for ever, and takes the version at a later look."""
    import asyncio

    home, engine = _store(tmp_path)
    store = PolicyStore(engine)
    watcher = PolicyWatcher(store)
    real_current = store.current
    calls = []

    def current_failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real_current()

    async def main():
        watcher.start(asyncio.get_running_loop())
        try:
            monkeypatch.setattr(store, "current", current_failing_once)
            PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t",
                                                                   summary="v2", base_version=1)
            assert await _until(lambda: watcher.current.version == 2)
            assert len(calls) >= 2
        finally:
            watcher.stop()

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


def test_without_a_commit_counter_the_loop_is_not_used(tmp_path):
    """PostgreSQL (no counter): the watcher keeps its thread, polling and listening as before."""
    import asyncio

    _home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    watcher._commits.close()
    watcher._commits = None  # as on PostgreSQL

    async def main():
        watcher.start(asyncio.get_running_loop())
        try:
            assert watcher._thread is not None and watcher._thread.is_alive() and watcher._timer is None
        finally:
            watcher.stop()

    try:
        asyncio.run(main())
    finally:
        engine.dispose()
