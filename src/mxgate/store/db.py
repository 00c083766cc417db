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
HEAD_REVISION = "0001"
# SQLite waits this long for another process's write lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000

_migrate_lock = threading.Lock()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_engine(url: str) -> Engine:
    """Create an engine and bring the schema to HEAD_REVISION."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    migrate(engine)
    return engine


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
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    except StoreError:
        raise
    except Exception as exc:  # the database is unreachable or refuses: say which and why
        raise StoreError(f"cannot open or migrate the database at {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
