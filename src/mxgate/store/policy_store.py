"""Policy versions in the database: read the one in force, append a new one atomically.

Owns: the policy_versions table. A change is validated first, then written as version N+1 in
one transaction; a refused change leaves the store untouched, and two writers racing for the
same version number cannot both win (primary key), so nothing is silently overwritten. On
PostgreSQL the commit also NOTIFYs every node's policy watcher (store/notify.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mxgate.errors import ConcurrentChangeError, NotFoundError
from mxgate.policy.model import Policy, policy_from_dict, policy_to_dict
from mxgate.policy.validate import check_policy
from mxgate.store.notify import POLICY_CHANNEL, notify
from mxgate.store.schema import policy_versions


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    created_at: float
    actor: str
    summary: str
    policy: Policy


EMPTY = PolicyVersion(0, 0.0, "", "empty policy", Policy())
# What every node's policy watcher asks several times a second, built once (not per poll).
_LATEST = select(func.max(policy_versions.c.version))


class PolicyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def latest_version_number(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(_LATEST).scalar() or 0

    def current(self) -> PolicyVersion:
        with self.engine.connect() as conn:
            row = conn.execute(select(policy_versions).order_by(policy_versions.c.version.desc()).limit(1)).first()
        return _row(row) if row else EMPTY

    def get(self, version: int) -> PolicyVersion:
        if version == 0:
            return EMPTY
        with self.engine.connect() as conn:
            row = conn.execute(select(policy_versions).where(policy_versions.c.version == version)).first()
        if row is None:
            raise NotFoundError(f"policy version {version} does not exist")
        return _row(row)

    def history(self, limit: int = 50) -> list[PolicyVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(policy_versions).order_by(policy_versions.c.version.desc()).limit(limit)).all()
        return [_row(r) for r in rows]

    def save(self, policy: Policy, *, actor: str, summary: str, base_version: int | None = None) -> PolicyVersion:
        """Validate and store `policy` as the next version.

        `base_version` is the version the change was computed from; if another change landed
        since, ConcurrentChangeError is raised and nothing is written.
        """
        check_policy(policy)
        document = json.dumps(policy_to_dict(policy), sort_keys=False, separators=(",", ":"))
        now = time.time()
        try:
            with self.engine.begin() as conn:
                latest = conn.execute(select(func.max(policy_versions.c.version))).scalar() or 0
                if base_version is not None and latest != base_version:
                    raise ConcurrentChangeError(f"policy changed meanwhile (now version {latest}, change based on {base_version})")
                version = latest + 1
                conn.execute(insert(policy_versions).values(
                    version=version, created_at=now, actor=actor[:128], summary=summary, document=document))
                # Same transaction: other nodes hear of version N only once it is committed.
                notify(conn, POLICY_CHANNEL, str(version))
        except IntegrityError as exc:
            raise ConcurrentChangeError("another change created the same policy version; retry") from exc
        return PolicyVersion(version, now, actor, summary, policy)


def _row(row) -> PolicyVersion:
    return PolicyVersion(row.version, row.created_at, row.actor, row.summary, policy_from_dict(json.loads(row.document)))
