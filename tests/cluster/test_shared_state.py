"""Issue 18: counters, greylist, connect verdicts and authentication failures shared by the nodes on
one PostgreSQL database (store/cluster.py), driven step by step: every sync is an explicit call
and the clock is injected, so the interleavings are the test's, not the scheduler's."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import insert

from pg_rig import PgCluster
from rig import wait_until
from mxgate.filters.greylist import Greylist
from mxgate.filters.ratelimit import RateLimiter
from mxgate.policy.gateway_checks import DEFAULTS, CheckSettings
from mxgate.server.submission import MAX_AUTH_FAILURES, AuthThrottle
from mxgate.store.cluster import ClusterState
from mxgate.store.db import migrate
from mxgate.store.schema import nodes


def _cfg(name: str, **values) -> CheckSettings:
    return CheckSettings(name, {**DEFAULTS[name], **values})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _nodes(engine, names, clock) -> list[ClusterState]:
    migrate(engine)
    with engine.begin() as conn:  # heartbeats: how many nodes share a limit
        for n in names:
            conn.execute(insert(nodes).values(name=n, roles="[]", listeners="{}", policy_version=0,
                                              started_at=clock(), heartbeat=clock(), pid=0))
    states = [ClusterState(engine, n, clock=clock, stale_after=3.0) for n in names]
    for s in states:
        assert s.sync()
    return states


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_limit_holds_across_four_nodes_within_ten_percent(pg_url, engine_for, seed):
    """An attacker spreads 2,000 attempts over 4 nodes in a random order, each node syncing at
    random moments: the cluster admits the limit (100) within ±10%, not 4 x 100."""
    clock = Clock()
    states = _nodes(engine_for(pg_url), [f"gw{i}" for i in range(4)], clock)
    rng = random.Random(seed)
    limit, admitted = 100, 0
    for i in range(2000):
        node = rng.choice(states)
        admitted += node.hit("msg", "127.0.0.66", limit, 60.0, clock())
        if rng.random() < 0.08:  # ~every 12 attempts some node syncs (0.1 s at ~120 attempts/s)
            rng.choice(states).sync()
        clock.t += 0.001
    for s in states:
        s.sync()
    assert limit * 0.9 <= admitted <= limit * 1.1, admitted
    totals = {round(s.estimate("msg", "127.0.0.66", 60.0, clock())) for s in states}
    assert totals == {admitted}  # every node knows the cluster's count after a sync
    # another address is not affected anywhere
    assert all(s.hit("msg", "127.0.0.77", limit, 60.0, clock()) for s in states)


def test_the_rate_limiter_on_two_nodes_refuses_the_third_message_of_a_limit_of_two(pg_url, engine_for):
    clock = Clock()
    a, b = _nodes(engine_for(pg_url), ["gw1", "gw2"], clock)
    cfg = _cfg("ratelimit", max_messages=2, window=60.0)
    la, lb = RateLimiter(a), RateLimiter(b)
    assert not la.on_message("127.0.0.66", cfg, clock()).fired
    a.sync(), b.sync()
    assert not lb.on_message("127.0.0.66", cfg, clock()).fired
    b.sync(), a.sync()
    assert la.on_message("127.0.0.66", cfg, clock()).fired
    assert lb.on_message("127.0.0.66", cfg, clock()).fired
    clock.t += 120  # the window slides on: allowed again
    assert not la.on_message("127.0.0.66", cfg, clock()).fired


def test_a_greylisted_triplet_retried_on_another_node_passes(pg_url, engine_for):
    clock = Clock()
    a, b = _nodes(engine_for(pg_url), ["gw1", "gw2"], clock)
    cfg = _cfg("greylist", action="tempfail", delay=60.0)
    ga, gb = Greylist(a), Greylist(b)
    assert ga.check("203.0.113.5", "s@fabrikam.test", "alice@contoso.test", cfg, clock()).fired
    a.sync(), b.sync()
    clock.t += 30
    assert gb.check("203.0.113.6", "s@fabrikam.test", "alice@contoso.test", cfg, clock()).fired  # too early, same /24
    clock.t += 40
    assert not gb.check("203.0.113.5", "s@fabrikam.test", "alice@contoso.test", cfg, clock()).fired
    b.sync(), a.sync()
    assert not ga.check("203.0.113.5", "s@fabrikam.test", "alice@contoso.test", cfg, clock()).fired  # known now
    assert ga.check("203.0.113.5", "s@fabrikam.test", "bob@contoso.test", cfg, clock()).fired  # a new triplet


def test_authentication_failures_on_one_node_throttle_the_others(pg_url, engine_for):
    clock = Clock()
    a, b, c = _nodes(engine_for(pg_url), ["sub1", "sub2", "sub3"], clock)
    throttles = [AuthThrottle(shared=s) for s in (a, b, c)]
    failures = 0
    for i in range(MAX_AUTH_FAILURES):  # one guess per node in turn, each synced before the next
        t, s = throttles[i % 3], (a, b, c)[i % 3]
        assert t.admit("127.0.0.66", clock())
        t.failed("127.0.0.66", clock())
        failures += 1
        s.sync()
        for other in (a, b, c):
            other.sync()
    assert all(t.blocked("127.0.0.66", clock()) for t in throttles)
    assert not any(t.admit("127.0.0.66", clock()) for t in throttles)
    assert throttles[1].admit("127.0.0.77", clock())  # others are not affected


def test_a_connect_verdict_is_cached_for_the_cluster_until_its_ttl(pg_url, engine_for):
    clock = Clock()
    a, b = _nodes(engine_for(pg_url), ["gw1", "gw2"], clock)
    a.verdict_put("127.0.0.66", {"refuse": "dnsbl"}, clock() + 300)
    assert b.verdict_get("127.0.0.66", clock()) is None
    a.sync(), b.sync()
    assert b.verdict_get("127.0.0.66", clock()) == {"refuse": "dnsbl"}
    clock.t += 301
    assert b.verdict_get("127.0.0.66", clock()) is None


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own: it is stopped mid-test."""
    cluster = PgCluster().start()
    cluster.wait_ready()
    yield cluster
    cluster.stop()


