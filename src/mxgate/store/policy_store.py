"""Policy versions in the database: read the one in force, append a new one atomically.

Owns: the policy_versions table. A change is validated first, then written as version N+1 in
one transaction; a refused change leaves the store untouched, and two writers racing for the
same version number cannot both win (primary key), so nothing is silently overwritten. On
PostgreSQL the commit also NOTIFYs every node's policy watcher (store/notify.py); on SQLite the
version is announced after the commit through a stamp file the watchers wait on
(store/change_stamp.py).

The SQL is plain text with `:name` parameters, run through a small interface both an SQLAlchemy
engine (db.EngineSql: nodes, admin, PostgreSQL) and stdlib sqlite3 (sqlite.SqliteSql: the CLI on
a current embedded store, without importing SQLAlchemy) provide: one store logic for both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mxgate.errors import ConcurrentChangeError, NotFoundError
from mxgate.policy.model import Policy, policy_from_dict, policy_to_dict
from mxgate.policy.validate import check_policy
from mxgate.store.change_stamp import announce
from mxgate.store.notify import POLICY_CHANNEL
from mxgate.store import MAX_ROW_ID, row_id_in_range
from mxgate.store.sqlite import database_path

_COLUMNS = "version, created_at, actor, summary, document"
# What every node's policy watcher asks several times a second (an indexed MAX()).
LATEST_VERSION_SQL = _LATEST = "SELECT MAX(version) FROM policy_versions"  # also run raw (server/policy_watch.py)
_CURRENT = f"SELECT {_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1"
_GET = f"SELECT {_COLUMNS} FROM policy_versions WHERE version = :version"
_HISTORY = f"SELECT {_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT :limit"
_INSERT = (f"INSERT INTO policy_versions ({_COLUMNS}) "
           "VALUES (:version, :created_at, :actor, :summary, :document)")


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    created_at: float
    actor: str
    summary: str
    policy: Policy


EMPTY = PolicyVersion(0, 0.0, "", "empty policy", Policy())


class PolicyStore:
    def __init__(self, db):
        """`db`: an SQLAlchemy Engine, or an object with fetch/execute/notify/reading/writing
        (sqlite.SqliteSql, db.EngineSql)."""
        if hasattr(db, "writing"):
            self.sql, self.engine = db, getattr(db, "engine", None)
        else:
            from mxgate.store.db import EngineSql

            self.sql, self.engine = EngineSql(db), db

    @property
    def sqlite_file(self) -> str:
        """The embedded store's file ("" on PostgreSQL): where the change stamp goes."""
        if self.engine is not None:
            return database_path(str(self.engine.url)) if self.engine.dialect.name == "sqlite" else ""
        return getattr(self.sql, "path", "")

    def _fetch(self, sql: str, params: dict | None = None) -> list[tuple]:
        with self.sql.reading() as c:
            return c.fetch(sql, params)

    def latest_version_number(self) -> int:
        return self._fetch(_LATEST)[0][0] or 0

    def current(self) -> PolicyVersion:
        rows = self._fetch(_CURRENT)
        return _row(rows[0]) if rows else EMPTY

    def get(self, version: int) -> PolicyVersion:
        if version == 0:
            return EMPTY
        rows = self._fetch(_GET, {"version": version}) if row_id_in_range(version) else []
        if not rows:
            raise NotFoundError(f"policy version {version} does not exist")
        return _row(rows[0])

    def history(self, limit: int = 50) -> list[PolicyVersion]:
        limit = max(0, min(limit, MAX_ROW_ID))  # SQLite cannot bind more; PostgreSQL refuses a negative LIMIT
        return [_row(r) for r in self._fetch(_HISTORY, {"limit": limit})]

    def save(self, policy: Policy, *, actor: str, summary: str, base_version: int | None = None) -> PolicyVersion:
        """Validate and store `policy` as the next version.

        `base_version` is the version the change was computed from; if another change landed
        since, ConcurrentChangeError is raised and nothing is written.
        """
        check_policy(policy)
        document = json.dumps(policy_to_dict(policy), sort_keys=False, separators=(",", ":"))
        now = time.time()
        try:
            with self.sql.writing() as c:
                latest = c.fetch(_LATEST)[0][0] or 0
                if base_version is not None and latest != base_version:
                    raise ConcurrentChangeError(f"policy changed meanwhile (now version {latest}, change based on {base_version})")
                version = latest + 1
                c.execute(_INSERT, {"version": version, "created_at": now, "actor": actor[:128], "summary": summary,
                                    "document": document})
                # Same transaction: other nodes hear of version N only once it is committed.
                c.notify(POLICY_CHANNEL, str(version))
        except self.sql.integrity_error as exc:
            raise ConcurrentChangeError("another change created the same policy version; retry") from exc
        announce(self.sqlite_file, POLICY_CHANNEL, str(version))  # committed: wake the nodes' watchers
        return PolicyVersion(version, now, actor, summary, policy)


def _row(row: tuple) -> PolicyVersion:
    version, created_at, actor, summary, document = row
    return PolicyVersion(version, created_at, actor, summary, policy_from_dict(json.loads(document)))
