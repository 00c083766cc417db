"""The policy watcher on SQLite (issue 19: enforced within 100 ms of the commit): it sleeps until a
policy commit's stamp is written (store/change_stamp.py, inotify) — a commit from any other
connection or process is seen, other commits (the trace's) do not wake it, stop does not wait for
its periodic look, a failing look does not lose a commit; without inotify it looks at the store's
commit counter every few ms and queries only after a commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import rig
from mxgate.config.home import Home
from mxgate.policy.document import load_toml
from mxgate.server import policy_watch
from mxgate.server.policy_watch import PolicyWatcher
from mxgate.store import change_stamp
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


@pytest.fixture(params=["stamp", "polling"])
def wake(request, monkeypatch):
    """Both ways a watcher on SQLite learns of a commit: the stamp's inotify watch, and polling
    the commit counter where inotify is missing."""
    if request.param == "polling":
        monkeypatch.setattr(change_stamp.StampWatch, "open", classmethod(lambda cls, *a: None))
    return request.param


def test_a_running_watcher_takes_a_commit_from_another_process(tmp_path, wake):
    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    try:
        assert watcher._commits is not None and watcher.current.version == 1
        assert (watcher._stamp is not None) == (wake == "stamp")
        watcher.start()
        light = PolicyStore(lite.open_current(home.database_url))
        light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2", base_version=1)
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)
    finally:
        watcher.stop()
        engine.dispose()


def test_a_failing_look_does_not_lose_the_commit(tmp_path, monkeypatch, wake):
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


def test_a_commit_that_is_not_a_policy_change_costs_no_engine_query(tmp_path, monkeypatch):
    """Without inotify every trace batch is a commit the counter sees; the watcher then reads the
    newest version number on the counter's own connection (issue 19), not through an engine
    connection."""
    from sqlalchemy import event

    monkeypatch.setattr(change_stamp.StampWatch, "open", classmethod(lambda cls, *a: None))
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


def test_only_a_policy_save_wakes_the_stamp_watch(tmp_path):
    """The trace's commits (any other write) leave the watch asleep; a save through either way
    into the store (the CLI's sqlite3, the node's engine) wakes it by the time save returns."""
    home, engine = _store(tmp_path)
    watch = change_stamp.StampWatch.open(str(home.database), "mxgate_policy")
    assert watch is not None
    try:
        assert not watch.wait(0)
        with sqlite3.connect(home.database) as other:  # what a trace batch does
            other.execute("UPDATE policy_versions SET summary = 'edited' WHERE version = 1")
        (home.database.parent / "unrelated.txt").write_text("x")  # another file closed after writing
        assert not watch.wait(0)
        light = PolicyStore(lite.open_current(home.database_url))
        light.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2", base_version=1)
        assert watch.wait(0) and not watch.wait(0)
        PolicyStore(engine).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v3", base_version=2)
        assert watch.wait(0)
        watch.interrupt()
        assert watch.wait(0)
    finally:
        watch.close()
        engine.dispose()


def test_the_watcher_sleeps_through_other_commits_and_wakes_for_a_policy_one(tmp_path, monkeypatch):
    """With its periodic look an hour away, five trace-like commits cost no look at all and the
    policy change one; stop() does not wait for the hour."""
    monkeypatch.setattr(policy_watch, "SAFETY_INTERVAL", 3600.0)
    home, engine = _store(tmp_path)
    watcher = PolicyWatcher(PolicyStore(engine))
    assert watcher._stamp is not None
    looks = []
    counter = watcher._commits
    real_first_value = counter.first_value
    counter.first_value = lambda sql: looks.append(sql) or real_first_value(sql)
    try:
        watcher.start()
        with sqlite3.connect(home.database) as other:
            for i in range(5):
                other.execute("UPDATE policy_versions SET summary = ? WHERE version = 1", (f"edit {i}",))
                other.commit()
        PolicyStore(lite.open_current(home.database_url)).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2",
                                                               base_version=1)
        assert rig.wait_until(lambda: watcher.current.version == 2, timeout=10)
        assert len(looks) == 1
    finally:
        watcher.stop()
        engine.dispose()
    assert not watcher._thread.is_alive()


def test_a_stamp_that_cannot_be_written_does_not_fail_the_change(tmp_path):
    """The version is committed before the stamp: a stamp path that is not writable (here a
    directory) leaves the change made; the nodes find it at their next periodic look."""
    home, engine = _store(tmp_path)
    try:
        stamp = Path(change_stamp.stamp_path(str(home.database), "mxgate_policy"))
        assert stamp.read_text() == "1"  # the first version's, written by rig.apply_policy
        stamp.unlink()
        stamp.mkdir()
        assert PolicyStore(engine).save(load_toml(rig.GUIDE_POLICY), actor="t", summary="v2").version == 2
        assert PolicyStore(engine).latest_version_number() == 2
    finally:
        engine.dispose()


def test_the_stamp_suffix_the_store_keeps_private_is_the_policy_stamp():
    from mxgate.store.notify import POLICY_CHANNEL

    assert change_stamp.stamp_path("/x/mxgate.db", POLICY_CHANNEL) == "/x/mxgate.db" + lite.STAMP_SUFFIX