def test_postgresql_stopped_degrades_to_local_limits_and_recovers(own_pg, engine_for):
    """The stated degradation: the store away for longer than stale_after, every node enforces
    each limit on its own count (never no limit, never refusing everyone); when it is back, the
    counts made meanwhile are shared and the cluster's limit applies again."""
    clock = Clock()
    a, b = _nodes(engine_for(own_pg.create_database()), ["gw1", "gw2"], clock)
    limit = 10
    for _ in range(4):  # shared: a node spends at most 1/(2N) of what is left between syncs
        assert a.hit("msg", "127.0.0.66", limit, 60.0, clock())
        a.sync()
    b.sync()

    own_pg.halt()
    try:
        assert a.sync() is False and b.sync() is False  # fails fast, keeps the counts
        assert not a.degraded  # not yet: a blip shorter than stale_after changes nothing
        clock.t += 4
        assert a.degraded and b.degraded
        # node A: its own 4 + what it knew; admits up to the limit and then refuses (a limit remains)
        got_a = sum(a.hit("msg", "127.0.0.66", limit, 60.0, clock()) for _ in range(20))
        assert got_a == limit - 4
        # node B: knew A's 4 before the outage; its own count may reach the limit (local limits)
        got_b = sum(b.hit("msg", "127.0.0.66", limit, 60.0, clock()) for _ in range(20))
        assert got_b == limit - 4
        # nobody else is refused
        assert b.hit("msg", "127.0.0.77", limit, 60.0, clock())
    finally:
        own_pg.resume()
    assert wait_until(lambda: a.sync() and b.sync(), timeout=20)
    assert a.sync() and b.sync()  # both have read what the other wrote after the outage
    assert not a.degraded and not b.degraded
    assert round(a.estimate("msg", "127.0.0.66", 60.0, clock())) == 4 + got_a + got_b
    assert not b.hit("msg", "127.0.0.66", limit, 60.0, clock())  # the cluster's limit again


def test_the_sync_thread_shares_counts_without_explicit_syncs(pg_url, engine_for):
    """The background thread (what a running node uses): B learns A's count by itself."""
    engine = engine_for(pg_url)
    migrate(engine)
    a = ClusterState(engine, "gw1", interval=0.05).start()
    b = ClusterState(engine, "gw2", interval=0.05).start()
    try:
        now = time.time()
        for _ in range(3):
            assert a.hit("conn", "127.0.0.66", 100, 60.0, now)
        assert wait_until(lambda: round(b.estimate("conn", "127.0.0.66", 60.0, time.time())) >= 3, timeout=10)
    finally:
        a.stop()
        b.stop()


