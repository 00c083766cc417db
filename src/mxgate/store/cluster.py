"""State the nodes of a cluster share without waiting on the database: rate counters, the
greylist, connect-stage verdicts (issue 18).

Owns: each node's in-memory copy of that state, the decision "one more event for this key?"
(answered from memory), and `sync`, which every `interval` seconds (in a thread, never on the
SMTP path) writes this node's changes to the store and reads the other nodes' changes.

Counters: one row per (scope, key, bucket, node) holding *that node's* count, so a write is an
idempotent UPSERT of an absolute number (safe to repeat after an outage) and the cluster's count
is the sum over nodes. The window is sliding, estimated from two fixed buckets (the previous
bucket weighted by the part of it still inside the window; in full for credential limits,
`strict`). Between two syncs a node admits at
most its share — what is left of the limit divided by twice the live nodes (at least one event) —
so N nodes together overshoot by N-1 events plus what the others admitted but had not yet written:
at most +10% at 4 nodes (measured +3..6% for a limit of 100). A node whose share is spent answers
"over" and syncs at once (at most `interval` later), which can defer a client early, never admit
more.
When the store cannot be reached for `stale_after` seconds the node is *degraded*: it enforces
each limit on its own count (N nodes then admit up to N x the limit), never no limit and never
refusing everyone; on recovery its absolute counts are written again and sharing resumes.

Greylist rows merge by field: passed_until by max, first_seen by the newer write. Connect verdicts
are plain values with an expiry.
Must not know: SMTP, what a scope means, or how a check decides.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import namedtuple
from typing import Callable

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.engine import Engine

from mxgate.store.schema import connect_verdicts, greylist, nodes, shared_counters

log = logging.getLogger("mxgate.cluster")

DEFAULT_INTERVAL = 0.1  # seconds between syncs
STALE_AFTER = 3.0  # seconds without a successful sync before limits become local
PULL_MARGIN = 5.0  # re-read rows this much older than the last pull (clock skew between nodes)
FIRST_PULL = 7200.0  # at start, read what changed in the last two hours
KEEP = 7200.0  # rows idle this long are deleted (no window is longer than an hour)
NODE_ALIVE = 10.0  # a node whose heartbeat is older does not get a share
# A node spends at most 1/(2N) of what is left between syncs: with 1/N, counts the others have
# not written yet let N nodes overshoot by up to ~35% (random interleavings, 4 nodes); with
# 1/(2N) the overshoot measured is at most +6% (tests/cluster/test_shared_state.py).
SHARE_DIVISOR = 2
MAX_KEYS = 200_000  # bound on remembered keys per table; the stalest go first


def _upsert(engine: Engine, table, rows: list[dict], keys: list[str], set_: Callable) -> None:
    """INSERT … ON CONFLICT DO UPDATE on PostgreSQL and SQLite alike."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_(stmt.excluded, table.c, engine.dialect.name))
    with engine.begin() as conn:
        conn.execute(stmt, rows)


# The reads of every sync (ten a second), built once: building and hashing the statements anew
# was about a third of a sync's CPU.
_READ_COUNTS = select(shared_counters).where(shared_counters.c.updated_at > bindparam("since"),
                                             shared_counters.c.node != bindparam("node"))
_READ_GREY = select(greylist).where(greylist.c.updated_at > bindparam("since"))
_READ_VERDICTS = select(connect_verdicts).where(connect_verdicts.c.updated_at > bindparam("since"),
                                                connect_verdicts.c.expires_at > bindparam("now"))
_LIVE_NODES = select(func.count()).select_from(nodes).where(nodes.c.heartbeat > bindparam("alive_after"))


def _driver_read(table, where: str):
    """One of the reads above as SQL text for the sqlite3 driver, rows as named tuples like Core's."""
    names = [c.name for c in table.columns]
    return namedtuple(f"_{table.name}_row", names)._make, f"SELECT {', '.join(names)} FROM {table.name} WHERE {where}"


# The same four reads on SQLite, straight through the driver: through Core they were ~60-70 µs of
# the gateway's CPU per P3 message (ten syncs a second, mostly finding nothing; issue 19).
_SQLITE_COUNTS = _driver_read(shared_counters, "updated_at > ? AND node != ?")
_SQLITE_GREY = _driver_read(greylist, "updated_at > ?")
_SQLITE_VERDICTS = _driver_read(connect_verdicts, "updated_at > ? AND expires_at > ?")
_SQLITE_LIVE_NODES = f"SELECT count(*) FROM {nodes.name} WHERE heartbeat > ?"


