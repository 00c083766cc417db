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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mxgate.errors import StoreError
from mxgate.store.sqlite import HEAD_REVISION, SQLITE_BUSY_TIMEOUT_MS, apply_pragmas, private_files

__all__ = ["HEAD_REVISION", "EngineSql", "open_engine", "migrate", "current_revision"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
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
        private_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", lambda dbapi_conn, _record: apply_pragmas(dbapi_conn))
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
        reason = getattr(exc, "orig", None) or exc  # the driver's words, without SQLAlchemy's "(Background on ...)" line
        raise StoreError(f"cannot open or migrate the database at {engine.url.render_as_string(hide_password=True)}: "
                         f"{type(reason).__name__}: {reason}") from exc


class EngineSql:
    """The SQL interface PolicyStore runs on, over an SQLAlchemy engine (any backend); the stdlib
    one is store/sqlite.py SqliteSql. `:name` parameters, rows as tuples."""

    integrity_error = IntegrityError

    def __init__(self, engine: Engine, conn=None):
        self.engine = engine
        self._conn = conn
        self._texts: dict[str, object] = {}

    def _text(self, sql: str):
        # Built once per statement: SQLAlchemy caches the compiled form by the construct, and the
        # policy watcher asks for the newest version many times a second.
        t = self._texts.get(sql)
        if t is None:
            t = self._texts[sql] = text(sql)
        return t

    def fetch(self, sql: str, params: dict | None = None) -> list[tuple]:
        return [tuple(r) for r in self._conn.execute(self._text(sql), params or {})]

    def execute(self, sql: str, params: dict | None = None) -> None:
        self._conn.execute(self._text(sql), params or {})

    def notify(self, channel: str, payload: str = "") -> None:
        from mxgate.store.notify import notify

        notify(self._conn, channel, payload)

    @contextmanager
    def reading(self) -> Iterator["EngineSql"]:
        with self.engine.connect() as conn:
            yield EngineSql(self.engine, conn)._share(self._texts)

    @contextmanager
    def writing(self) -> Iterator["EngineSql"]:
        with self.engine.begin() as conn:
            yield EngineSql(self.engine, conn)._share(self._texts)

    def _share(self, texts: dict) -> "EngineSql":
        self._texts = texts
        return self