def test_admin_login_attempts_on_one_node_count_on_the_others(pg_url, engine_for):
    """The admin centre's login limiter (admin/guard.py) on the shared counters: five guesses
    spread over three nodes use up the address's budget on all of them."""
    from mxgate.admin.guard import LOGIN_MAX_FAILURES, LoginLimiter

    clock = Clock()
    states = _nodes(engine_for(pg_url), ["adm1", "adm2", "adm3"], clock)
    limiters = [LoginLimiter(shared=s) for s in states]
    keys = LoginLimiter.keys("127.0.0.66", "admin")
    for i in range(LOGIN_MAX_FAILURES):
        assert limiters[i % 3].admit(keys, clock()) == 0.0
        for s in states:
            s.sync()
    for s in states:  # one more round: each node has read every other node's last write
        s.sync()
    assert all(lim.admit(keys, clock()) > 0 for lim in limiters)
    assert limiters[2].admit(LoginLimiter.keys("127.0.0.77", "alice"), clock()) == 0.0  # others unaffected


# --- SQLite: the sync's reads through the driver (issue 19) ------------------------------------

def _sqlite_cluster(tmp_path, clock):
    from mxgate.store.db import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    states = _nodes(engine, ["gw1", "gw2", "gw3"], clock)
    a, b, c = states
    now = clock()
    for i in range(5):
        assert a.hit("rate", f"10.0.0.{i}", 100, 60.0, now)
        assert c.hit("rate", "10.0.0.1", 100, 60.0, now)
    a.grey_put("k1", now - 30, 0.0)
    c.grey_put("k2", now - 600, now + 3600)
    a.verdict_put("10.0.0.9", {"reason": "dnsbl-listed"}, now + 300)
    c.verdict_put("10.0.0.8", {"reason": "gone"}, now - 1)  # expired: never read
    a.sync(), c.sync()
    return engine, b


def test_the_sync_reads_on_sqlite_are_the_core_reads(tmp_path):
    """Every row of the four reads, column by column, is what the Core statements read."""
    from mxgate.store import cluster

    clock = Clock()
    engine, _b = _sqlite_cluster(tmp_path, clock)
    with engine.connect() as conn:
        for since in (0.0, clock() - 5, clock() + 5):
            core = cluster._read_core(conn, since, clock(), "gw2")
            driver = cluster._read_sqlite(conn, since, clock(), "gw2")
            assert [[tuple(r) for r in rows] for rows in core[:3]] == [[tuple(r) for r in rows] for rows in driver[:3]]
            assert [[r._asdict() for r in rows] for rows in driver[:3]] == [
                [dict(r._mapping) for r in rows] for rows in core[:3]]
            assert core[3] == driver[3] == 3
    assert [len(rows) for rows in core[:3]] == [0, 0, 0]  # since in the future
    engine.dispose()


def test_a_node_on_sqlite_learns_the_same_state_as_through_core(tmp_path, monkeypatch):
    """Limits, greylist and connect verdicts a node learns from the others, and the live node count."""
    from mxgate.store import cluster

    def learnt(sub: str):
        clock = Clock()
        engine, b = _sqlite_cluster(tmp_path / sub, clock)
        assert b.sync()
        state = (b.estimate("rate", "10.0.0.1", 60.0, clock()), b.grey_get("k1"), b.grey_get("k2"),
                 b.verdict_get("10.0.0.9", clock()), b.verdict_get("10.0.0.8", clock()), b.live_nodes,
                 {k: dict(v) for k, v in b._others.items()})
        engine.dispose()
        return state

    (tmp_path / "driver").mkdir(), (tmp_path / "core").mkdir()
    driver = learnt("driver")
    monkeypatch.setattr(cluster, "_read_sqlite", cluster._read_core)
    assert learnt("core") == driver
    assert driver[0] == 6 and driver[3] == {"reason": "dnsbl-listed"} and driver[4] is None and driver[5] == 3


def test_an_idle_sync_on_sqlite_sends_no_statement_through_core(tmp_path):
    """Ten syncs a second on each gateway: nothing changed, nothing to write, and the reads go
    through the driver, not SQLAlchemy (issue 19: ~60-70 µs of CPU per P3 message)."""
    from sqlalchemy import event

    clock = Clock()
    engine, b = _sqlite_cluster(tmp_path, clock)
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *a, **k: seen.append(a[2]))
    assert b.sync() and b.sync()
    assert seen == [] and b.live_nodes == 3
    engine.dispose()