def _read_sqlite(conn, since: float, now: float, node: str) -> tuple[list, list, list, int]:
    cur = conn.connection.driver_connection.cursor()
    try:
        (c_row, c_sql), (g_row, g_sql), (v_row, v_sql) = _SQLITE_COUNTS, _SQLITE_GREY, _SQLITE_VERDICTS
        return ([c_row(r) for r in cur.execute(c_sql, (since, node))],
                [g_row(r) for r in cur.execute(g_sql, (since,))],
                [v_row(r) for r in cur.execute(v_sql, (since, now))],
                cur.execute(_SQLITE_LIVE_NODES, (now - NODE_ALIVE,)).fetchone()[0])
    finally:
        cur.close()


# The sync's writes on SQLite, straight through the driver in one transaction: the same UPSERTs
# Core compiles for `sync` (tests/cluster/test_shared_state.py compares the rows both leave), at
# ~0.8 ms of CPU per sync through Core (statements built and compiled anew, dict parameters
# processed per row) for a gateway counting every connection and message (issue 19).
_SQLITE_UPSERT_COUNTS = (
    f"INSERT INTO {shared_counters.name} (scope, key, bucket, node, count, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, key, bucket, node) DO UPDATE SET count = excluded.count, updated_at = excluded.updated_at")
_SQLITE_UPSERT_GREY = (
    f"INSERT INTO {greylist.name} (key, first_seen, passed_until, updated_at) VALUES (?, ?, ?, ?) "
    f"ON CONFLICT (key) DO UPDATE SET passed_until = max({greylist.name}.passed_until, excluded.passed_until), "
    f"first_seen = CASE WHEN excluded.updated_at >= {greylist.name}.updated_at THEN excluded.first_seen "
    f"ELSE {greylist.name}.first_seen END, "
    f"updated_at = max({greylist.name}.updated_at, excluded.updated_at)")
_SQLITE_UPSERT_VERDICTS = (
    f"INSERT INTO {connect_verdicts.name} (ip, verdict, expires_at, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (ip) DO UPDATE SET verdict = excluded.verdict, expires_at = excluded.expires_at, "
    "updated_at = excluded.updated_at")


def _write_sqlite(engine: Engine, counts: list[dict], grey: list[dict], verdicts: list[dict]) -> None:
    with engine.begin() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            if counts:
                cur.executemany(_SQLITE_UPSERT_COUNTS, [(r["scope"], r["key"], r["bucket"], r["node"], r["count"],
                                                         r["updated_at"]) for r in counts])
            if grey:
                cur.executemany(_SQLITE_UPSERT_GREY, [(r["key"], r["first_seen"], r["passed_until"], r["updated_at"])
                                                      for r in grey])
            if verdicts:
                cur.executemany(_SQLITE_UPSERT_VERDICTS, [(r["ip"], r["verdict"], r["expires_at"], r["updated_at"])
                                                          for r in verdicts])
        finally:
            cur.close()


def _write_core(engine: Engine, counts: list[dict], grey: list[dict], verdicts: list[dict]) -> None:
    if counts:
        _upsert(engine, shared_counters, counts, ["scope", "key", "bucket", "node"],
                lambda ex, c, d: {"count": ex.count, "updated_at": ex.updated_at})
    if grey:
        _upsert(engine, greylist, grey, ["key"], lambda ex, c, d: {
            "passed_until": _greatest(d)(c.passed_until, ex.passed_until),
            "first_seen": _newer(ex, c),
            "updated_at": _greatest(d)(c.updated_at, ex.updated_at)})
    if verdicts:
        _upsert(engine, connect_verdicts, verdicts, ["ip"],
                lambda ex, c, d: {"verdict": ex.verdict, "expires_at": ex.expires_at, "updated_at": ex.updated_at})


def _read_core(conn, since: float, now: float, node: str) -> tuple[list, list, list, int]:
    return (conn.execute(_READ_COUNTS, {"since": since, "node": node}).all(),
            conn.execute(_READ_GREY, {"since": since}).all(),
            conn.execute(_READ_VERDICTS, {"since": since, "now": now}).all(),
            conn.execute(_LIVE_NODES, {"alive_after": now - NODE_ALIVE}).scalar_one())


def _greatest(dialect: str):
    return func.greatest if dialect == "postgresql" else func.max


