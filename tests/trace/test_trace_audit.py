"""Issue 15: the trace is an audit log. Rows written while the database is unreachable are
journalled locally (fsync'd) and replayed when it returns; one session cannot flood it
(refused RCPTs count toward the error limit, identical refusals become one row with a count);
rows older than the retention are pruned and the row count is a metric."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine

import rig
from pg_rig import PgCluster
from rig import ATTACKER, RawSMTP, wait_until

from mxgate.store.db import open_engine
from mxgate.trace.store import TraceRecord, TraceStore


def _refusal(i: int, **kw) -> TraceRecord:
    return TraceRecord(trace_id=f"t{i:04d}", status="Rejected", sender="a@fabrikam.test",
                       recipient=f"r{i}@contoso.test", reason="relay-denied", detail={"stage": "rcpt"}, **kw)


# --- the journal, without a network: a database that refuses every write ------------------------

def test_rows_the_database_refuses_are_journalled_and_replayed_in_order(tmp_path):
    good = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    down = create_engine(f"sqlite:///{tmp_path / 'missing' / 'store.db'}")  # its directory does not exist
    store = TraceStore(down, node="n1", journal=tmp_path / "trace.journal")
    store.record(_refusal(1))
    store.add_event("t0001", "Reject", "later event", status="Rejected")
    assert store.journal.pending == 2 and store.stats["journalled"] == 2
    # A restart with the journal still on disk (the process died during the outage) finds it.
    again = TraceStore(good, node="n1", journal=tmp_path / "trace.journal")
    assert again.journal.pending == 2
    again.record(_refusal(2))  # newer rows go after the journal, never before it
    assert again.journal.pending == 0 and again.stats["replayed"] == 2
    rows = again.search(limit=10)
    assert sorted(r["trace_id"] for r in rows) == ["t0001", "t0002"]
    first = again.show(next(r["id"] for r in rows if r["trace_id"] == "t0001"))
    assert [e["detail"] for e in first["events"]] == ["later event"]
    good.dispose()


def test_a_torn_last_line_is_skipped(tmp_path):
    from mxgate.trace.journal import Journal

    j = Journal(tmp_path / "j")
    j.append([{"a": 1}, {"b": 2}])
    with open(tmp_path / "j", "ab") as fh:
        fh.write(b'{"c": ')  # a crash mid-append, never fsync'd
    assert Journal(tmp_path / "j").read() == [{"a": 1}, {"b": 2}]


def test_identical_refusals_in_a_session_are_one_row_with_a_count(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = TraceStore(engine, node="n1", journal=tmp_path / "trace.journal")
    for _ in range(5):
        store.record_refusal("s1", TraceRecord(
            trace_id=f"x{time.monotonic_ns()}", status="Rejected", sender="a@f.test", recipient="r@contoso.test",
            reason="relay-denied", detail={"stage": "rcpt"}))
    store.record_refusal("s2", TraceRecord(trace_id="other", status="Rejected", sender="a@f.test",
                                           recipient="r@contoso.test", reason="relay-denied", detail={"stage": "rcpt"}))
    rows = store.search(limit=10)
    assert sorted(r["detail"]["count"] for r in rows) == [1, 5]  # one row per session
    engine.dispose()


def test_a_flood_of_new_connections_from_one_address_is_one_row_per_burst(tmp_path):
    """adversarial.md: refused connections must not cost a row each. The same refusal from one
    client address in new sessions adds to one row's count; another address, another recipient
    or a burst after REFUSAL_WINDOW gets a row of its own."""
    from mxgate.trace.store import REFUSAL_WINDOW

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = TraceStore(engine, node="n1")
    t0 = time.time()

    def refusal(session: str, ip: str, rcpt: str = "r@contoso.test", at: float = t0) -> None:
        store.record_refusal(session, TraceRecord(
            trace_id=f"x{time.monotonic_ns()}", status="Rejected", sender="a@f.test", recipient=rcpt,
            reason="connector-attribution", from_ip=ip, role="mailbox", detail={"stage": "rcpt", "session": session},
            created_at=at))

    for i in range(50):
        refusal(f"s{i}", "127.0.0.66", at=t0 + i * 0.1)
    refusal("t1", "127.0.0.67")
    refusal("t2", "127.0.0.66", rcpt="bob@contoso.test")
    refusal("late", "127.0.0.66", at=t0 + REFUSAL_WINDOW + 5)
    rows = sorted(store.search(limit=100), key=lambda r: (r["from_ip"], r["recipient"], r["detail"]["count"]))
    assert [(r["from_ip"], r["recipient"], r["detail"]["count"]) for r in rows] == [
        ("127.0.0.66", "bob@contoso.test", 1), ("127.0.0.66", "r@contoso.test", 1),
        ("127.0.0.66", "r@contoso.test", 50), ("127.0.0.67", "r@contoso.test", 1)]
    burst = next(r for r in rows if r["detail"]["count"] == 50)
    assert burst["detail"]["session"] == "s0"  # the first attempt's facts; the count says how many followed
    assert burst["updated_at"] == pytest.approx(t0 + 4.9)  # when the last one came
    engine.dispose()


def test_retention_prunes_old_rows_and_counts_the_rest(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = TraceStore(engine, node="n1", retention_days=7)
    now = time.time()
    store.record(TraceRecord(trace_id="old", status="Delivered", created_at=now - 8 * 86400,
                             events=[(now - 8 * 86400, "Receive", "x")]))
    store.record(TraceRecord(trace_id="new", status="Delivered", created_at=now - 86400))
    assert store.prune(now) == 1
    assert [r["trace_id"] for r in store.search(limit=10)] == ["new"] and store.rows == 1
    engine.dispose()


# --- end to end: a mailbox node on PostgreSQL, the database stopped and restarted ----------------

@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own (the shared one must stay up for other tests)."""
    cluster = PgCluster().start()
    cluster.wait_ready()
    yield cluster
    cluster.stop()


