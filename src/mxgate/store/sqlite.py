"""SQLite connections, with or without SQLAlchemy: the settings every connection gets, and the
plain stdlib connection a CLI command uses when the schema is already current.

Owns: the connection settings of the embedded store (busy timeout, WAL, synchronous=FULL,
foreign keys, 0600 files) — db.py applies the same function to each SQLAlchemy connection —
and `open_current`, a stdlib sqlite3 connection for a file whose schema is HEAD_REVISION.
Must not know what the tables mean (policy_store.py runs its SQL through `SqliteSql`).

Why a second way in: importing SQLAlchemy costs ~0.25 s, half of a `mxgate connector set`
(issue 19: a policy change starts in under 200 ms). Anything else — a missing file, a schema to
create, migrate or refuse, PostgreSQL — goes through db.open_engine as before.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# The policy change stamp beside the store (store/change_stamp.py stamp_path), kept as private.
STAMP_SUFFIX = "-mxgate_policy.changed"
# The newest migration; a test checks it equals Alembic's head so nobody forgets to bump it.
HEAD_REVISION = "0004"
# SQLite waits this long for another process's write lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000


def database_path(url: str) -> str:
    """The file of a sqlite:/// URL; "" for anything else (":memory:", URI filenames, queries)."""
    if not url.startswith("sqlite") or ":///" not in url:
        return ""
    path = url.split(":///", 1)[1]
    if not path or path == ":memory:" or path.startswith("file:") or "?" in path:
        return ""
    return path


def private_files(url: str) -> None:
    """The database holds password hashes and quarantined mail: create it 0600 whatever the
    umask. SQLite gives its -wal and -shm files the database file's mode; existing ones are
    tightened too."""
    from mxgate.config.home import private

    path = database_path(url)
    if not path:
        return
    # Only a missing file is created here: closing any descriptor of a file drops every POSIX lock
    # this process holds on it (fcntl(2)), SQLite's included. A second engine opened beside a live
    # connection then let another process's close take the database as its last user, checkpoint
    # and reset the WAL under that connection, which went on reading the old rows.
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError:
            return  # a read-only or missing directory: SQLite's own error says it better
    for suffix in ("", "-wal", "-shm", STAMP_SUFFIX):
        try:
            private(Path(path + suffix), 0o600)
        except OSError:
            continue


def apply_pragmas(dbapi_conn) -> None:
    """What every connection to the embedded store sets, whoever opens it."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers (CLI, admin) run while a server writes; FULL makes a commit durable
    # (quarantine bodies and policy versions must survive a crash).
    ensure_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def ensure_wal(cur) -> None:
    """WAL is a property of the database file, set once. Switching to it needs an exclusive lock
    and SQLite answers "database is locked" at once, without its busy handler, while another
    connection holds one — nodes opening a new store together saw that — so the switch is
    retried for up to the busy timeout."""
    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # another connection is creating or switching the file: it is quick


def connect(path: str) -> sqlite3.Connection:
    """A stdlib connection with the store's settings; transactions are explicit (SqliteSql)."""
    conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    apply_pragmas(conn)
    return conn


def open_current(url: str) -> "SqliteSql | None":
    """The store at `url` over stdlib sqlite3, or None when it needs db.open_engine: not a plain
    SQLite file, no such file yet, or a schema that is not HEAD_REVISION (to create, migrate or
    refuse as newer — open_engine's decisions, not repeated here)."""
    path = database_path(url)
    if not path or not os.path.isfile(path):
        return None
    private_files(url)
    try:
        conn = connect(path)
    except sqlite3.Error:
        return None  # open_engine reports it with the URL
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        row = None  # no alembic_version table: an empty or foreign file
    if row is None or row[0] != HEAD_REVISION:
        conn.close()
        return None
    return SqliteSql(conn, path)


class SqliteSql:
    """The SQL interface PolicyStore runs on (db.EngineSql is the SQLAlchemy one): `:name`
    parameters, rows as tuples, one write transaction at a time."""

    integrity_error = sqlite3.IntegrityError

    def __init__(self, conn: sqlite3.Connection, path: str = ""):
        self.conn = conn
        self.path = path

    def fetch(self, sql: str, params: dict | None = None) -> list[tuple]:
        with self._errors():
            return self.conn.execute(sql, params or {}).fetchall()

    def execute(self, sql: str, params: dict | None = None) -> None:
        with self._errors():
            self.conn.execute(sql, params or {})

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A locked, read-only or broken database is one clear error line (StoreError), not a
        traceback; a duplicate key stays itself (PolicyStore reads it as a concurrent change)."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            from mxgate.errors import StoreError

            raise StoreError(f"database {self.path}: {exc}") from exc

    def notify(self, channel: str, payload: str = "") -> None:
        """SQLite has no NOTIFY: nodes poll (store/notify.py)."""

    @contextmanager
    def reading(self) -> Iterator["SqliteSql"]:
        yield self

    @contextmanager
    def writing(self) -> Iterator["SqliteSql"]:
        """One transaction holding the write lock from the start (IMMEDIATE): what it reads stays
        true until it commits, so a version number read inside cannot be taken meanwhile."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


class CommitCounter:
    """Tells whether any other connection committed to the database since the last look: SQLite
    changes PRAGMA data_version of this connection on each such commit
    (https://www.sqlite.org/pragma.html#pragma_data_version). One read is ~5 µs and takes no
    lock, so a node's policy watcher can look every few ms and query only after a commit."""

    def __init__(self, path: str):
        # Used by the watcher's thread after being made in the node's: one user at a time.
        self._conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
        self._seen = self._read()

    def _read(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def committed(self) -> bool:
        now = self._read()
        changed, self._seen = now != self._seen, now
        return changed

    def first_value(self, sql: str):
        """The first column of the first row of a read on this connection (None without rows):
        ~10 µs through sqlite3 against ~0.2 ms through an engine connection."""
        row = self._conn.execute(sql).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._conn.close()


def commit_counter(url: str) -> CommitCounter | None:
    """A CommitCounter for a SQLite file store, else None (PostgreSQL has NOTIFY instead)."""
    path = database_path(url)
    if not path or not os.path.isfile(path):
        return None
    return CommitCounter(path)
