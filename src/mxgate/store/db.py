"""Opening the database: engine, SQLite settings, and migrations to the current schema.

Owns: connection setup for SQLite (the embedded default) and PostgreSQL, and running Alembic.
Must not know what the tables mean (policy_store.py, trace/store.py ...).

SQLAlchemy Core is used synchronously on purpose: the CLI, the admin app and the servers share
one code path, and the servers call the store from worker threads (batched trace writes, a
policy watcher), so an async driver would buy nothing but a second API. See README "Design".
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

from mxgate.errors import StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it equals Alembic's head so nobody forgets to bump it.
HEAD_REVISION = "0002"
# SQLite waits this long for another process's write lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL: seconds to connect before a node reports the store unreachable (not hang at start).
PG_CONNECT_TIMEOUT = 10
# Nodes starting together on one PostgreSQL database migrate one at a time under this lock.
PG_MIGRATE_LOCK = 0x6D786761  # "mxga"

_migrate_lock = threading.Lock()


def open_engine(url: str) -> Engine:
    """Create an engine and bring the schema to HEAD_REVISION."""
    if url.startswith("sqlite"):
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


def _require_psycopg(url: str) -> None:
    if not url.startswith("postgresql+psycopg"):
        raise StoreError("PostgreSQL store URLs must name the psycopg 3 driver: postgresql+psycopg://user@host/db")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'") from None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (CLI, admin) run while a server writes; FULL makes a commit durable
    # (quarantine bodies and policy versions must survive a crash).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Run Alembic only when the schema is behind: a cheap check on every start."""
    try:
        if current_revision(engine) == HEAD_REVISION:
            return
        with _migrate_lock:
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Transactional DDL plus this lock: a second node waits, then finds the schema current.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATE_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    except StoreError:
        raise
    except Exception as exc:  # the database is unreachable or refuses: say which and why
        raise StoreError(f"cannot open or migrate the database at {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