def test_trace_rows_survive_a_stopped_postgresql(node_factory, own_pg):
    url = own_pg.create_database()
    n = node_factory(None, store={"url": url})
    trace = n.trace

    def attempt(rcpts: list[str]) -> list[int]:
        with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
            c.greeting()
            c.cmd("EHLO attacker.test")
            c.starttls()
            c.cmd("EHLO attacker.test")
            c.cmd("MAIL FROM:<a@fabrikam.test>")
            return [c.cmd(f"RCPT TO:<{r}>")[0] for r in rcpts]

    assert attempt(["alice@contoso.test"]) == [550]
    assert wait_until(lambda: len(trace.search(limit=50)) == 1, timeout=10)

    own_pg.halt()
    try:
        for i in range(3):
            assert attempt([f"user{i}@contoso.test"]) == [550]
        assert attempt(["bob@contoso.test"] * 4) == [550] * 4  # one session, the same refusal 4 times
        assert wait_until(lambda: trace.journal.pending >= 5, timeout=15), trace.stats
        assert (n.home.spool / "trace.journal").stat().st_size > 0  # on disk, not in memory
    finally:
        own_pg.resume()

    def rows():
        try:
            return trace.search(limit=50)
        except Exception:
            return []

    assert wait_until(lambda: len(rows()) == 5 and trace.journal.pending == 0, timeout=20), trace.stats
    by_rcpt = {r["recipient"]: r for r in rows()}
    assert set(by_rcpt) == {"alice@contoso.test", "user0@contoso.test", "user1@contoso.test",
                            "user2@contoso.test", "bob@contoso.test"}
    assert by_rcpt["bob@contoso.test"]["detail"]["count"] == 4
    assert all(r["status"] == "Rejected" for r in rows())


def test_refused_recipients_count_toward_the_session_error_limit(node_factory):
    """A session guessing addresses is cut off at [mailbox.limits] max_errors, like Postfix's
    smtpd_hard_error_limit, and leaves at most that many refusal rows."""
    n = node_factory(mailbox={"limits": {"max_errors": 5}})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO attacker.test")
        c.starttls()
        c.cmd("EHLO attacker.test")
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        codes = [c.cmd(f"RCPT TO:<guess{i}@contoso.test>")[0] for i in range(4)]
        code, text = c.cmd("RCPT TO:<guess4@contoso.test>")
        assert codes == [550] * 4 and code == 550
        assert c.read_reply()[0] == 421 and c.closed()
    n.trace.flush()
    rows = n.trace.search(limit=50)
    assert len([r for r in rows if r["reason"] != "too-many-errors"]) == 5