def _written_rows(sub, clock) -> dict:
    """A scripted run of three nodes whose writes meet every UPSERT branch: counts inserted then
    raised, a greylist key written by an older write after a newer one (first_seen kept,
    passed_until and updated_at the larger) and by a newer one after an older (first_seen taken),
    connect verdicts replaced. Returns every row of the three tables."""
    import sqlite3

    engine, b = _sqlite_cluster(sub, clock)
    a, c = ClusterState(engine, "gw1", clock=clock), ClusterState(engine, "gw3", clock=clock)
    t0 = clock()
    c.grey_put("k3", t0 - 50, t0 + 100)  # written at t0: older than a's below
    clock.t += 1
    a.grey_put("k3", t0 - 10, t0 + 50)  # newer, smaller passed_until
    b.grey_put("k1", t0 - 5, t0 + 7200)  # newer than a's k1 of the set-up
    assert a.sync() and c.sync() and b.sync()
    clock.t += 1
    for i in range(3):
        assert a.hit("rate", "10.0.0.1", 100, 60.0, clock())  # the row of the set-up, raised
    b.add("msg", "10.0.0.2", 60.0, clock(), 4)
    b.add("msg", "10.0.0.2", 60.0, clock(), -1)  # a refund: the absolute count is written
    a.verdict_put("10.0.0.9", {"reason": "rdns-missing"}, clock() + 60)  # replaces the set-up's
    assert a.sync() and b.sync() and c.sync()
    engine.dispose()
    with sqlite3.connect(sub / "store.db") as raw:
        return {t: raw.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("shared_counters", "greylist", "connect_verdicts")}


def test_the_sync_writes_on_sqlite_leave_the_rows_core_leaves(tmp_path, monkeypatch):
    """Differential: the driver's UPSERTs and Core's leave the same rows, column by column."""
    from mxgate.store import cluster

    (tmp_path / "driver").mkdir(), (tmp_path / "core").mkdir()
    driver = _written_rows(tmp_path / "driver", Clock())
    monkeypatch.setattr(cluster, "_write_sqlite", cluster._write_core)
    core = _written_rows(tmp_path / "core", Clock())
    assert driver == core
    t0 = Clock()()
    grey = {r[0]: r[1:] for r in driver["greylist"]}
    assert grey["k3"] == (t0 - 10, t0 + 100, t0 + 1)  # first_seen of the newer write, the larger rest
    assert grey["k1"] == (t0 - 5, t0 + 7200, t0 + 1)  # the newer write taken
    counts = {(r[1], r[3]): r[4] for r in driver["shared_counters"] if r[1] in ("10.0.0.1", "10.0.0.2")}
    # gw1's fresh state writes its own absolute count over the set-up's row (counts are per node)
    assert counts == {("10.0.0.1", "gw1"): 3, ("10.0.0.1", "gw3"): 5, ("10.0.0.2", "gw1"): 1, ("10.0.0.2", "gw2"): 3}
    assert [r[0] for r in driver["connect_verdicts"]] == ["10.0.0.8", "10.0.0.9"]
    assert '"rdns-missing"' in dict((r[0], r[1]) for r in driver["connect_verdicts"])["10.0.0.9"]


def test_a_writing_sync_on_sqlite_sends_no_statement_through_core(tmp_path):
    """A gateway counting every connection and message writes at each sync: its UPSERTs go
    through the driver (issue 19: ~0.8 ms of CPU per sync through Core)."""
    from sqlalchemy import event

    clock = Clock()
    engine, b = _sqlite_cluster(tmp_path, clock)
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *a, **k: seen.append(a[2]))
    assert b.hit("rate", "10.0.0.50", 100, 60.0, clock())
    b.grey_put("k9", clock(), clock() + 60)
    b.verdict_put("10.0.0.51", {"reason": "ok"}, clock() + 60)
    assert b.sync()
    assert seen == []
    engine.dispose()
    import sqlite3

    with sqlite3.connect(tmp_path / "store.db") as raw:
        assert raw.execute("SELECT count FROM shared_counters WHERE key='10.0.0.50'").fetchone() == (1,)
        assert raw.execute("SELECT count(*) FROM greylist WHERE key='k9'").fetchone() == (1,)
        assert raw.execute("SELECT count(*) FROM connect_verdicts WHERE ip='10.0.0.51'").fetchone() == (1,)