class ClusterState:
    def __init__(self, engine: Engine | None, node: str, *, interval: float = DEFAULT_INTERVAL,
                 stale_after: float = STALE_AFTER, clock: Callable[[], float] = time.time):
        self.engine, self.node, self.interval, self.stale_after, self.clock = engine, node, interval, stale_after, clock
        self._lock = threading.Lock()
        # counters: (scope, key, bucket) -> own count / {node: count}
        self._own: dict[tuple, int] = {}
        self._others: dict[tuple, dict[str, int]] = {}
        self._dirty: set[tuple] = set()
        self._since_sync: dict[tuple, int] = {}  # (scope, key) -> events admitted since the last sync
        self._grey: dict[str, tuple[float, float, float]] = {}  # key -> (first_seen, passed_until, written)
        self._grey_dirty: set[str] = set()
        self._verdicts: dict[str, tuple[float, dict]] = {}  # ip -> (expires_at, verdict)
        self._verdicts_dirty: set[str] = set()
        self.live_nodes = 1
        self.last_ok = clock() if engine is None else 0.0
        self._pulled_at: float | None = None
        self._failing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- state --------------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        """True when the store has not answered for `stale_after` seconds: limits are per node."""
        return self.engine is not None and self.clock() - self.last_ok > self.stale_after

    # --- counters -----------------------------------------------------------------------------
    def _total(self, k: tuple) -> int:
        return self._own.get(k, 0) + sum(self._others.get(k, {}).values())

    def estimate(self, scope: str, key: str, window: float, now: float, *, strict: bool = False) -> float:
        """Events for `key` in the sliding window ending at `now`, across the cluster as far as known.

        `strict` counts the previous bucket in full: never less than the true count of the last
        `window` seconds, so a limit checked against it is never exceeded in any window (credential
        guessing), at the price of refusing for up to two windows. The default weights the previous
        bucket by the part still inside the window, which can undercount right after a bucket ends."""
        with self._lock:
            return self._estimate(scope, key, window, now, strict)

    def _estimate(self, scope: str, key: str, window: float, now: float, strict: bool = False) -> float:
        bucket = int(now // window)
        weight = 1.0 if strict else 1.0 - (now - bucket * window) / window
        return self._total((scope, key, bucket - 1)) * weight + self._total((scope, key, bucket))

    def add(self, scope: str, key: str, window: float, now: float, delta: int = 1) -> None:
        """Count (or, with a negative delta, refund) events without a limit decision."""
        k = (scope, key, int(now // window))
        with self._lock:
            self._remember_key(k)
            self._own[k] = max(0, self._own.get(k, 0) + delta)
            self._dirty.add(k)

    def hit(self, scope: str, key: str, limit: int, window: float, now: float) -> bool:
        """Count one event and return True, or return False (nothing counted) when it is over the
        limit — or over this node's share of what is left until the next sync."""
        with self._lock:
            est = self._estimate(scope, key, window, now)
            if est + 1 > limit + 1e-9:
                return False
            share_key = (scope, key)
            spent = self._since_sync.get(share_key, 0)
            if self.live_nodes > 1 and not self.degraded and self.engine is not None:  # alone, the count is exact
                share = max(1, math.floor((limit - (est - spent)) / (SHARE_DIVISOR * max(1, self.live_nodes))))
                if spent >= share:
                    self._wake.set()  # sync soon: the share is refreshed from the others' counts
                    return False
            k = (scope, key, int(now // window))
            self._remember_key(k)
            self._own[k] = self._own.get(k, 0) + 1
            self._dirty.add(k)
            self._since_sync[share_key] = spent + 1
            return True

    def _remember_key(self, k: tuple) -> None:
        if k not in self._own and len(self._own) >= MAX_KEYS:
            old = next(iter(self._own))
            self._own.pop(old, None)
            self._dirty.discard(old)

    # --- greylist -----------------------------------------------------------------------------
    def grey_get(self, key: str) -> tuple[float | None, float]:
        """(first_seen or None, passed_until) of a triplet as the cluster knows it."""
        with self._lock:
            row = self._grey.get(key)
        if row is None:
            return None, 0.0
        return (row[0] if row[0] > 0 else None), row[1]

    def grey_put(self, key: str, first_seen: float | None, passed_until: float) -> None:
        with self._lock:
            if key not in self._grey and len(self._grey) >= MAX_KEYS:
                self._grey.pop(next(iter(self._grey)))
            self._grey[key] = (first_seen or 0.0, passed_until, self.clock())
            self._grey_dirty.add(key)

    # --- connect verdicts ---------------------------------------------------------------------
    def verdict_get(self, ip: str, now: float) -> dict | None:
        with self._lock:
            item = self._verdicts.get(ip)
        return item[1] if item and item[0] > now else None

    def verdict_put(self, ip: str, verdict: dict, expires_at: float) -> None:
        with self._lock:
            if ip not in self._verdicts and len(self._verdicts) >= MAX_KEYS:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[ip] = (expires_at, verdict)
            self._verdicts_dirty.add(ip)
        self._wake.set()  # other nodes should not look this address up again

    # --- sync ---------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Write this node's changes, read the others'. False (and nothing lost) when the store fails."""
        if self.engine is None:
            return True
        now = self.clock()
        with self._lock:
            if self.degraded or self._failing:
                self._dirty |= set(self._own)  # absolute counts: re-send everything after an outage
            counts = [{"scope": k[0], "key": k[1], "bucket": k[2], "node": self.node, "count": self._own[k],
                       "updated_at": now} for k in self._dirty if k in self._own]
            grey = [{"key": k, "first_seen": self._grey[k][0], "passed_until": self._grey[k][1],
                     "updated_at": self._grey[k][2]} for k in self._grey_dirty if k in self._grey]
            verdicts = [{"ip": ip, "verdict": json.dumps(self._verdicts[ip][1]), "expires_at": self._verdicts[ip][0],
                         "updated_at": now} for ip in self._verdicts_dirty if ip in self._verdicts]
            self._dirty, self._grey_dirty, self._verdicts_dirty = set(), set(), set()
            spent_before = dict(self._since_sync)
        since = (now - FIRST_PULL) if self._pulled_at is None else self._pulled_at - PULL_MARGIN
        try:
            if counts or grey or verdicts:
                write = _write_sqlite if self.engine.dialect.name == "sqlite" else _write_core
                write(self.engine, counts, grey, verdicts)
            with self.engine.connect() as conn:
                read = _read_sqlite if conn.dialect.name == "sqlite" else _read_core
                other_counts, grey_rows, verdict_rows, live = read(conn, since, now, self.node)
        except Exception as exc:  # the database is away: keep everything, try again next time
            with self._lock:
                self._dirty |= {(r["scope"], r["key"], r["bucket"]) for r in counts}
                self._grey_dirty |= {r["key"] for r in grey}
                self._verdicts_dirty |= {r["ip"] for r in verdicts}
            if not self._failing:
                log.warning("cluster state: store unreachable (%s); limits stay per node until it is back",
                            exc.__class__.__name__)
            self._failing = True
            return False
        with self._lock:
            for r in other_counts:
                self._others.setdefault((r.scope, r.key, r.bucket), {})[r.node] = r.count
            for r in grey_rows:
                mine = self._grey.get(r.key)
                if mine is None or r.key not in self._grey_dirty:
                    first = r.first_seen if mine is None or r.updated_at >= mine[2] else mine[0]
                    self._grey[r.key] = (first, max(r.passed_until, mine[1] if mine else 0.0), max(r.updated_at, mine[2] if mine else 0.0))
            for r in verdict_rows:
                if r.ip not in self._verdicts_dirty:
                    self._verdicts[r.ip] = (r.expires_at, json.loads(r.verdict))
            # a share spent before this sync is renewed; what was admitted meanwhile still counts
            for sk, n in spent_before.items():
                left = self._since_sync.get(sk, 0) - n
                if left > 0:
                    self._since_sync[sk] = left
                else:
                    self._since_sync.pop(sk, None)
            self.live_nodes = max(1, int(live))
            self._prune(now)
        if self._failing:
            log.warning("cluster state: store reachable again; limits are shared again")
        self._failing = False
        self._pulled_at = now
        self.last_ok = self.clock()
        return True

    def _prune(self, now: float) -> None:
        horizon = now - KEEP
        for ip in [ip for ip, (exp, _v) in self._verdicts.items() if exp < now]:
            self._verdicts.pop(ip, None)
        for key in [k for k, v in self._grey.items() if max(v[1], v[0]) < horizon and k not in self._grey_dirty]:
            self._grey.pop(key, None)

    def prune_store(self, windows: dict[str, float]) -> None:
        """Delete rows no window can use any more (any node may; run now and then)."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(delete(shared_counters).where(shared_counters.c.updated_at < now - KEEP))
            conn.execute(delete(connect_verdicts).where(connect_verdicts.c.expires_at < now))
            conn.execute(delete(greylist).where(greylist.c.updated_at < now - KEEP,
                                                greylist.c.passed_until < now))
        with self._lock:
            for k in list(self._own):
                w = windows.get(k[0])
                if w and k[2] < int(now // w) - 1:
                    self._own.pop(k, None)
                    self._others.pop(k, None)
            for k in list(self._others):
                w = windows.get(k[0])
                if w and k[2] < int(now // w) - 1:
                    self._others.pop(k, None)

    # --- the sync thread ----------------------------------------------------------------------
    def start(self) -> "ClusterState":
        if self.engine is not None and self._thread is None:
            self.sync()
            self._thread = threading.Thread(target=self._loop, name="cluster-sync", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        last_prune = self.clock()
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.sync()
            if self.clock() - last_prune > 60 and not self._failing:
                try:
                    self.prune_store({})
                except Exception:  # pruning is housekeeping; the next minute tries again
                    pass
                last_prune = self.clock()

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.sync()  # hand the last counts to the others
        except Exception:
            pass


def _newer(ex, c):
    """first_seen from whichever write is newer (last writer wins for this field)."""
    from sqlalchemy import case

    return case((ex.updated_at >= c.updated_at, ex.first_seen), else_=c.first_seen)