def test_later_events_in_one_batch_reach_the_right_rows_in_order(tmp_path):
    # The writer writes a batch's later events with three statements in all; what each row
    # ends with must be what writing them one by one gave.
    from mxgate.trace.store import EventUpdate

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = TraceStore(engine, node="n1")
    earlier = TraceRecord(trace_id="old", status="Queued", recipient="x@contoso.test")
    store.record(earlier)  # a row from an earlier batch
    two = [TraceRecord(trace_id="m1", status="Queued", recipient=f"{r}@contoso.test") for r in ("a", "b")]
    batch = [*two,
             EventUpdate("m1", None, "Send", "attempt", None, 10.0),
             EventUpdate("m1", "a@contoso.test", "Deliver", "delivered to a", "Delivered", 11.0),
             EventUpdate("m1", "b@contoso.test", "Defer", "451 for b", "Deferred", 12.0),
             EventUpdate("m1", "b@contoso.test", "Deliver", "delivered to b", "Delivered", 13.0),
             EventUpdate("old", None, "Send", "relayed", None, 14.0),
             EventUpdate("unknown", None, "Send", "no such row", "Delivered", 15.0)]
    for rec in two:
        rec.node = "n1"
    store._write(batch)
    rows = {r["recipient"]: r for r in store.search(limit=10)}
    a, b, old = (store.show(rows[k]["id"]) for k in ("a@contoso.test", "b@contoso.test", "x@contoso.test"))
    assert [e["detail"] for e in a["events"]] == ["attempt", "delivered to a"]
    assert [e["detail"] for e in b["events"]] == ["attempt", "451 for b", "delivered to b"]
    assert (a["status"], b["status"]) == ("Delivered", "Delivered")
    assert (a["updated_at"], b["updated_at"]) == (11.0, 13.0)
    assert old["status"] == "Queued" and old["updated_at"] == 14.0  # an event without status keeps it
    assert [e["detail"] for e in old["events"]] == ["relayed"]
    assert "unknown" not in {r["trace_id"] for r in store.search(limit=10)}
    engine.dispose()


def test_a_flood_of_refused_connections_is_one_row_per_address(node_factory):
    """End to end: twenty new connections from the attacker's address, each refused at RCPT
    (550 5.7.51: the mailbox is locked to the gateway), leave one trace row counting 20; the same
    attempt from another address has its own row. Each attempt is still answered 550."""
    n = node_factory(None)

    def attempt(source: str) -> int:
        with RawSMTP("127.0.0.1", n.port(), source) as c:
            c.greeting()
            c.cmd("EHLO attacker.test")
            c.starttls()
            c.cmd("EHLO attacker.test")
            c.cmd("MAIL FROM:<spoof@fabrikam.test>")
            return c.cmd("RCPT TO:<alice@contoso.test>")[0]

    assert [attempt(ATTACKER) for _ in range(20)] == [550] * 20
    assert attempt("127.0.0.67") == 550
    n.trace.flush()
    rows = [r for r in n.trace.search(limit=50) if r["reason"] == "connector-attribution"]
    assert sorted((r["from_ip"], r["detail"]["count"]) for r in rows) == [(ATTACKER, 20), ("127.0.0.67", 1)]
    assert all(r["status"] == "Rejected" and r["recipient"] == "alice@contoso.test" for r in rows)


def _dump(engine):
    from sqlalchemy import text
    with engine.connect() as c:
        return ([tuple(r) for r in c.execute(text("SELECT * FROM trace_messages ORDER BY id"))],
                [tuple(r) for r in c.execute(text("SELECT * FROM trace_events ORDER BY id"))])


def test_sqlite_rows_are_the_core_paths_rows(tmp_path):
    """Issue 19: on SQLite the writer inserts through the driver; every column of every row and
    event must be what the SQLAlchemy Core path (PostgreSQL's) writes for the same batch."""
    from mxgate.trace import store as trace_store

    def batch():
        return [TraceRecord(trace_id="t1", status="Delivered", sender="s@fabrikam.test", recipient=r, subject="Grüße",
                            message_id="<m@x>", size=2048, from_ip="127.0.0.10", connector="Partner",
                            policy_version=3, role="mailbox", node="n1", detail={"tls": "TLSv1.3", "set": {1}},
                            events=[(1.5, "Receive", "from 127.0.0.10"), (1.6, "Deliver", "maildir")],
                            created_at=1.5 + i)
                for i, r in enumerate(["a@contoso.test", "b@contoso.test", "a@contoso.test"])] + [
            TraceRecord(trace_id="t2", status="Rejected", reason="relay-denied", direction="inbound", created_at=9.0),
            TraceRecord(trace_id="t3", status="Pending", recipient="x@fabrikam.test", created_at=10.0,
                        events=[(10.0, "Send", "queued for outbound")])]

    dumps = []
    for name, sql_of in (("core", trace_store._CoreSql), ("sqlite", trace_store._DriverSql)):
        engine = open_engine(f"sqlite:///{tmp_path / name}.db")
        for _ in range(2):  # the second batch's ids follow the first's
            with engine.begin() as conn:
                sql = sql_of(conn)
                assert sql.insert_records(batch()) == 5
                sql.close()
        dumps.append(_dump(engine))
        engine.dispose()
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == 10 and len(dumps[0][1]) == 14


