"""Opening the database: engine, SQLite settings, and migrations to the current schema.

Owns: connection setup for SQLite (the embedded default) and PostgreSQL, and running Alembic.
Must not know what the tables mean (policy_store.py, trace/store.py ...).

SQLAlchemy Core is used synchronously on purpose: the CLI, the admin app and the servers share
one code path, and the servers call the store from worker threads (batched trace writes, a
policy watcher), so an async driver would buy nothing but a second API. See README "Design".
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

from mxgate.errors import StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it equals Alembic's head so nobody forgets to bump it.
HEAD_REVISION = "0004"
# SQLite waits this long for another process's write lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL: seconds to connect before a node reports the store unreachable (not hang at start).
PG_CONNECT_TIMEOUT = 10
# Nodes starting together on one PostgreSQL database migrate one at a time under this lock.
PG_MIGRATE_LOCK = 0x6D786761  # "mxga"

_migrate_lock = threading.Lock()
log = logging.getLogger("mxgate.store")


def _snapshot_before_migration(engine: Engine, current: str) -> None:
    """SQLite runs some DDL outside a transaction: keep a consistent copy to go back to
    (<db>.before-<revision>), taken with the online backup API while other readers run."""
    from mxgate.store.backup import sqlite_snapshot

    db = Path(engine.url.database)
    target = db.with_name(f"{db.name}.before-{HEAD_REVISION}")
    sqlite_snapshot(db, target)
    log.warning("database schema %s is older than %s: migrating; a copy of the old database is in %s",
                current, HEAD_REVISION, target)


def open_engine(url: str) -> Engine:
    """Create an engine and bring the schema to HEAD_REVISION."""
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        _require_psycopg(url)
        # pre_ping: a pooled connection broken by a database restart or fail-over is replaced
        # instead of failing the next query; recycle bounds idle connections a proxy may drop.
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=20, pool_recycle=1800,
                               connect_args={"connect_timeout": PG_CONNECT_TIMEOUT,
                                             "application_name": "mxgate"})
    else:
        raise StoreError(f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql+psycopg://...")
    migrate(engine)
    return engine


def _private_sqlite_files(url: str) -> None:
    """The database holds password hashes and quarantined mail: create it 0600 whatever the
    umask. SQLite gives its -wal and -shm files the database file's mode; existing ones are
    tightened too."""
    import os

    from mxgate.config.home import private

    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return  # a read-only or missing directory: SQLite's own error says it better
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        try:
            private(Path(path + suffix), 0o600)
        except OSError:
            continue


def _require_psycopg(url: str) -> None:
    if not url.startswith("postgresql+psycopg"):
        raise StoreError("PostgreSQL store URLs must name the psycopg 3 driver: postgresql+psycopg://user@host/db")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'") from None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers (CLI, admin) run while a server writes; FULL makes a commit durable
    # (quarantine bodies and policy versions must survive a crash).
    _ensure_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _ensure_wal(cur) -> None:
    """WAL is a property of the database file, set once. Switching to it needs an exclusive lock
    and SQLite answers "database is locked" at once, without its busy handler, while another
    connection holds one — nodes opening a new store together saw that — so the switch is
    retried for up to the busy timeout."""
    import sqlite3
    import time

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


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def known_revisions() -> list[str]:
    """Revisions this code ships, oldest first (from migrations/versions)."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in reversed(list(ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()))]


class SchemaTooNewError(StoreError):
    """The store was migrated by a newer mxgate: this node must be upgraded before it starts."""


def _refuse_newer(current: str | None, engine: Engine) -> None:
    if current is not None and current not in known_revisions():
        raise SchemaTooNewError(
            f"the database at {engine.url.render_as_string(hide_password=True)} has schema revision {current}, newer "
            f"than this mxgate knows (newest {HEAD_REVISION}): a newer mxgate has migrated it. Upgrade mxgate on this "
            f"node before starting it (docs/operations.md, Upgrades); nothing was changed")


def migrate(engine: Engine) -> None:
    """Bring the schema to HEAD_REVISION on start: a cheap check when it is current; a store from a
    newer mxgate is refused; SQLite gets a snapshot beside it before its schema changes."""
    try:
        current = current_revision(engine)
        if current == HEAD_REVISION:
            return
        _refuse_newer(current, engine)
        with _migrate_lock:
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            if current is not None and engine.dialect.name == "sqlite" and engine.url.database:
                _snapshot_before_migration(engine, current)
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Transactional DDL plus this lock: a second node waits, then finds the schema current.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATE_LOCK})
                    # Another node may have migrated while we waited, possibly a newer one.
                    now = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
                        if inspect(conn).has_table("alembic_version") else None
                    _refuse_newer(now, engine)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            log.info("database schema migrated from %s to %s", current or "(empty)", HEAD_REVISION)
    except StoreError:
        raise
    except Exception as exc:  # the database is unreachable or refuses: say which and why
        raise StoreError(f"cannot open or migrate the database at {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
