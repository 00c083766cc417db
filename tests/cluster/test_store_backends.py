"""Issue 10, must-show 1 (part one): the store behaves the same on SQLite and on PostgreSQL.

Each test runs twice (`store_url`: a SQLite file, then a fresh database on the loopback
PostgreSQL cluster): migrations to HEAD, policy versions and their race rule, the CLI finding
the store through MXGATE_STORE_URL or MXGATE_CONFIG's [store] url, the message trace, the
quarantine and the database gateway queue with its leases. test_suites_on_postgresql.py reruns
the existing store/policy/trace suites on PostgreSQL as well.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import rig
from clusterkit import mxgate
from mxgate.errors import ConcurrentChangeError, StoreError
from mxgate.policy.document import load_toml
from mxgate.quarantine.store import QuarantineStateError, QuarantineStore
from mxgate.queue.dbspool import DbSpool, gateway_queue
from mxgate.queue.spool import RcptState, Recipient, StaleEntryError
from mxgate.store.db import HEAD_REVISION, MIGRATIONS_DIR, current_revision, open_engine
from mxgate.store.policy_store import PolicyStore
from mxgate.trace.store import TraceRecord, TraceStore


def test_migrations_reach_head_with_every_table(store_url, engine_for):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION  # nobody forgot the bump
    engine = engine_for(store_url)
    assert current_revision(engine) == HEAD_REVISION
    tables = set(inspect(engine).get_table_names())
    assert {"policy_versions", "trace_messages", "quarantine", "nodes", "gateway_queue"} <= tables
    # The queue table the migration made is the one dbspool.py writes (they are spelled twice).
    made = {c["name"] for c in inspect(engine).get_columns("gateway_queue")}
    assert made == {c.name for c in gateway_queue.c}


def test_nodes_starting_together_migrate_once(store_url):
    errors, engines = [], []

    def start():
        try:
            engines.append(open_engine(store_url))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert errors == [] and len(engines) == 4
    assert {current_revision(e) for e in engines} == {HEAD_REVISION}
    for e in engines:
        e.dispose()


def test_unknown_store_url_fails_clearly():
    with pytest.raises(StoreError, match="unsupported store URL 'mysql'"):
        open_engine("mysql://x@127.0.0.1/db")
    with pytest.raises(StoreError, match="psycopg 3 driver"):
        open_engine("postgresql://x@127.0.0.1/db")


def test_policy_versions_and_the_race_rule(store_url, engine_for):
    store = PolicyStore(engine_for(store_url))
    assert store.current().version == 0
    v1 = store.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="guide")
    assert (v1.version, store.current().version) == (1, 1)
    with pytest.raises(ConcurrentChangeError, match="based on 0"):
        store.save(load_toml(rig.GUIDE_POLICY), actor="t", summary="stale", base_version=0)
    results, lock = [], threading.Lock()

    def save(i):  # eight writers computed from version 1: exactly one may win
        try:
            pv = PolicyStore(store.engine).save(load_toml(rig.GUIDE_POLICY), actor=f"w{i}", summary="race", base_version=1)
            outcome = pv.version
        except ConcurrentChangeError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert sorted(results, key=str) == [2] + ["refused"] * 7
    assert [h.version for h in store.history()] == [2, 1]
    assert store.get(1).policy.inbound_connectors[0].name == "Third-party filter service"


def test_cli_finds_the_store_by_env_or_config(store_url, tmp_path, monkeypatch, engine_for):
    policy = tmp_path / "policy.toml"
    policy.write_text(rig.GUIDE_POLICY)
    applied = mxgate("policy", "apply", str(policy), home=tmp_path / "cli-home")
    assert applied.returncode == 0, applied.stderr
    assert PolicyStore(engine_for(store_url)).latest_version_number() == 1  # MXGATE_STORE_URL was honoured
    # Without the variable, MXGATE_CONFIG's [store] url is the store (as `mxgate serve --config` uses it).
    monkeypatch.delenv("MXGATE_STORE_URL")
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "n2"\n[store]\nurl = "{store_url}"\n')
    history = mxgate("policy", "history", "--json", home=tmp_path / "other-home", env={"MXGATE_CONFIG": str(config)})
    assert history.returncode == 0, history.stderr
    assert [v["version"] for v in json.loads(history.stdout)] == [1]
    # And with neither, the home's own SQLite file: empty.
    alone = mxgate("policy", "history", "--json", home=tmp_path / "other-home")
    assert json.loads(alone.stdout) == []


def test_trace_record_search_show_and_events(store_url, engine_for):
    trace = TraceStore(engine_for(store_url), node="n1")
    trace.start()
    try:
        now = time.time()
        trace.record(TraceRecord(trace_id="t1", status="Pending", sender="Friend@Fabrikam.test",
                                 recipient="alice@contoso.test", from_ip="127.0.0.77", policy_version=3,
                                 detail={"checks": {"spf": "pass"}}, events=[(now, "Receive", "from x")]))
        trace.record(TraceRecord(trace_id="t2", status="Rejected", sender="spam@evil.test",
                                 recipient="bob@contoso.test", from_ip="127.0.0.66", reason="relay-denied"))
        trace.flush()
        trace.add_event("t1", "Deliver", "into Maildir", recipient="alice@contoso.test", status="Delivered")
        trace.flush()
        [row] = trace.search(sender="friend@fabrikam")  # case-insensitive substring on both backends
        assert (row["status"], row["node"], row["policy_version"], row["detail"]["checks"]) == (
            "Delivered", "n1", 3, {"spf": "pass"})
        assert [e["event"] for e in trace.show(row["id"])["events"]] == ["Receive", "Deliver"]
        assert [r["trace_id"] for r in trace.search(ip="127.0.0.66", status="Rejected")] == ["t2"]
        assert {r["trace_id"] for r in trace.search(since=now - 60)} == {"t1", "t2"}
    finally:
        trace.stop()


def test_quarantine_add_preview_release(store_url, engine_for, home):
    engine = engine_for(store_url)
    q = QuarantineStore(engine, node="mbx1")
    body = b"From: ceo@fabrikam.test\r\nSubject: wire\r\n\r\n\x00binary\xff body\r\n"
    qid = q.add(trace_id="t9", sender="ceo@fabrikam.test", recipients=["Alice@contoso.test"], subject="wire",
                reason="dmarc-policy", body=body)
    assert q.get(qid)["body"] == body  # bytes survive both column types unchanged
    assert q.preview(qid)["headers"] == [["From", "ceo@fabrikam.test"], ["Subject", "wire"]]
    [path] = q.release(qid, home.maildir, actor="cli:t")
    assert path.read_bytes() == body
    with pytest.raises(QuarantineStateError, match="already released"):
        q.release(qid, home.maildir, actor="cli:t")


async def test_database_queue_leases(store_url, engine_for, tmp_path):
    engine = engine_for(store_url)
    now = [time.time()]
    clock = lambda: now[0]  # noqa: E731  (both nodes' lease clock: advanced, never slept)
    a = DbSpool.open(engine, "gwA", tmp_path / "a", lease=0.5, clock=clock)
    b = DbSpool.open(engine, "gwB", tmp_path / "b", lease=0.5, clock=clock)
    entry = await a.enqueue("s@fabrikam.test", ["alice@contoso.test", "bob@contoso.test"], b"msg", {"trace_id": "x"})
    [seen_by_b] = b.due(now[0])
    assert seen_by_b.queue_id == entry.queue_id and b.count() == 1  # any node sees any message
    held = await a.claim(entry)
    with pytest.raises(StaleEntryError):  # leased to A: B cannot take it
        await b.claim(seen_by_b)
    assert b.due(now[0]) == []
    assert await a.open_message(held) == b"msg"
    now[0] += 0.6  # A stalls past its lease (no renewer running): the message is due again
    [lapsed] = b.due(now[0])
    taken = await b.claim(lapsed)
    with pytest.raises(StaleEntryError, match="lease lost"):  # A's late outcome cannot overwrite B's
        await a.settle(held, [Recipient("alice@contoso.test", RcptState.DELIVERED)])
    left = await b.settle(taken, [Recipient("alice@contoso.test", RcptState.DELIVERED),
                                  Recipient("bob@contoso.test", RcptState.PENDING, "4.4.1", "down")],
                          next_attempt=time.time() + 60, error="down")
    assert (left.queue, left.attempts, left.pending) == ("deferred", 1, ("bob@contoso.test",))
    assert b.get(entry.queue_id).recipients[0].state is RcptState.DELIVERED
    again = await a.claim(left)  # a flush: the runner claims what due(inf) offered
    assert await a.settle(again, [Recipient("bob@contoso.test", RcptState.DELIVERED)]) is None
    assert a.count() == 0 and b.get(entry.queue_id) is None



async def test_database_queue_claim_race_leases_a_row_once(store_url, engine_for, tmp_path):
    """Two processes read the same due row before either writes (issue 19: a gateway node's
    processes share the queue): only one lease is granted, on SQLite as on PostgreSQL. B's whole
    claim runs between A's read and A's write (a hook on A's engine, no timing involved)."""
    from sqlalchemy import event

    engine_a, engine_b = engine_for(store_url), engine_for(store_url)
    a = DbSpool.open(engine_a, "gw", tmp_path / "a")
    b = DbSpool.open(engine_b, "gw-w1", tmp_path / "b")
    entry = await a.enqueue("s@fabrikam.test", ["alice@contoso.test"], b"msg", {})
    [due] = b.due(time.time())
    outcome: dict = {}

    def between(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "gateway_queue" in statement and "b" not in outcome:
            outcome["b"] = "pending"
            try:
                outcome["b"] = asyncio.run(b.claim(due)).queue  # this thread has no running loop
            except StaleEntryError:
                outcome["b"] = "refused"

    event.listen(engine_a, "after_cursor_execute", between)
    try:
        try:
            outcome["a"] = (await a.claim(entry)).queue
        except StaleEntryError:
            outcome["a"] = "refused"
    finally:
        event.remove(engine_a, "after_cursor_execute", between)
    assert sorted([outcome["a"], outcome["b"]]) == ["active", "refused"], outcome
    [row] = a.list()
    assert row.queue == "active" and row.revision == entry.revision + 1


async def test_database_queue_worker_leases_are_taken_back_by_the_first_process(store_url, engine_for, tmp_path):
    """Issue 19: each process of a gateway node leases as "<node>-w<N>"; restarted with fewer
    workers, the first process takes back the leases of the ones it no longer runs at once
    instead of leaving their messages for `lease` seconds — and no other node's, nor a running
    worker's."""
    engine = engine_for(store_url)
    w1 = DbSpool.open(engine, "gw-w1", tmp_path / "w1", lease=3600)
    w2 = DbSpool.open(engine, "gw-w2", tmp_path / "w2", lease=3600)
    other = DbSpool.open(engine, "gw-west", tmp_path / "o", lease=3600)  # another node, not a worker
    held = {}
    for name, sp in (("w1", w1), ("w2", w2), ("other", other)):
        e = await sp.enqueue("s@fabrikam.test", ["alice@contoso.test"], b"msg", {"n": name})
        held[name] = await sp.claim(e)
    first = DbSpool.open(engine, "gw", tmp_path / "gw", lease=3600, adopt_workers_from=2)  # now: gw and gw-w1
    assert set(first.recovery.requeued) == {held["w2"].queue_id}
    assert first.get(held["w2"].queue_id).queue == "deferred"
    assert first.get(held["w1"].queue_id).queue == "active" and first.get(held["other"].queue_id).queue == "active"
    assert held["w2"].queue_id in {e.queue_id for e in first.due(time.time())}
    DbSpool.open(engine, "gw", tmp_path / "gw", lease=3600, adopt_workers_from=1)
    assert first.get(held["w1"].queue_id).queue == "deferred" and first.get(held["other"].queue_id).queue == "active"


def test_a_store_still_switching_to_wal_is_waited_for_not_refused(tmp_path, monkeypatch):
    """SQLite answers "database is locked" at once, without its busy handler, to a switch to WAL
    while another connection holds a lock (nodes opening a new store together hit it): the
    opening node retries until the lock is gone instead of failing to start."""
    import sqlite3
    import time as time_module

    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (a)")  # a new database, still in rollback-journal mode
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    retrying = threading.Event()
    real_sleep = time_module.sleep

    def sleep(seconds):
        retrying.set()  # the opener met the lock and is waiting for it
        real_sleep(seconds)

    monkeypatch.setattr(time_module, "sleep", sleep)
    result: list = []
    opener = threading.Thread(target=lambda: result.append(_open_or_error(f"sqlite:///{path}")))
    opener.start()
    assert retrying.wait(30)
    holder.execute("COMMIT")
    holder.close()
    opener.join(60)
    engine = result[0]
    assert not isinstance(engine, Exception), engine
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def _open_or_error(url: str):
    try:
        return open_engine(url)
    except Exception as exc:  # surfaced by the test
        return exc