def test_the_writer_commits_rows_on_sqlite_through_the_driver(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = TraceStore(engine, node="n1")
    store.record(TraceRecord(trace_id="w1", status="Delivered", recipient="a@contoso.test",
                             events=[(1.0, "Deliver", "maildir")]))
    rows = store.search(limit=10)
    assert [(r["trace_id"], r["node"]) for r in rows] == [("w1", "n1")]
    assert [e["event"] for e in store.show(rows[0]["id"])["events"]] == ["Deliver"]
    engine.dispose()


def _mixed_batches():
    """What a gateway writes: rows with their Receive events, refusals and their counts, later
    relay/defer events (per recipient and for every row), an event for a row of an earlier batch
    and one for an unknown trace id."""
    from mxgate.trace.store import CountUpdate, EventUpdate

    first = [TraceRecord(trace_id=f"m{i}", status="Pending", sender="s@fabrikam.test", recipient=r, node="gw",
                         detail={"checks": {"spf": {"result": "pass"}}, "score": 1.5}, created_at=100.0 + i,
                         events=[(100.0 + i, "Receive", "from 127.0.0.10 helo x")])
             for i in range(3) for r in ("a@contoso.test", "b@contoso.test")]
    first.append(TraceRecord(trace_id="r1", status="Rejected", reason="relay-denied", node="gw",
                             detail={"stage": "rcpt", "count": 1}, created_at=99.0))
    first += [EventUpdate("m0", "a@contoso.test", "Send", "relayed to 127.0.0.1", "Delivered", 101.0),
              EventUpdate("m0", None, "Defer", "451 for all", None, 101.5),
              CountUpdate("r1", 4, 101.6), CountUpdate("r1", 5, 101.7)]
    second = [EventUpdate("m1", "b@contoso.test", "Send", "relayed", "Delivered", 102.0),
              EventUpdate("m2", None, "Fail", "550 no", "Failed", 103.0),
              EventUpdate("nope", None, "Send", "no such row", "Delivered", 104.0),
              CountUpdate("r1", 3, 104.5),  # older than the count written: ignored
              CountUpdate("r1", 7, 105.0),
              TraceRecord(trace_id="m9", status="Pending", recipient="c@contoso.test", node="gw", created_at=106.0,
                          events=[(106.0, "Receive", "x")]),
              EventUpdate("m9", "c@contoso.test", "Send", "relayed", "Delivered", 106.5)]
    return [first, second]


def test_the_writers_driver_statements_leave_the_core_paths_rows(tmp_path, monkeypatch):
    """Issue 19: on SQLite the writer runs the batch's count updates and later events through
    the driver too; every column of every row and event must be what Core writes."""
    from mxgate.trace import store as trace_store

    dumps = []
    for name in ("core", "sqlite"):
        if name == "core":
            monkeypatch.setattr(trace_store, "_DriverSql", trace_store._CoreSql)
        else:
            monkeypatch.undo()
        engine = open_engine(f"sqlite:///{tmp_path / name}.db")
        store = TraceStore(engine, node="gw")
        for batch in _mixed_batches():
            store._write(batch)
        dumps.append(_dump(engine))
        engine.dispose()
    assert dumps[0] == dumps[1]
    rows, events = dumps[0]
    assert len(rows) == 8 and len(events) == 7 + 2 + 1 + 2 + 1 + 1


def test_a_gateway_message_and_its_relay_event_send_no_statement_through_core(tmp_path):
    """Issue 19: the gateway's trace writer cost ~0.5 ms of CPU per P3 message, most of it its
    relay events' SELECT, INSERT and UPDATE through SQLAlchemy Core. On SQLite a batch of rows,
    counts and later events now runs no statement through Core, one transaction per batch."""
    from sqlalchemy import event

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *a, **k: seen.append(a[2]))
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    store = TraceStore(engine, node="gw")
    for batch in _mixed_batches():
        store._write(batch)
    assert seen == [] and len(commits) == 2
    assert {r["trace_id"]: r["status"] for r in store.search(limit=20) if r["recipient"] == "b@contoso.test"} == {
        "m0": "Pending", "m1": "Delivered", "m2": "Failed"}
    assert next(r for r in store.search(limit=20) if r["trace_id"] == "r1")["detail"]["count"] == 7
    engine.dispose()