def test_a_sqlite_store_that_fails_the_writes_keeps_them_for_the_next_sync(tmp_path, monkeypatch):
    """A write the driver refuses (e.g. the database locked past the busy timeout) loses nothing:
    the counts, greylist and verdicts are written by the next sync."""
    import sqlite3

    from mxgate.store import cluster

    clock = Clock()
    engine, b = _sqlite_cluster(tmp_path, clock)
    assert b.hit("rate", "10.0.0.60", 100, 60.0, clock())
    b.grey_put("k8", clock(), clock() + 60)
    monkeypatch.setattr(cluster, "_SQLITE_UPSERT_GREY", "INSERT INTO no_such_table VALUES (?, ?, ?, ?)")
    assert not b.sync()
    monkeypatch.undo()
    assert b.sync()
    with sqlite3.connect(tmp_path / "store.db") as raw:
        assert raw.execute("SELECT count FROM shared_counters WHERE key='10.0.0.60'").fetchone() == (1,)
        assert raw.execute("SELECT count(*) FROM greylist WHERE key='k8'").fetchone() == (1,)
    engine.dispose()


def test_a_sqlite_store_that_fails_the_reads_degrades_and_recovers(tmp_path, monkeypatch):
    """The driver's errors are the store being away like Core's: nothing lost, degraded after
    stale_after, shared again when it answers."""
    import sqlite3

    from mxgate.store import cluster

    clock = Clock()
    engine, b = _sqlite_cluster(tmp_path, clock)
    assert b.hit("rate", "10.0.0.7", 100, 60.0, clock())
    monkeypatch.setattr(cluster, "_SQLITE_LIVE_NODES", "SELECT count(*) FROM no_such_table")
    assert not b.sync()
    clock.t += 4
    assert b.degraded
    monkeypatch.undo()
    assert b.sync() and not b.degraded
    with sqlite3.connect(tmp_path / "store.db") as raw:
        assert raw.execute("SELECT count FROM shared_counters WHERE node='gw2' AND key='10.0.0.7'").fetchone() == (1,)
    engine.dispose()


# --- credential guessing: the shared count at a bucket's end ------------------------------------

@pytest.mark.parametrize("limiter", ["admin-login", "smtp-auth"])
def test_guesses_straddling_a_bucket_end_are_not_undercounted(tmp_path, limiter):
    """The shared counters keep two fixed buckets. Weighting the previous one by what is left of
    it undercounts as soon as a bucket ends: five failures in its last 10 ms and a sixth try just
    after counted as 4.99, and the sixth guess was let in (then a seventh 12 s later, and so on).
    The credential limiters count the previous bucket in full, so no window ever holds more than
    the limit's attempts."""
    from mxgate.admin.guard import LOGIN_MAX_FAILURES, LOGIN_WINDOW, LoginLimiter
    from mxgate.server.submission import FAILURE_WINDOW, MAX_AUTH_FAILURES, AuthThrottle
    from mxgate.store.db import open_engine

    window, limit = (LOGIN_WINDOW, LOGIN_MAX_FAILURES) if limiter == "admin-login" else (FAILURE_WINDOW, MAX_AUTH_FAILURES)
    bucket_end = (int(1_800_000_000 // window) + 1) * window
    clock = Clock(bucket_end - 0.01)
    (state,) = _nodes(open_engine(f"sqlite:///{tmp_path / 'store.db'}"), ["adm1"], clock)
    if limiter == "admin-login":
        guard = LoginLimiter(shared=state)
        keys = LoginLimiter.keys("127.0.0.66", "admin")
        admit = lambda: guard.admit(keys, clock()) == 0.0  # noqa: E731
    else:
        throttle = AuthThrottle(shared=state)
        admit = lambda: throttle.admit("127.0.0.66", clock())  # noqa: E731
    for _ in range(limit):
        assert admit()
    clock.t = bucket_end + 0.01  # a new bucket: the five are 20 ms old
    assert not admit()
    clock.t = bucket_end + window - 0.01  # still within one window of the last failure
    assert not admit()
    clock.t = bucket_end + window + 0.01  # the five left the window (and the previous bucket)
    assert admit()
    # Rate limits keep the sliding estimate, which at the same edge counts one event as 0.99...
    assert state.estimate("rate", "x", window, bucket_end - 0.01) == 0
    state.add("rate", "x", window, bucket_end - 0.01)
    assert 0.99 < state.estimate("rate", "x", window, bucket_end + 0.01) < 1
    assert state.estimate("rate", "x", window, bucket_end + 0.01, strict=True) == 1
